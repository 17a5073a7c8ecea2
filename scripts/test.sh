#!/usr/bin/env bash
# The one gate: formatting, lints and every test. Installs what it needs on a fresh Debian machine.
#   scripts/test.sh            # everything
#   scripts/test.sh --no-lint  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are kept outside the clone so that repeated runs (and CI on the same machine) are fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tierd-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
# The tier tests start real Redis servers of their own on free ports.
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "== installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# DuckDB: link DuckDB's official prebuilt libduckdb.so instead of compiling its C++ sources
# (about an hour on two cores). TIERD_DUCKDB_BUNDLED=1 compiles it instead (--features bundled).
features=()
if [ "${TIERD_DUCKDB_BUNDLED:-0}" = 1 ]; then
  features=(--features bundled)
  unset DUCKDB_LIB_DIR
else
  DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$(scripts/duckdb-lib.sh)}"
  export DUCKDB_LIB_DIR
  echo "== DuckDB: prebuilt library in $DUCKDB_LIB_DIR"
fi

lint=1
[ "${1:-}" = "--no-lint" ] && lint=0

if [ $lint = 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -- -D warnings"
  cargo clippy --all-targets --locked "${features[@]}" -- -D warnings
fi

echo "== cargo test"
cargo test --all-targets --locked "${features[@]}"
echo "== doc tests"
cargo test --doc --locked "${features[@]}"
