# syntax=docker/dockerfile:1
#
# Runnel's container images, one target each (BuildKit builds only the stages a target needs):
#
#   docker build --target broker   -t runnel.dev/runnel-broker:0.1.0 .
#   docker build --target operator -t runnel.dev/runnel-operator:0.1.0 .
#
# Where there is no Docker engine, `make images` (e2e/images/build-images.sh) makes the same
# runtime images from the host's release binaries with umoci; e2e/tests/images.rs checks that
# the user, entrypoint, environment, ports, volume and labels below match what it builds.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- builder: both release binaries from one cargo invocation (shared dependency builds) -------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# protobuf is compiled by protox inside the build: no protoc needed. The caches survive between
# builds; the binaries are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runnel-broker -p runnel-operator --bins \
 && install -D -m 0755 target/release/runnel-broker /out/runnel-broker \
 && install -D -m 0755 target/release/runnel-operator /out/runnel-operator

# --- runtime base: CA certificates and the non-root user runnel (65532:65532) -------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 runnel \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/runnel --no-create-home \
      --shell /usr/sbin/nologin runnel

# --- broker: gRPC on 9092, /metrics /healthz /readyz on 9644, the log in /var/lib/runnel -------
FROM runtime AS broker
ARG VERSION=0.1.0
COPY --from=build /out/runnel-broker /usr/local/bin/runnel-broker
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/runnel
# The broker's built-in data directory is `data` (relative) and its HTTP endpoint is off; in a
# container both get fixed places. Flags (as the operator passes them) still override these.
ENV RUNNEL_DATA_DIR=/var/lib/runnel \
    RUNNEL_METRICS_LISTEN=0.0.0.0:9644
VOLUME /var/lib/runnel
EXPOSE 9092/tcp 9644/tcp
LABEL org.opencontainers.image.title="runnel-broker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/runnel-broker"]

# --- operator: /metrics /healthz /readyz on 8080 (--metrics-listen) ----------------------------
FROM runtime AS operator
ARG VERSION=0.1.0
COPY --from=build /out/runnel-operator /usr/local/bin/runnel-operator
EXPOSE 8080/tcp
LABEL org.opencontainers.image.title="runnel-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/runnel-operator"]
