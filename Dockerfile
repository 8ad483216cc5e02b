# pixguard on the CPU: a slim, non-root image serving the bundled model.
#   docker build -t pixguard .
#   docker run -p 8080:8080 -p 8081:8081 pixguard
FROM rust:1.95-slim-bookworm AS build
# make: librdkafka's bundled build (the Kafka stream).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest names the benches, so cargo wants them present; protoc comes from a crate.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The commit pixguard_build_info names (the deploy workflow passes it).
ARG PIXGUARD_COMMIT=unknown
RUN cargo build --release --locked --bin pixguard \
    && strip target/release/pixguard

FROM debian:bookworm-slim
# CA certificates: the model registry and GCS are reached over HTTPS.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pixguard
WORKDIR /app
COPY --from=build /src/target/release/pixguard /usr/local/bin/pixguard
COPY config.yaml ./config.yaml
COPY models/pix-fraud ./models/pix-fraud
USER 10001
# Remote model packages are downloaded here (the non-root user cannot write /app); on Kubernetes
# mount an emptyDir on it.
ENV PIXGUARD__LOGGING__FORMAT=json \
    PIXGUARD__MODEL__CACHE_DIR=/tmp/pixguard/models
EXPOSE 8080 8081
# No curl in the image: bash's /dev/tcp asks /readyz (200 once warmed up, 503 while draining).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/pixguard"]
CMD ["serve"]
