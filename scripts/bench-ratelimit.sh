#!/usr/bin/env bash
# Hit-path throughput with the rate limiter on (a per-client quota too high to refuse anything,
# so every request is checked and passes) and off, in one run (see scripts/bench-ab.sh).
#
#   scripts/bench-ratelimit.sh [--duration S] [--connections N] [--rounds R]
set -euo pipefail
exec "$(dirname "$0")/bench-ab.sh" \
  limiter-on "TIERD__RATE_LIMIT__ENABLED=true TIERD__RATE_LIMIT__REQUESTS_PER_SECOND=10000000 TIERD__RATE_LIMIT__BURST=10000000 TIERD__RATE_LIMIT__ORIGIN__ENABLED=true" \
  limiter-off "TIERD__RATE_LIMIT__ENABLED=false" "$@"
