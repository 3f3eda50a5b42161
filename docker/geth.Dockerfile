# geth v1.13.15 (the build of scripts/install-geth), with geth-agent as its
# launcher: `geth-agent geth` initialises the datadir and then becomes geth
# with the command line the agent itself would use (docker/README in docs/DOCKER.md).
# Build context: target/docker-context (scripts/images fills it).
ARG BASE=debian:bookworm-20250520-slim
FROM $BASE
# One fixed non-root user for geth and the agent: they share a datadir volume,
# and the agent reads geth's /proc entries (same uid) in a shared PID namespace.
RUN groupadd --gid 10001 geth \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin geth \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY geth geth-agent /usr/local/bin/
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/geth"]
ARG VERSION=1.13.15
ARG REVISION=unknown
LABEL org.opencontainers.image.title="geth" \
      org.opencontainers.image.description="go-ethereum v1.13.15 (clique), launched by geth-agent geth" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="LGPL-3.0-or-later AND GPL-3.0-or-later"
