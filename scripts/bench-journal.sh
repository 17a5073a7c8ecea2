#!/usr/bin/env bash
# Hit-path throughput with the access journal on and off, in one run (see scripts/bench-ab.sh):
# every L1 hit then also becomes a journal row, appended to a DuckDB file by the journal's
# writer thread (and DuckDB's), which share the one CPU the server runs on: `journal_us` is
# their CPU time per request.
#
#   scripts/bench-journal.sh [--duration S] [--connections N] [--rounds R]
set -euo pipefail
exec "$(dirname "$0")/bench-ab.sh" journal-on "TIERD__JOURNAL__ENABLED=true TIERD__JOURNAL__PATH=\$ROUND/journal.duckdb" \
  journal-off "TIERD__JOURNAL__ENABLED=false" "$@"
