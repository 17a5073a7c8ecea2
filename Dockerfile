# tierd container image: a release build linked against DuckDB's official prebuilt libduckdb.so
# (scripts/duckdb-lib.sh), on Debian slim. Used by docker-compose.yml.
#   docker build -t tierd .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/duckdb-lib.sh scripts/duckdb-lib.sh
RUN scripts/duckdb-lib.sh
COPY . .
ENV DUCKDB_LIB_DIR=/var/tmp/tierd-duckdb/1.5.6 CARGO_TARGET_DIR=/src/target
RUN cargo build --release --locked && cp target/release/tierd /usr/local/bin/tierd

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
# 8080: the gateway; 9090: admin and /metrics (keep it off public networks).
EXPOSE 8080 9090
ENTRYPOINT ["tierd"]
CMD ["serve", "--config", "/etc/tierd/tierd.toml"]
