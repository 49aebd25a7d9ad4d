# syntax=docker/dockerfile:1
# The pyats-exporter image. Every build step is a call to scripts/docker-build.sh; CI runs
# `scripts/docker-build.sh check`, which replays this build stage (its COPY and RUN lines, in order) in a temp
# dir without Docker, so a build step that breaks fails CI. Keep to COPY / RUN scripts/docker-build.sh /
# WORKDIR in the build stage: the check refuses anything else.
#
# Base: Debian bookworm-slim rather than Alpine. The image only runs Node.js (no native addons), so both work;
# slim keeps glibc — the libc the check runs the same steps on in CI and the one Node.js's official binaries
# are built for (musl builds are "experimental" in Node's support tiers) — for a few tens of MB more.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY scripts/docker-build.sh scripts/docker-build.sh
COPY package.json package-lock.json ./
RUN scripts/docker-build.sh deps
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN scripts/docker-build.sh compile
RUN scripts/docker-build.sh runtime /app
RUN scripts/docker-build.sh smoke /app

FROM ${NODE_IMAGE}
ARG NODE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pyats-exporter" \
      org.opencontainers.image.description="Turns live Cisco pyATS test runs into OpenTelemetry traces and Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"
ENV NODE_ENV=production \
    PYATS_EXPORTER_LISTEN=0.0.0.0:9464
WORKDIR /app
# Root-owned and read-only for the process: the exporter writes nothing but its demo socket (in /tmp).
COPY --from=build /app /app
USER node
EXPOSE 9464
# Slim images have no curl: Node's own fetch asks /healthz on the port of PYATS_EXPORTER_LISTEN (so change
# the port with that variable rather than --listen, and the check follows).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "const l=process.env.PYATS_EXPORTER_LISTEN||'0.0.0.0:9464';fetch('http://127.0.0.1:'+l.slice(l.lastIndexOf(':')+1)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli.js"]
