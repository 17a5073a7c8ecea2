# tierd container image: a release build linked against DuckDB's official prebuilt libduckdb.so
# (scripts/duckdb-lib.sh, x86-64 or arm64), on Debian slim. Used by docker-compose.yml.
#   docker build -t tierd .
#   docker buildx build --platform linux/amd64,linux/arm64 -t tierd .
# TIERD_GIT_REVISION (a build argument) labels tierd_build_info when .git is not sent.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/duckdb-lib.sh scripts/duckdb-lib.sh
RUN scripts/duckdb-lib.sh
ENV DUCKDB_LIB_DIR=/var/tmp/tierd-duckdb/1.5.6 CARGO_TARGET_DIR=/src/target
# Dependencies in their own layer: built against empty targets, so a change to tierd's own
# sources rebuilds tierd only.
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor vendor
RUN mkdir -p src benches examples tests/it \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for f in benches/l1_hit.rs benches/tiers.rs examples/embed.rs examples/floor.rs tests/it/main.rs; do echo 'fn main() {}' > "$f"; done \
    && cargo build --release --locked \
    && rm -rf src benches examples tests
COPY . .
ARG TIERD_GIT_REVISION=unknown
ENV TIERD_GIT_REVISION=${TIERD_GIT_REVISION}
# touch: the stub build left newer timestamps than the sources copied in.
RUN touch src/main.rs src/lib.rs build.rs \
    && cargo build --release --locked && cp target/release/tierd /usr/local/bin/tierd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/tierd --create-home tierd \
    && mkdir /var/lib/tierd/data && chown tierd: /var/lib/tierd/data
# The binary's rpath names this directory.
COPY --from=build /var/tmp/tierd-duckdb/1.5.6/ /var/tmp/tierd-duckdb/1.5.6/
COPY --from=build /usr/local/bin/tierd /usr/local/bin/tierd
COPY config/tierd.toml /etc/tierd/tierd.toml
USER tierd
WORKDIR /var/lib/tierd
ENV TIERD_CONFIG=/etc/tierd/tierd.toml
# 8080: the gateway; 9090: admin and /metrics (keep it off public networks).
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["tierd", "healthcheck"]
ENTRYPOINT ["tierd"]
CMD ["serve"]
