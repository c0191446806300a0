# syntax=docker/dockerfile:1
#
# mcp-ephemeral: the meta server, and (by default) the image of every server it spawns on
# Kubernetes, whose pods run `mcp-ephemeral bridge --listen 0.0.0.0:8080 -- uvx mcp-server-time`
# with a read-only root filesystem and an emptyDir at /tmp.
#
#   docker build -t mcp-ephemeral .
#   docker build --build-arg PYPI_PRESETS= --build-arg NPM_PRESETS= -t mcp-ephemeral:slim .
#
# Needs BuildKit (Docker 23+ uses it by default): cache mounts and heredocs.

ARG RUST_VERSION=1.95
# Debian 12's nodejs is 18 (end of life since 2025-04) and its npm package drags in ~300
# node-* packages; the official image's build of an LTS release is one binary plus npm.
ARG NODE_VERSION=24
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv
FROM node:${NODE_VERSION}-bookworm-slim AS node

# --- build ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# A static (musl) binary: the Kubernetes runtime also copies it into `image` servers' containers
# (an init container), which may be Alpine or distroless. musl-gcc builds `ring`; kube uses
# rustls, so no OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts, so a source change rebuilds only this crate.
# (A stub-crate layer would break on every new [[bench]]/[[bin]] in Cargo.toml.)
# The git commit reads "unknown": .git is not in the build context.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" \
 && install -D -s -m 0755 "target/$target/release/mcp-ephemeral" /out/mcp-ephemeral

# --- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="mcp-ephemeral" \
      org.opencontainers.image.description="A meta-MCP server: spawn MCP servers on demand, hand back URLs, reap them on TTL" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mcp-ephemeral/mcp-ephemeral"

# python3 for uvx (Debian's 3.11; uv never downloads one, see UV_PYTHON_DOWNLOADS below);
# git for mcp-server-git; ca-certificates for the Kubernetes API and the registries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 git \
 && rm -rf /var/lib/apt/lists/*

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
COPY --from=uv /uv /uvx /usr/local/lib/uv/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/uv/uv /usr/local/bin/uv

# The presets' packages, installed at build time so a pod starts without a download.
# Empty both to build a smaller image; then every start downloads (see "cold start" below).
ARG PYPI_PRESETS="mcp-server-time mcp-server-fetch mcp-server-git"
ARG NPM_PRESETS="@modelcontextprotocol/server-everything @modelcontextprotocol/server-filesystem @modelcontextprotocol/server-memory @modelcontextprotocol/server-sequential-thinking kubernetes-mcp-server"
# uv: one venv per package in /opt/uv/tools/<package>, bytecode compiled (the root is
# read-only at run time). readabilipy (mcp-server-fetch) installs its Readability.js
# dependencies with npm on first use, which a read-only /opt would refuse: do it now.
# npm: global installs in /opt/npm; /opt/npm/npx/<package> links to the command npx would run.
RUN <<'EOF'
set -eu
export UV_TOOL_DIR=/opt/uv/tools UV_TOOL_BIN_DIR=/opt/uv/bin UV_CACHE_DIR=/tmp/build-cache/uv \
       UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 \
       npm_config_cache=/tmp/build-cache/npm npm_config_update_notifier=false \
       npm_config_fund=false npm_config_audit=false
for p in $PYPI_PRESETS; do uv tool install --python /usr/bin/python3 "$p"; done
for d in /opt/uv/tools/*/lib/python3*/site-packages/readabilipy/javascript; do
  if [ -f "$d/package.json" ]; then (cd "$d" && npm install --omit=dev --no-package-lock); fi
done
mkdir -p /opt/npm/npx
if [ -n "$NPM_PRESETS" ]; then npm install -g --prefix /opt/npm --omit=dev $NPM_PRESETS; fi
for p in $NPM_PRESETS; do
  bin=$(node -e 'const j = require(process.argv[1]), n = j.name.replace(/^@[^/]*\//, "");
    const k = typeof j.bin === "string" ? [n] : Object.keys(j.bin || {});
    console.log(k.length === 1 ? k[0] : n)' "/opt/npm/lib/node_modules/$p/package.json")
  mkdir -p "/opt/npm/npx/$(dirname "$p")"
  ln -s "/opt/npm/bin/$bin" "/opt/npm/npx/$p"
done
rm -rf /tmp/build-cache
EOF

# uvx and npx run a preinstalled package directly when asked for it by bare name (`uvx
# mcp-server-time`, `npx @modelcontextprotocol/server-memory`). The real ones would not: uvx
# takes a lock in its tool directory, which must be writable, and npx asks the registry for the
# latest version on every start. Anything else (another package, `pkg@1.2`, options) goes to
# the real uvx/npx: a cold start that downloads into the uv/npm caches under /tmp (the pod's
# emptyDir) and needs access to PyPI or npm; it counts against `--ready-timeout`.
COPY --chmod=0755 <<'EOF' /usr/local/bin/uvx
#!/bin/sh
case "${1:-}" in
  "" | -* | *[!a-z0-9._-]*) ;;
  *) if [ -x "/opt/uv/tools/$1/bin/$1" ]; then tool=$1; shift; exec "/opt/uv/tools/$tool/bin/$tool" "$@"; fi ;;
esac
exec /usr/local/lib/uv/uvx "$@"
EOF
COPY --chmod=0755 <<'EOF' /usr/local/bin/npx
#!/bin/sh
case "${1:-}" in
  "" | -* | *..* | ?*@* | *[!@a-z0-9._/-]*) ;;
  *) if [ -f "/opt/npm/npx/$1" ]; then pkg=$1; shift; exec "/opt/npm/npx/$pkg" "$@"; fi ;;
esac
exec /usr/local/lib/node_modules/npm/bin/npx-cli.js "$@"
EOF

COPY --from=build /out/mcp-ephemeral /usr/local/bin/mcp-ephemeral

# Numeric, so that `runAsNonRoot` can check it without a passwd lookup.
RUN groupadd --gid 10001 mcp \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mcp

# Everything that writes goes to /tmp, the one writable place in a pod.
# UV_TOOL_DIR: the real uvx locks it even to run a package it does not install there.
# UV_SYSTEM_CERTS: uv trusts the system CA store (ca-certificates) like the rest of the image.
# MEMORY_FILE_PATH: server-memory keeps its file beside its code by default (read-only here).
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_DATA_HOME=/tmp/.local/share \
    UV_CACHE_DIR=/tmp/.cache/uv \
    UV_TOOL_DIR=/tmp/.local/share/uv/tools \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=true \
    npm_config_cache=/tmp/.npm \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    MEMORY_FILE_PATH=/tmp/memory.jsonl \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/uv/bin:/opt/npm/bin
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# No init process: the binary handles SIGTERM and stops its own children's process groups.
ENTRYPOINT ["mcp-ephemeral"]
CMD ["serve", "--transport", "http", "--listen", "0.0.0.0:8080"]
