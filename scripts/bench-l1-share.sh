#!/usr/bin/env bash
# The share of hits L1 answers in steady state with L2 (Redis) on: 1,000 hot keys requested at
# random for a while, then the tier lookup counters. With a healthy invalidation subscription L1
# answers nearly every hit; a node that keeps resubscribing clears its L1 and sends reads to Redis.
#
#   scripts/bench-l1-share.sh [--tierd BIN] [--duration S] [--delay-ms MS]
#
# Each of 16 connections waits --delay-ms (default 50) between requests: about 320 requests/s,
# so a key is asked for every few seconds, as on a moderately busy API.
#
# Starts its own redis-server (:19200), an nginx origin (:19100) and tierd (:19103, admin :19104).
# Needs redis-server, nginx and wrk (apt-get install).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=""; D=30; DELAY=50
while [ $# -gt 0 ]; do case $1 in
  --tierd) BIN=$2; shift 2;; --duration) D=$2; shift 2;; --delay-ms) DELAY=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
. scripts/bench-lib.sh
bench_need nginx wrk curl redis-server
[ -n "$BIN" ] || bench_build
bench_workdir
head -c 2048 /dev/zero | tr '\0' 'x' > "$W/www/body"
bench_origin 'rewrite ^ /body break; add_header Cache-Control "max-age=3600"; default_type text/plain;'
redis-server --port 19200 --bind 127.0.0.1 --save "" --appendonly no --dir "$W" > "$W/logs/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5
env TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:19103 \
  TIERD__ADMIN__LISTEN=127.0.0.1:19104 TIERD__TIERS__L2__ENABLED=true \
  TIERD__TIERS__L2__URL=redis://127.0.0.1:19200 "$BIN" serve > "$W/logs/tierd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19103/warm && break; sleep 0.1; done
cat > "$W/hot.lua" <<LUA
request = function()
  return wrk.format(nil, "/hot/" .. math.random(1, 1000))
end
delay = function()
  return $DELAY
end
LUA
wrk -t1 -c16 -d"${D}s" -s "$W/hot.lua" http://127.0.0.1:19103 > "$W/wrk.out" 2>&1
m=$(curl -s http://127.0.0.1:19104/metrics)
hits() { echo "$m" | awk -v t="$1" '$0 ~ "^tierd_tier_lookups_total\\{" && $0 ~ "tier=\""t"\"" && $0 ~ "outcome=\"hit\"" {s += $NF} END {print s + 0}'; }
l1=$(hits l1); l2=$(hits l2)
resubscribed=$(grep -c "subscription lost" "$W/logs/tierd.log" || true)
python3 -c "
l1, l2 = $l1, $l2
print(f'{$D} s, 1,000 hot keys: L1 hits {l1:.0f}, L2 hits {l2:.0f}, L1 share of hits {l1 / max(l1 + l2, 1):.1%}; subscription lost {$resubscribed} times')
"
