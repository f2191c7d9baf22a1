# syntax=docker/dockerfile:1
# gatehouse: built in the Rust image with SAML support (cargo feature `saml`, which links
# libxml2 and libxmlsec1), run on Debian slim with only those libraries and CA certificates
# added, as the non-root user 65532.
#
#   docker build -t gatehouse:0.1.0 .
#
# The cargo registry and target directory live in BuildKit cache mounts, so a rebuild after a
# source change recompiles gatehouse, not its dependencies.

FROM rust:1.95-bookworm AS build
# samael's bindings are generated against libxmlsec1 (bindgen needs libclang).
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libxml2-dev libxmlsec1-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# sqlx::migrate! embeds these at compile time.
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --features saml --bin gatehouse \
    && install -D -m 0755 target/release/gatehouse /out/gatehouse

FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libxmlsec1-openssl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
# 65532:65532 (no entry in /etc/passwd needed); the Kubernetes manifests run it with that id
# and a read-only root.
USER 65532:65532
# gRPC ext_authz 9191, HTTP 8080, admin 9090. The defaults listen on 127.0.0.1: in a container
# set server.*_listen (or GATEHOUSE_SERVER_GRPC_LISTEN, …) to 0.0.0.0:PORT.
EXPOSE 9191 8080 9090
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
