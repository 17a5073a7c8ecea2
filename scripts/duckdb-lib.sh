#!/usr/bin/env bash
# Fetches DuckDB's official prebuilt libduckdb.so for x86-64 or arm64 (from the npm package
# @duckdb/node-bindings-linux-x64 or -arm64, the builds DuckDB publishes for its Node.js
# bindings) into a shared directory and prints that directory. Point DUCKDB_LIB_DIR at it and the duckdb crate
# links against it instead of compiling DuckDB's C++ sources (about an hour on two cores).
#
#   export DUCKDB_LIB_DIR="$(scripts/duckdb-lib.sh)"
#
# The version must match the duckdb crate: crate 1.10506.x is DuckDB 1.5.6.
set -euo pipefail

DUCKDB_VERSION=1.5.6
NPM_VERSION="${DUCKDB_VERSION}-r.1"
DEST="${TIERD_DUCKDB_DIR:-/var/tmp/tierd-duckdb}/${DUCKDB_VERSION}"

# The npm registry's shasum of each architecture's tarball.
case "$(uname -sm)" in
  "Linux x86_64") ARCH=x64; SHA1=92c5328e91079769bfbe79d3c4a7785a6cbb1039 ;;
  "Linux aarch64") ARCH=arm64; SHA1=0190d3b73d133e1929f4f4106c53b3fd6122abc9 ;;
  *) echo "duckdb-lib.sh: no prebuilt library for $(uname -sm); build with --features bundled" >&2; exit 1 ;;
esac

if [[ -f "$DEST/libduckdb.so" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
url="https://registry.npmjs.org/@duckdb/node-bindings-linux-${ARCH}/-/node-bindings-linux-${ARCH}-${NPM_VERSION}.tgz"
curl -sSfL --retry 3 --connect-timeout 20 --max-time 600 -o "$tmp/pkg.tgz" "$url" >&2
echo "$SHA1  $tmp/pkg.tgz" | sha1sum -c --quiet - >&2
tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/libduckdb.so package/LICENSE
mv "$tmp/package/LICENSE" "$DEST/LICENSE"
# Rename last: a present libduckdb.so is always a whole one.
mv "$tmp/package/libduckdb.so" "$DEST/libduckdb.so"
echo "$DEST"
