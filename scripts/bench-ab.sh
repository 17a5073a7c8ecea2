#!/usr/bin/env bash
# Hit-path throughput of one tierd binary under two settings, in one run: two tierd processes
# (settings A and B, as environment variables; `$ROUND` in them is a fresh directory per round)
# in front of the same nginx origin, measured alternately with wrk, one round after another,
# each round with new processes. Prints each round, the median ratio A/B of requests/s and of
# the servers' CPU time per request.
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
D=4; C=64; R=8
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
# Two identical processes differ by several percent on this kind of machine (where their
# memory lands, which port, which runs first), as much as the settings compared often do. So
# every round starts both afresh (each setting in a new process), A and B swap ports every
# other round, and which runs first alternates: what is left is the settings' difference.
for r in $(seq 1 "$R"); do
  J=$(mktemp -d "$W/round.XXXX")
  if [ $((r % 4)) -lt 2 ]; then PA=19103; PB=19105; else PA=19105; PB=19103; fi
  PIDS=()
  start "$PA" $((PA + 1)) "${EA//\$ROUND/$J}"; pa=${PIDS[-1]}
  start "$PB" $((PB + 1)) "${EB//\$ROUND/$J}"; pb=${PIDS[-1]}
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$((PA + 1))/healthz" && curl -sf -o /dev/null "http://127.0.0.1:$((PB + 1))/healthz" && break
    sleep 0.1
  done
  if [ $((r % 2)) = 1 ]; then order="$NA:$PA:$pa $NB:$PB:$pb"; else order="$NB:$PB:$pb $NA:$PA:$pa"; fi
  for run in $order; do
    IFS=: read -r name port pid <<< "$run"
    echo "round=$r $(bench_wrk "$name" "$port" "$pid")"
  done | tee -a "$W/results"
  hits=$(curl -s "http://127.0.0.1:$((PA + 1))/metrics" | awk '/^tierd_requests_total\{.*cache_status="hit"/ {s+=$2} END {print s+0}')
  kill "$pa" "$pb"
  while [ -e "/proc/$pa" ] || [ -e "/proc/$pb" ]; do sleep 0.1; done
  rm -rf "$J"
  [ "$hits" -gt 0 ] || { echo "round $r: $NA counted no hits (see $W/logs)" >&2; exit 1; }
done
python3 - "$W/results" "$NA" "$NB" <<'PY'
import sys, statistics, re
rows, cpu = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"round=(\d+) (\S+) rps=([\d.]+)", line)
    if m: rows.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    m = re.match(r"round=(\d+) (\S+) .*cpu_us=([\d.]+) journal_us=([\d.]+)", line)
    if m: cpu.setdefault(m.group(1), {})[m.group(2)] = (float(m.group(3)), float(m.group(4)))
a, b = sys.argv[2], sys.argv[3]
v = [r[a] / r[b] for r in rows.values() if a in r and r.get(b)]
if v:
    x = statistics.median(v)
    print(f"median ratio {a}/{b} = {x:.3f} (cost {100 * (1 - x):.1f}%) over {len(v)} rounds")
# CPU per request: on a saturated core, throughput is its inverse; the server's CPU time per
# request moves less with the machine's other load than requests/s does.
c = [r[b][0] / r[a][0] for r in cpu.values() if a in r and b in r and r[a][0] > 0]
if c:
    ca = statistics.median(r[a][0] for r in cpu.values() if a in r)
    cb = statistics.median(r[b][0] for r in cpu.values() if b in r)
    ja = statistics.median(r[a][1] for r in cpu.values() if a in r)
    x = statistics.median(c)
    print(f"median CPU per request: {a} {ca:.2f} us (of it the journal writer {ja:.2f} us), {b} {cb:.2f} us; "
          f"ratio {b}/{a} = {x:.3f} (cost {100 * (1 - x):.1f}%)")
PY
