#!/usr/bin/env bash
# User-space instructions per L1 hit, tierd as shipped (defaults) beside the floor of this stack
# (examples/floor.rs), counted by callgrind: unlike requests/s, the count does not move with the
# machine's noise, so a change on the hit path can be compared across runs. Each server runs
# under valgrind; counters are zeroed after a warm-up, then `wrk -c8 -d10s` runs and the
# instructions are divided by the requests served. Kernel time (the TCP path, the same for both)
# is not counted.
#
#   scripts/bench-instructions.sh [--tierd BIN] [--env "TIERD__X=y ..."]
#
# --env sets tierd settings for the run (e.g. the journal on:
# --env "TIERD__JOURNAL__ENABLED=true TIERD__JOURNAL__PATH=/tmp/j.duckdb").
#
# Needs valgrind, nginx, wrk and curl (apt-get install -y valgrind nginx wrk curl).
# Ports: origin 19100, tierd 19103 (admin 19104), floor 19105.
set -euo pipefail
cd "$(dirname "$0")/.."
TIERD=""
while [ $# -gt 0 ]; do case $1 in
  --tierd) TIERD=$2; shift 2;;
  --env) EXTRA_ENV=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tierd-target}"
DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$(scripts/duckdb-lib.sh)}"
export DUCKDB_LIB_DIR
. scripts/bench-lib.sh
bench_need valgrind callgrind_control callgrind_annotate nginx wrk curl
if [ -z "$TIERD" ]; then bench_build; TIERD=$BIN; fi
cargo build --release --locked --quiet --example floor
FLOOR="$CARGO_TARGET_DIR/release/examples/floor"
bench_workdir
python3 -c 'import json; print(json.dumps({"id": 42, "status": "completed", "items": [{"k": i, "v": "x"*16} for i in range(40)]}))' > "$W/www/item.json"
bench_origin 'add_header Cache-Control "public, max-age=300"; default_type application/json;'

count() { # name port command...
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.$name.%p" "$@" > "$W/logs/$name.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  local up=""
  for _ in $(seq 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/item.json"; then up=1; break; fi
    sleep 0.3
  done
  [ -n "$up" ] || { echo "$name did not come up; see its log:" >&2; tail -5 "$W/logs/$name.log" >&2; exit 1; }
  wrk -t1 -c8 -d3s "http://127.0.0.1:$port/item.json" > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  local n
  n=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$port/item.json" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file ir
  file=$(ls -t "$W"/cg."$name".*.1 2>/dev/null | head -1)
  ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name requests=$n instructions_per_request=$((ir / n))"
  eval "IPR_$name=$((ir / n))"
}

echo "== instructions per L1 hit (callgrind; about a minute per server)"
for kv in ${EXTRA_ENV:-}; do export "${kv?}"; echo "tierd with $kv"; done
TIERD__UPSTREAM__URL=http://127.0.0.1:19100 TIERD__SERVER__LISTEN=127.0.0.1:19103 \
  TIERD__ADMIN__LISTEN=127.0.0.1:19104 TIERD__SERVER__WORKERS=1 \
  count tierd 19103 "$TIERD" serve
count floor 19105 "$FLOOR" 127.0.0.1:19105 "$W/www/item.json"
python3 -c "print(f'ratio floor/tierd = {$IPR_floor / $IPR_tierd:.2f} (instructions; 1.00 would be the floor)')"
