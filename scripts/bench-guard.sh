#!/usr/bin/env bash
# The hit-path regression guard: tierd as shipped (`tierd serve` with defaults, only the upstream
# and listen addresses set) beside the floor of this stack (examples/floor.rs: a bare actix-web +
# moka handler answering the same body) and nginx proxy_cache, all in front of one nginx origin,
# measured alternately with wrk for about 90 s (five rounds of 6 s each). Prints each round and the
# median ratios, and fails when the median tierd/floor is below the threshold (0.7 by default: well
# under the goal of 0.85) in two measurements in a row. A noisy minute of a shared machine can put
# one measurement just under it (0.69 on 2026-12-02, for a change off the hit path, between runs of
# 0.71 and 0.73 of the same code); a real regression of the hit path shows in both.
#
#   scripts/bench-guard.sh [--min RATIO] [--duration S] [--rounds R]
#
# Installs nginx and wrk with apt-get when missing. Servers run on CPU 1, wrk on CPU 0 (2-core
# machines). Ports: origin 19100, nginx-cache 19102, tierd 19103 (admin 19104), floor 19105.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=0.7; D=6; C=64; R=5
while [ $# -gt 0 ]; do case $1 in
  --min) MIN=$2; shift 2;; --duration) D=$2; shift 2;; --rounds) R=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
for b in nginx wrk curl; do
  if ! command -v "$b" >/dev/null; then
    echo "== installing nginx, wrk and curl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk curl >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk curl >/dev/null; }
    break
  fi
done
. scripts/bench-lib.sh
bench_need nginx wrk curl
echo "== release build (tierd and the floor)"
bench_build
cargo build --release --locked --quiet --example floor
FLOOR="$CARGO_TARGET_DIR/release/examples/floor"
bench_workdir
python3 -c 'import json; print(json.dumps({"id": 42, "status": "completed", "items": [{"k": i, "v": "x"*16} for i in range(40)]}))' > "$W/www/item.json"
chmod -R a+rX "$W/www"
mkdir -p "$W/cache"
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon on; pid $W/nginx.pid; error_log $W/logs/err.log;
events { worker_connections 4096; }
http { access_log off;
  proxy_cache_path $W/cache keys_zone=c:10m;
  server { listen 127.0.0.1:19100; root $W/www;
    location / { add_header Cache-Control "public, max-age=300"; default_type application/json; } }
  server { listen 127.0.0.1:19102;
    location / { proxy_pass http://127.0.0.1:19100; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_cache c; add_header Cache-Status \$upstream_cache_status; } } }
NG
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W"
TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:19103 \
  TIERD__ADMIN__LISTEN=127.0.0.1:19104 taskset -c 1 "$BIN" serve > "$W/logs/tierd.log" 2>&1 &
PIDS+=($!)
taskset -c 1 "$FLOOR" 127.0.0.1:19105 "$W/www/item.json" > "$W/logs/floor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
  curl -sf -o /dev/null http://127.0.0.1:19104/healthz && curl -sf -o /dev/null http://127.0.0.1:19105/x && break
  sleep 0.2
done
# One measurement: R rounds into the file $1.
measure() {
  echo "== $R rounds of ${D} s each, $C connections"
  for r in $(seq 1 "$R"); do
    # tierd and the floor swap places every round, so a drift of the machine does not always
    # land on the same one; the median of five rounds rides out one noisy round.
    if [ $((r % 2)) = 1 ]; then
      echo "round=$r $(bench_wrk tierd 19103)"
      echo "round=$r $(bench_wrk floor 19105)"
    else
      echo "round=$r $(bench_wrk floor 19105)"
      echo "round=$r $(bench_wrk tierd 19103)"
    fi
    echo "round=$r $(bench_wrk nginx-cache 19102)"
  done | tee "$1"
}
# The verdict on the file $1: the median ratios; fails when tierd/floor is below MIN.
verdict() {
python3 - "$1" "$MIN" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"round=(\d+) (\S+) rps=([\d.]+)", line)
    if m:
        rows.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
def median(a, b):
    v = [r[a] / r[b] for r in rows.values() if r.get(a) and r.get(b)]
    return statistics.median(v) if v else 0.0
floor, nginx = median("tierd", "floor"), median("tierd", "nginx-cache")
print(f"median ratio tierd/floor = {floor:.2f}")
print(f"median ratio tierd/nginx-cache = {nginx:.2f}")
minimum = float(sys.argv[2])
if floor < minimum:
    print(f"tierd/floor {floor:.2f} is below {minimum}")
    sys.exit(1)
print(f"ok: tierd/floor {floor:.2f} >= {minimum}")
PY
}
measure "$W/results"
if ! verdict "$W/results"; then
  # A regression of the hit path shows in every measurement; a noisy minute of the machine does
  # not repeat itself. So a failure must reproduce in a second measurement before it fails CI.
  echo "== below $MIN once: measuring again (a regression must reproduce)"
  measure "$W/results2"
  if ! verdict "$W/results2"; then
    echo "FAIL: tierd/floor below $MIN twice: the hit path regressed (profile it: see docs/src/operations/performance.md)"
    exit 1
  fi
fi
