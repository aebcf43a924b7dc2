FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit's cache mounts keep the crates.io downloads and target/ between
# builds, so a change to the sources recompiles callvault and not its hundreds of
# dependencies. They are not part of the image: the binary is copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin callvault \
    && cp target/release/callvault /usr/local/bin/callvault

FROM debian:bookworm-slim
# ca-certificates: TLS to AWS KMS and S3. curl: the health check of
# docker-compose.yml (GET /metrics), as there is no gRPC health probe here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/callvault /usr/local/bin/callvault
# The embedded default's state (SQLite catalog, objects, local keyring) lives
# in the data dir, 0700 and owned by the unprivileged user the server runs as;
# a volume, so that it outlives the container. Created before VOLUME: a new
# volume starts as a copy of it, owner and mode included.
RUN install -d -o 65534 -g 65534 -m 0700 /var/lib/callvault
VOLUME /var/lib/callvault
USER 65534:65534
ENV CALLVAULT_DATA_DIR=/var/lib/callvault
ENTRYPOINT []
CMD ["callvault", "serve"]
