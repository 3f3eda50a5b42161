# geth-aggregator: fleet view of the agents' signed reports and geth's ethstats.
# Build context: target/docker-context (scripts/images fills it).
ARG BASE=debian:bookworm-20250520-slim
FROM $BASE
# One fixed non-root user for geth and the agent: they share a datadir volume,
# and the agent reads geth's /proc entries (same uid) in a shared PID namespace.
RUN groupadd --gid 10001 geth \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin geth \
 && mkdir -p /data \
 && chown 10001:10001 /data
RUN mkdir -p /var/lib/geth-aggregator && chown 10001:10001 /var/lib/geth-aggregator
COPY geth-aggregator /usr/local/bin/
# The Solidity page's compiler and library sources (/solidity).
COPY solidity /usr/share/geth-aggregator/solidity
ENV GETH_AGGREGATOR_SOLIDITY_ASSETS=/usr/share/geth-aggregator/solidity
USER 10001:10001
WORKDIR /var/lib/geth-aggregator
VOLUME ["/var/lib/geth-aggregator"]
ENV GETH_AGGREGATOR_DB=/var/lib/geth-aggregator/aggregator.db
ENTRYPOINT ["/usr/local/bin/geth-aggregator"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="geth-aggregator" \
      org.opencontainers.image.description="Fleet dashboard and store for geth-agent reports" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION"
