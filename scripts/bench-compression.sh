#!/usr/bin/env bash
# What `[compression]` costs and saves, in one run: tierd (L1 only, one worker on CPU 1) in front
# of an nginx origin serving a JSON document, with compression off, gzip stored and br stored;
# for each, wrk (CPU 0) as a client sending no Accept-Encoding, "gzip" and "br". Prints requests/s
# per client, the body bytes each client receives, and the bytes L1 counts for the one entry
# (tierd_tier_bytes{tier="l1"}; L2 and L3 hold the compressed copy only).
#
#   scripts/bench-compression.sh [--duration S] [--connections N] [--items N]
#
# --items sets the document's size (80 items: about 5 KB of JSON). Needs nginx, wrk, curl.
# Ports: origin 19100, tierd 19103 (admin 19104).
set -euo pipefail
cd "$(dirname "$0")/.."
D=5; C=64; ITEMS=80
while [ $# -gt 0 ]; do case $1 in
  --duration) D=$2; shift 2;; --connections) C=$2; shift 2;; --items) ITEMS=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
. scripts/bench-lib.sh
bench_need nginx wrk curl
bench_build
bench_workdir
python3 -c "import json; print(json.dumps({'id': 42, 'status': 'completed', 'items': [{'k': i, 'status': 'in_progress' if i % 3 else 'completed', 'v': 'x' * 16} for i in range($ITEMS)]}))" > "$W/www/item.json"
bench_origin 'add_header Cache-Control "public, max-age=300"; default_type application/json;' 1
URL=http://127.0.0.1:19103/item.json
printf '%-6s %-8s %10s %8s %10s\n' stored client rps body_B l1_bytes
for mode in off gzip br; do
  case $mode in
    off) extra="TIERD__COMPRESSION__ENABLED=false";;
    *) extra="TIERD__COMPRESSION__ENCODING=$mode";;
  esac
  # shellcheck disable=SC2086
  env TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:19103 \
    TIERD__ADMIN__LISTEN=127.0.0.1:19104 TIERD__SERVER__WORKERS=1 \
    TIERD__TIERS__L2__ENABLED=false TIERD__TIERS__L3__ENABLED=false \
    TIERD__DEMO_ORIGIN__ENABLED=false $extra \
    taskset -c 1 "$BIN" serve > "$W/logs/tierd-$mode.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:19104/healthz && break; sleep 0.1; done
  curl -s -o /dev/null "$URL"
  l1=$(curl -s http://127.0.0.1:19104/metrics | awk '/^tierd_tier_bytes\{tier="l1"\}/ {print $2}')
  for client in none gzip br; do
    hdr=(); [ "$client" = none ] || hdr=(-H "Accept-Encoding: $client")
    bytes=$(curl -s "${hdr[@]}" -o - "$URL" | wc -c)
    taskset -c 0 wrk -t1 -c"$C" -d1s "${hdr[@]}" "$URL" > /dev/null 2>&1 || true
    rps=$(taskset -c 0 wrk -t1 -c"$C" -d"${D}s" "${hdr[@]}" "$URL" | awk '/Requests\/sec/ {print $2}')
    printf '%-6s %-8s %10s %8s %10s\n' "$mode" "$client" "$rps" "$bytes" "$l1"
  done
  kill "$pid"; while [ -e "/proc/$pid" ]; do sleep 0.1; done
done
