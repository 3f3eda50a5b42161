# geth-agent: supervises one geth; in a container it runs in attach mode beside
# geth's container (shared PID namespace, datadir and log volume).
# Build context: target/docker-context (scripts/images fills it).
ARG BASE=debian:bookworm-20250520-slim
FROM $BASE
# One fixed non-root user for geth and the agent: they share a datadir volume,
# and the agent reads geth's /proc entries (same uid) in a shared PID namespace.
RUN groupadd --gid 10001 geth \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin geth \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY geth-agent /usr/local/bin/
USER 10001:10001
WORKDIR /data
ENV GETH_AGENT_DATADIR=/data
# Ready (the /readyz verdict), asked over the admin socket: no port to know.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD geth-agent ctl --json status | grep -q '"ready":true'
ENTRYPOINT ["/usr/local/bin/geth-agent"]
CMD ["run"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="geth-agent" \
      org.opencontainers.image.description="Supervisor of one geth v1.13 clique node" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION"
