#!/usr/bin/env bash
# Fetches DuckDB's official prebuilt libduckdb.so (from the npm package
# @duckdb/node-bindings-linux-x64, the build DuckDB publishes for its Node.js bindings) into a
# shared directory and prints that directory. Point DUCKDB_LIB_DIR at it and the duckdb crate
# links against it instead of compiling DuckDB's C++ sources (about an hour on two cores).
#
#   export DUCKDB_LIB_DIR="$(scripts/duckdb-lib.sh)"
#
# The version must match the duckdb crate: crate 1.10506.x is DuckDB 1.5.6.
set -euo pipefail

DUCKDB_VERSION=1.5.6
NPM_VERSION="${DUCKDB_VERSION}-r.1"
SHA1=92c5328e91079769bfbe79d3c4a7785a6cbb1039   # the npm registry's shasum for that tarball
DEST="${TIERD_DUCKDB_DIR:-/var/tmp/tierd-duckdb}/${DUCKDB_VERSION}"

case "$(uname -sm)" in
  "Linux x86_64") ;;
  *) echo "duckdb-lib.sh: no prebuilt library for $(uname -sm); build with --features bundled" >&2; exit 1 ;;
esac

if [[ -f "$DEST/libduckdb.so" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
url="https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-${NPM_VERSION}.tgz"
curl -sSfL --retry 3 --connect-timeout 20 --max-time 600 -o "$tmp/pkg.tgz" "$url" >&2
echo "$SHA1  $tmp/pkg.tgz" | sha1sum -c --quiet - >&2
tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/libduckdb.so package/LICENSE
mv "$tmp/package/LICENSE" "$DEST/LICENSE"
# Rename last: a present libduckdb.so is always a whole one.
mv "$tmp/package/libduckdb.so" "$DEST/libduckdb.so"
echo "$DEST"
