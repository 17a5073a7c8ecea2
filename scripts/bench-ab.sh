#!/usr/bin/env bash
# Hit-path throughput of one tierd binary under two settings, in one run: two tierd processes
# (settings A and B, as environment variables) in front of the same nginx origin, measured
# alternately with wrk, one round after another. Prints each round and the median ratio A/B.
#
#   scripts/bench-ab.sh NAME_A "VAR=value ..." NAME_B "VAR=value ..." [--duration S]
#                       [--connections N] [--rounds R]
#
# Used by scripts/bench-metrics.sh and scripts/bench-ratelimit.sh.
# Servers run on CPU 1, wrk on CPU 0 (2-core machines). Needs nginx and wrk (apt-get install).
# Ports: origin 19100, tierd A on 19103 (admin 19104), B on 19105 (admin 19106).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { echo "usage: $0 NAME_A ENV_A NAME_B ENV_B [options]" >&2; exit 2; }
NA=$1; EA=$2; NB=$3; EB=$4; shift 4
D=8; C=64; R=5
while [ $# -gt 0 ]; do case $1 in
  --duration) D=$2; shift 2;; --connections) C=$2; shift 2;; --rounds) R=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
. scripts/bench-lib.sh
bench_need nginx wrk curl
bench_build
bench_workdir
python3 -c 'import json; print(json.dumps({"id": 42, "status": "completed", "items": [{"k": i, "v": "x"*16} for i in range(40)]}))' > "$W/www/item.json"
bench_origin 'add_header Cache-Control "public, max-age=300"; default_type application/json;' 1
start() { # port admin_port "extra environment"
  # shellcheck disable=SC2086
  env TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:$1 \
  TIERD__ADMIN__LISTEN=127.0.0.1:$2 TIERD__SERVER__WORKERS=1 \
  TIERD__TIERS__L2__ENABLED=false TIERD__TIERS__L3__ENABLED=false TIERD__DEMO_ORIGIN__ENABLED=false \
  $3 taskset -c 1 "$BIN" serve > "$W/logs/tierd-$1.log" 2>&1 &
  PIDS+=($!)
}
start 19103 19104 "$EA"
start 19105 19106 "$EB"
for _ in $(seq 1 50); do
  curl -sf -o /dev/null http://127.0.0.1:19104/healthz && curl -sf -o /dev/null http://127.0.0.1:19106/healthz && break
  sleep 0.2
done
for r in $(seq 1 "$R"); do
  echo "round=$r $(bench_wrk "$NA" 19103)"
  echo "round=$r $(bench_wrk "$NB" 19105)"
done | tee "$W/results"
for a in 19104 19106; do
  m=$(curl -s http://127.0.0.1:$a/metrics)
  hits=$(echo "$m" | awk '/^tierd_requests_total\{.*cache_status="hit"/ {s+=$2} END {print s+0}')
  limited=$(echo "$m" | awk '/^tierd_rate_limited_total\{/ {s+=$2} END {print s+0}')
  echo "admin :$a counted $hits hits, $limited rate limited"
done
python3 - "$W/results" "$NA" "$NB" <<'PY'
import sys, statistics, re
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"round=(\d+) (\S+) rps=([\d.]+)", line)
    if m: rows.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
a, b = sys.argv[2], sys.argv[3]
v = [r[a] / r[b] for r in rows.values() if a in r and r.get(b)]
if v:
    x = statistics.median(v)
    print(f"median ratio {a}/{b} = {x:.3f} (cost {100 * (1 - x):.1f}%)")
PY
