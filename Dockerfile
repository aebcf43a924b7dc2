FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin callvault

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/callvault /usr/local/bin/callvault
RUN mkdir -p /var/lib/callvault && chown 65534 /var/lib/callvault
USER 65534
ENV CALLVAULT_DATA_DIR=/var/lib/callvault
ENTRYPOINT []
CMD ["callvault", "serve"]
