# syntax=docker/dockerfile:1
# One image with both binaries: `ferrocd` (the store, the default entrypoint)
# and `ferrocd-operator` (the chart runs it with `command: [ferrocd-operator]`).
# Building needs no protoc: ferrocd-proto compiles its .proto files with protox.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Dependency layer: the manifests and the lock file only, with placeholder
# sources, so this layer is rebuilt only when dependencies change.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/Cargo.toml
COPY store/Cargo.toml store/Cargo.toml
COPY operator/Cargo.toml operator/Cargo.toml
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN set -eux; \
    for dir in proto store operator e2e bench; do \
        mkdir -p "$dir/src"; \
        echo '' > "$dir/src/lib.rs"; \
    done; \
    echo 'fn main() {}' > proto/build.rs; \
    for bin in store/src/main.rs operator/src/main.rs operator/src/bin/crdgen.rs bench/src/main.rs; do \
        mkdir -p "$(dirname "$bin")"; \
        echo 'fn main() {}' > "$bin"; \
    done; \
    cargo build --release --locked --bin ferrocd --bin ferrocd-operator; \
    cargo clean --release -p ferrocd-proto -p ferrocd -p ferrocd-operator

# Sources of the crates the two binaries are built from.
COPY proto proto
COPY store store
COPY operator operator
RUN set -eux; \
    cargo build --release --locked --bin ferrocd --bin ferrocd-operator; \
    install -D -m 0755 target/release/ferrocd /out/usr/local/bin/ferrocd; \
    install -D -m 0755 target/release/ferrocd-operator /out/usr/local/bin/ferrocd-operator; \
    install -d -m 0700 /out/var/lib/ferrocd

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ferrocd" \
      org.opencontainers.image.description="An etcd-compatible distributed key-value store and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ferrocd/ferrocd"
COPY --from=builder /out/usr/local/bin/ /usr/local/bin/
# 65532 is the distroless `nonroot` user.
COPY --from=builder --chown=65532:65532 /out/var/lib/ferrocd /var/lib/ferrocd
VOLUME ["/var/lib/ferrocd"]
# etcd client and peer ports; the operator serves /metrics, /healthz, /readyz on 8080.
EXPOSE 2379 2380
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferrocd"]
CMD ["--data-dir=/var/lib/ferrocd"]
