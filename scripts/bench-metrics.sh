#!/usr/bin/env bash
# Hit-path throughput with metrics on and off, in one run (see scripts/bench-ab.sh).
#
#   scripts/bench-metrics.sh [--duration S] [--connections N] [--rounds R]
set -euo pipefail
exec "$(dirname "$0")/bench-ab.sh" metrics-on "TIERD__METRICS__ENABLED=true" \
  metrics-off "TIERD__METRICS__ENABLED=false" "$@"
