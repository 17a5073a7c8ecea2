#!/usr/bin/env bash
# The hit-ratio benchmark of predictive warming: a day of users clicking Zipf-distributed items
# (and their related items) on the demo origin through tierd, every entry left to expire, then
# the next day's users, warming off and on side by side (scripts/hitratio.py says how).
#
#   scripts/bench-hitratio.sh [--users 200] [--clicks 5] [--items 1000] [--zipf 1.0] [--json FILE]
#
# BENCH_BIN=path benches a prebuilt binary; otherwise the release binary is built first.
# Takes about three minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_build
exec python3 scripts/hitratio.py --bin "$BIN" "$@"
