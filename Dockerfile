# Build with the locked dependencies, run as a non-root user in a small image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY prompts ./prompts
COPY config ./config
COPY assets ./assets
COPY examples ./examples
# The same command .ci/run proves works.
RUN cargo build --release --locked --bin funnelfix

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/funnelfix --create-home funnelfix
COPY --from=build /src/target/release/funnelfix /usr/local/bin/funnelfix
COPY --from=build /src/prompts /etc/funnelfix/prompts
WORKDIR /var/lib/funnelfix
USER funnelfix
# The config (mount it read-only) and the state database (keep it on a volume).
ENV FUNNELFIX_CONFIG=/etc/funnelfix/funnelfix.toml
VOLUME ["/var/lib/funnelfix"]
# Alive means the daemon's heartbeat in the state database is recent.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["funnelfix", "health"]
# On SIGTERM funnelfix abandons a pass in flight (resumed after a restart) and exits 0 within seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["funnelfix"]
CMD ["run"]
