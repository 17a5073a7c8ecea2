# Sourced by the bench scripts (bench-ab.sh, bench-memory.sh, bench-l1-share.sh): what they all
# need, written once. Not run on its own.
#
#   bench_need nginx wrk ...      exit 2 naming the apt packages when a command is missing
#   bench_build                   release build of this checkout; sets BIN
#   bench_workdir                 a work dir $W (www/, logs/) and PIDS, both cleaned up on exit
#   bench_origin DIRECTIVES [CPU] nginx on 127.0.0.1:19100 serving $W/www with `location / { DIRECTIVES }`
#   bench_wrk NAME PORT           one wrk run (CPU 0, $C connections, $D s) on /item.json: one line

bench_need() {
  for b in "$@"; do
    command -v "$b" >/dev/null || { echo "missing $b: apt-get install -y $*" >&2; exit 2; }
  done
}

bench_build() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tierd-target}"
  DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$(scripts/duckdb-lib.sh)}"
  export DUCKDB_LIB_DIR
  cargo build --release --locked --quiet
  BIN="$CARGO_TARGET_DIR/release/tierd"
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  sleep 1; rm -rf "$W"
}

bench_workdir() {
  W=$(mktemp -d /tmp/tierdbench.XXXX); PIDS=()
  trap bench_cleanup EXIT
  mkdir -p "$W/www" "$W/logs"; chmod 755 "$W"
}

bench_origin() { # directives [cpu]
  chmod -R a+rX "$W/www"
  cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon on; pid $W/nginx.pid; error_log $W/logs/err.log;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:19100; root $W/www;
    location / { $1 } } }
NG
  if [ -n "${2:-}" ]; then taskset -c "$2" nginx -c "$W/nginx.conf" -p "$W"; else nginx -c "$W/nginx.conf" -p "$W"; fi
}

bench_wrk() { # name port
  local url=http://127.0.0.1:$2/item.json
  for _ in 1 2 3; do curl -s -o /dev/null "$url" || true; done
  local out; out=$(taskset -c 0 wrk -t1 -c"$C" -d"${D}s" --latency "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  echo "$1 rps=$rps p50=$p50 p99=$p99 $errs"
}
