# Sourced by the bench scripts (bench-ab.sh, bench-memory.sh, bench-l1-share.sh): what they all
# need, written once. Not run on its own.
#
#   bench_need nginx wrk ...      exit 2 naming the apt packages when a command is missing
#   bench_build                   release build of this checkout; sets BIN ($BENCH_BIN instead
#                                 when set: a binary built elsewhere, e.g. an experiment)
#   bench_workdir                 a work dir $W (www/, logs/) and PIDS, both cleaned up on exit
#   bench_origin DIRECTIVES [CPU] nginx on 127.0.0.1:19100 serving $W/www with `location / { DIRECTIVES }`
#   bench_wrk NAME PORT [PID]     one wrk run (CPU 0, $C connections, $D s) on /item.json: one line;
#                                 with PID, also the server's CPU per request (cpu_us, and of it the
#                                 journal writer thread's, journal_us): robust where rps is noisy
#   bench_cpu_ns PID [THREAD]     CPU time (ns) of PID's threads so far (those named THREAD only)

bench_need() {
  for b in "$@"; do
    command -v "$b" >/dev/null || { echo "missing $b: apt-get install -y $*" >&2; exit 2; }
  done
}

bench_build() {
  if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; return; fi
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

bench_cpu_ns() { # pid [thread name]
  local t n sum=0
  for t in /proc/"$1"/task/*; do
    if [ -n "${2:-}" ]; then read -r n < "$t/comm" 2>/dev/null || continue; [ "$n" = "$2" ] || continue; fi
    read -r n _ < "$t/schedstat" 2>/dev/null && sum=$((sum + n))
  done
  echo "$sum"
}

bench_wrk() { # name port [pid]
  local url=http://127.0.0.1:$2/item.json
  for _ in 1 2 3; do curl -s -o /dev/null "$url" || true; done
  local c0=0 j0=0 cpu=""
  if [ -n "${3:-}" ]; then
    # A fresh process: one second of load first (the cache, the allocator, the journal file).
    taskset -c 0 wrk -t1 -c"$C" -d1s "$url" > /dev/null 2>&1 || true
    c0=$(bench_cpu_ns "$3"); j0=$(bench_cpu_ns "$3" tierd-journal)
  fi
  local out; out=$(taskset -c 0 wrk -t1 -c"$C" -d"${D}s" --latency "$url" 2>&1)
  if [ -n "${3:-}" ]; then
    local n c1 j1
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    c1=$(bench_cpu_ns "$3"); j1=$(bench_cpu_ns "$3" tierd-journal)
    cpu=$(awk -v c=$((c1 - c0)) -v j=$((j1 - j0)) -v n="${n:-0}" \
      'BEGIN { if (n > 0) printf "cpu_us=%.3f journal_us=%.3f", c / n / 1000, j / n / 1000 }')
  fi
  local rps p50 p99 errs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  echo "$1 rps=$rps p50=$p50 p99=$p99 $cpu $errs"
}
