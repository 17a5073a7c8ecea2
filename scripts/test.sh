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
# promtool checks the rules and prometheus.yml; the Prometheus test runs a real server; amtool
# checks the Alertmanager config.
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# The admin page is checked in a real headless Chromium (and a font to draw its text with).
command -v chromium >/dev/null || need_apt+=(chromium fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  # Packages install without starting their services (Prometheus would take port 9090).
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_rc=/usr/sbin/policy-rc.d
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ -n "$policy_rc" ]; then rm -f "$policy_rc"; fi
fi
# JSON-schema checks of the dashboards and docker-compose.yml (no Docker engine needed).
if ! python3 -m check_jsonschema --version >/dev/null 2>&1; then
  echo "== installing check-jsonschema"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  python3 -m pip install -q check-jsonschema 2>/dev/null \
    || python3 -m pip install -q --break-system-packages check-jsonschema
fi
# The book (docs/): mdbook has no Debian package in bookworm; built from crates.io, without its
# server and watcher, into a directory of its own (about two minutes, once per machine).
MDBOOK_VERSION=0.4.52
MDBOOK_ROOT="${TIERD_TOOLS_DIR:-/var/tmp/tierd-tools}/mdbook-$MDBOOK_VERSION"
if [ ! -x "$MDBOOK_ROOT/bin/mdbook" ]; then
  echo "== installing mdbook $MDBOOK_VERSION"
  CARGO_TARGET_DIR="$MDBOOK_ROOT/target" cargo install -q --locked --no-default-features \
    --version "$MDBOOK_VERSION" --root "$MDBOOK_ROOT" mdbook
  rm -rf "$MDBOOK_ROOT/target"
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

echo "== observability: promtool, amtool, dashboard and compose schemas"
promtool check config prometheus.yml
promtool check rules alerts/tierd.rules.yml
promtool test rules alerts/tierd.rules.test.yml
amtool check-config alerts/alertmanager.yml
python3 scripts/dashboards.py --check
python3 -m check_jsonschema --schemafile dashboards/schema/grafana-dashboard.schema.json dashboards/*.json
python3 -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
echo "== the book: mdbook build docs"
"$MDBOOK_ROOT/bin/mdbook" build docs >/dev/null

if [ $lint = 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -- -D warnings"
  cargo clippy --all-targets --locked "${features[@]}" -- -D warnings
  echo "== cargo doc (warnings are errors)"
  RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked "${features[@]}"
  echo "== the library without the gateway, Redis or DuckDB (each feature alone)"
  for f in "" redis duckdb gateway; do
    cargo clippy --lib --examples --locked --no-default-features --features "$f" -- -D warnings
  done
fi

# An application that embeds the cache without L3 does not link DuckDB.
echo "== examples/embed without the duckdb feature: no libduckdb linked"
cargo build --example embed --locked --no-default-features --features redis
if ldd "$CARGO_TARGET_DIR/debug/examples/embed" | grep -q libduckdb; then
  echo "examples/embed built without the duckdb feature links libduckdb" >&2
  exit 1
fi

echo "== cargo test"
cargo test --all-targets --locked "${features[@]}"
echo "== doc tests"
cargo test --doc --locked "${features[@]}"
