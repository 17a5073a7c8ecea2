#!/usr/bin/env bash
# Hit-path throughput of one tierd binary with metrics on and off, in one run: two tierd
# processes in front of the same nginx origin, measured alternately with wrk, one round after
# another. Prints each round and the median ratio on/off.
#
#   scripts/bench-metrics.sh [--duration S] [--connections N] [--rounds R]
#
# Servers run on CPU 1, wrk on CPU 0 (2-core machines). Needs nginx and wrk (apt-get install).
# Ports: origin 19100, tierd metrics on 19103 (admin 19104), metrics off 19105 (admin 19106).
set -euo pipefail
cd "$(dirname "$0")/.."
D=8; C=64; R=5
while [ $# -gt 0 ]; do case $1 in
  --duration) D=$2; shift 2;; --connections) C=$2; shift 2;; --rounds) R=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
for b in nginx wrk curl; do
  command -v $b >/dev/null || { echo "missing $b: apt-get install -y nginx wrk curl" >&2; exit 2; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tierd-target}"
DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$(scripts/duckdb-lib.sh)}"
export DUCKDB_LIB_DIR
cargo build --release --locked --quiet
BIN="$CARGO_TARGET_DIR/release/tierd"

W=$(mktemp -d /tmp/metricsbench.XXXX); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  sleep 1; rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www" "$W/logs"; chmod 755 "$W"
python3 -c 'import json; print(json.dumps({"id": 42, "status": "completed", "items": [{"k": i, "v": "x"*16} for i in range(40)]}))' > "$W/www/item.json"
chmod -R a+rX "$W/www"
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon on; pid $W/nginx.pid; error_log $W/logs/err.log;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:19100; root $W/www;
    location / { add_header Cache-Control "public, max-age=300"; default_type application/json; } } }
NG
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W"
start() { # port admin_port metrics_enabled
  TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:$1 \
  TIERD__ADMIN__LISTEN=127.0.0.1:$2 TIERD__METRICS__ENABLED=$3 TIERD__SERVER__WORKERS=1 \
  TIERD__TIERS__L2__ENABLED=false TIERD__TIERS__L3__ENABLED=false TIERD__DEMO_ORIGIN__ENABLED=false \
    taskset -c 1 "$BIN" serve > "$W/logs/tierd-$1.log" 2>&1 &
  PIDS+=($!)
}
start 19103 19104 true
start 19105 19106 false
for _ in $(seq 1 50); do
  curl -sf -o /dev/null http://127.0.0.1:19104/healthz && curl -sf -o /dev/null http://127.0.0.1:19106/healthz && break
  sleep 0.2
done
one() { # name port
  local url=http://127.0.0.1:$2/item.json
  for _ in 1 2 3; do curl -s -o /dev/null "$url" || true; done
  local out; out=$(taskset -c 0 wrk -t1 -c"$C" -d"${D}s" --latency "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  echo "$1 rps=$rps p50=$p50 p99=$p99 $errs"
}
for r in $(seq 1 "$R"); do
  echo "round=$r $(one metrics-on 19103)"
  echo "round=$r $(one metrics-off 19105)"
done | tee "$W/results"
hits=$(curl -s http://127.0.0.1:19104/metrics | awk '/^tierd_requests_total\{.*cache_status="hit"/ {s+=$2} END {print s+0}')
echo "metrics-on node counted $hits hits"
python3 - "$W/results" <<'PY'
import sys, statistics, re
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"round=(\d+) (\S+) rps=([\d.]+)", line)
    if m: rows.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
v = [r["metrics-on"] / r["metrics-off"] for r in rows.values() if "metrics-on" in r and r.get("metrics-off")]
if v:
    x = statistics.median(v)
    print(f"median ratio metrics-on/metrics-off = {x:.3f} (cost {100 * (1 - x):.1f}%)")
PY
