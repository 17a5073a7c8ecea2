#!/usr/bin/env bash
# Builds and runs tierd in release mode, linked against DuckDB's prebuilt libduckdb.so
# (fetched once by scripts/duckdb-lib.sh). Arguments go to tierd:
#   scripts/run.sh                          # quick start: config/tierd.toml, demo origin
#   scripts/run.sh serve --config my.toml
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tierd-target}"
DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$(scripts/duckdb-lib.sh)}"
export DUCKDB_LIB_DIR
exec cargo run --release --locked -- "$@"
