#!/usr/bin/env bash
# Resident memory under a flood of distinct keys, against the formula in docs/src/operations/memory.md
# ("Memory"), and the L3 file size against its cap. A benchmark, not a test: it prints figures.
#
#   scripts/bench-memory.sh [--keys N] [--body BYTES] [--l1 BYTES] [--l3 on|off]
#                           [--l3-max BYTES] [--connections N]
#
# Defaults: 200,000 distinct keys of 10 KB each through a 256 MiB L1, L3 on with a 1 GiB cap
# (the shipped defaults otherwise). The origin is nginx answering every path with the same body
# and "Cache-Control: max-age=3600" on 127.0.0.1:19100; tierd listens on :19103 (admin :19104).
# wrk requests /k/1, /k/2, ... /k/N once each, then idles; RSS is sampled every 200 ms during the
# flood (peak) and read again after 15 s idle. Needs nginx and wrk (apt-get install).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=200000; BODY=10240; L1=268435456; L3=on; L3MAX=1073741824; C=32
while [ $# -gt 0 ]; do case $1 in
  --keys) KEYS=$2; shift 2;; --body) BODY=$2; shift 2;; --l1) L1=$2; shift 2;;
  --l3) L3=$2; shift 2;; --l3-max) L3MAX=$2; shift 2;; --connections) C=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
. scripts/bench-lib.sh
bench_need nginx wrk curl
bench_build
bench_workdir
mkdir -p "$W/data"
head -c "$BODY" /dev/zero | tr '\0' 'x' > "$W/www/body"
bench_origin 'rewrite ^ /body break; add_header Cache-Control "max-age=3600"; default_type text/plain;' 1
l3_enabled=false; [ "$L3" = on ] && l3_enabled=true
env TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:19103 \
  TIERD__ADMIN__LISTEN=127.0.0.1:19104 TIERD__TIERS__L1__MAX_BYTES="$L1" \
  TIERD__TIERS__L3__ENABLED=$l3_enabled TIERD__TIERS__L3__PATH="$W/data/l3.duckdb" \
  TIERD__TIERS__L3__MAX_BYTES="$L3MAX" \
  taskset -c 1 "$BIN" serve > "$W/logs/tierd.log" 2>&1 &
PID=$!; PIDS+=("$PID")
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19103/warm && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$PID/status"; }
base=$(rss)
cat > "$W/flood.lua" <<LUA
local n = 0
request = function()
  if n < $KEYS then n = n + 1 end
  return wrk.format(nil, "/k/" .. n)
end
LUA
peak=$base
( taskset -c 0 wrk -t1 -c"$C" -d600s -s "$W/flood.lua" http://127.0.0.1:19103 > "$W/wrk.out" 2>&1 ) &
WRK=$!; PIDS+=("$WRK")
start=$(date +%s)
# The flood is over once L1 has seen KEYS stores (counted by the miss metric) or 10 minutes pass.
while kill -0 "$WRK" 2>/dev/null; do
  r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
  misses=$(curl -s http://127.0.0.1:19104/metrics | awk '/^tierd_requests_total\{.*cache_status="miss"/ {s += $NF} END {print s + 0}')
  if [ "${misses%.*}" -ge "$KEYS" ]; then kill "$WRK" 2>/dev/null || true; break; fi
  sleep 0.2
done
flood_s=$(( $(date +%s) - start ))
sleep 15
idle=$(rss)
metrics=$(curl -s http://127.0.0.1:19104/metrics)
l1_bytes=$(echo "$metrics" | awk '/^tierd_tier_bytes\{tier="l1"\}/ {print $2}')
l3_rows=$(echo "$metrics" | awk '/^tierd_tier_entries\{tier="l3"\}/ {print $2}')
dropped=$(echo "$metrics" | awk '/^tierd_tier_writes_total\{.*tier="l3"/ && /queue_full/ {print $2}')
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
file=$(stat -c %s "$W/data/l3.duckdb" 2>/dev/null || echo 0)
wal=$(stat -c %s "$W/data/l3.duckdb.wal" 2>/dev/null || echo 0)
python3 - "$KEYS" "$BODY" "$L1" "$L3" "$L3MAX" "$base" "$peak" "$idle" "$l1_bytes" "${l3_rows:-0}" "$file" "$wal" "$flood_s" "${dropped:-0}" <<'PY'
import sys
keys, body, l1, l3, l3max, base, peak, idle, l1b, rows, file, wal, secs, dropped = sys.argv[1:]
MiB = 1 << 20
l1, base, peak, idle, l3max = int(l1), int(base), int(peak), int(idle), int(l3max)
# The formula of docs/src/operations/memory.md: the process, L1 with its allocator overhead, and with L3
# on DuckDB's memory limit, the L3 write queue's byte cap and 180 MiB of batches and DuckDB
# allocations outside its buffer pool (defaults: 256 MiB, 64 MiB).
duck = 256 * MiB + 64 * MiB + 180 * MiB if l3 == "on" else 0
formula = 25 * MiB + int(1.2 * l1) + duck
print(f"keys={keys} body={body} l1.max_bytes={l1 // MiB} MiB l3={l3} flood={secs}s")
print(f"rss: start {base / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, idle {idle / MiB:.0f} MiB; formula {formula / MiB:.0f} MiB (peak/formula {peak / formula:.2f})")
print(f"l1 weighed {float(l1b or 0) / MiB:.0f} MiB of {l1 // MiB} MiB")
if l3 == "on":
    print(f"l3: {rows} rows, file {int(file) / MiB:.0f} MiB + wal {int(wal) / MiB:.0f} MiB against a cap of {l3max // MiB} MiB (file/cap {int(file) / l3max:.2f}); writes dropped (queue full) {dropped}")
PY
