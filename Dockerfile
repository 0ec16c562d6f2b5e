# syntax=docker/dockerfile:1
# One image for every Risk Monitor process; the command picks the role:
#   webserver:   dagster-webserver -h 0.0.0.0 -p 3000 -w /app/workspace.yaml
#   daemon:      dagster-daemon run -w /app/workspace.yaml
#   code server: dagster code-server start -h 0.0.0.0 -p 4000 -m risk_monitor.definitions
#   service:     risk-monitor serve            (the default)
# HEALTHCHECK probes $HEALTHCHECK_URL: the service's /healthz by default; set it to
# http://127.0.0.1:3000/server_info for the webserver (Kubernetes uses its own probes).
# Secrets (exchange keys, Fireblocks key, Slack token) are passed as environment variables at
# run time, never baked in. The service binds 0.0.0.0 with bearer-token auth on: it refuses to
# start until RISK_MONITOR_API_TOKEN holds a token (16+ characters): deploy/docker/service.yaml.
# DAGSTER_HOME must hold a dagster.yaml: mount one, or use the
# PostgreSQL variant copied to /opt/dagster/home (URL from RISK_MONITOR_DAGSTER_PG_URL).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
# Dependencies first, exactly as locked (uv.lock), without the dev extra: this layer is reused
# until the lock changes. The workspace member's manifest (risk_sim/pyproject.toml) is needed
# to read the lock; no simulator code enters the image (.dockerignore keeps it out).
COPY pyproject.toml uv.lock README.md ./
COPY risk_sim/pyproject.toml ./risk_sim/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-project --no-install-workspace
COPY risk_monitor ./risk_monitor
# Editable install: Dagster's load_from_defs_folder finds the project through pyproject.toml,
# so the source tree stays at /app and the venv points at it.
RUN uv sync --frozen --no-dev \
    && rm -rf /app/risk_sim

FROM ${PYTHON_IMAGE} AS runtime
# the code version alerts and audit entries name: docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD)
ARG GIT_COMMIT=""
ENV RISK_MONITOR_CODE_VERSION=${GIT_COMMIT}
LABEL org.opencontainers.image.title="risk-monitor" \
      org.opencontainers.image.description="Near-real-time risk monitor for crypto trading desks" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/home \
    RISK_MONITOR_SERVICE__REST_HOST=0.0.0.0 \
    RISK_MONITOR_SERVICE__GRPC_HOST=0.0.0.0 \
    RISK_MONITOR_SERVICE__REST_PORT=8080 \
    RISK_MONITOR_SERVICE__GRPC_PORT=50051 \
    RISK_MONITOR_CONFIG=/etc/risk-monitor/service.yaml \
    RISK_MONITOR_DATA_DIR=/var/lib/risk-monitor \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
RUN groupadd --system --gid 10001 risk \
    && useradd --system --uid 10001 --gid risk --home-dir /app --shell /usr/sbin/nologin risk \
    && mkdir -p /app /opt/dagster/home /var/lib/risk-monitor \
    && chown -R risk:risk /app /opt/dagster/home /var/lib/risk-monitor
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /app /app
WORKDIR /app
COPY --chown=10001:10001 workspace.yaml dagster.yaml ./
COPY --chown=10001:10001 deploy/docker/service.yaml /etc/risk-monitor/service.yaml
COPY --chown=10001:10001 deploy/postgres/dagster.yaml /opt/dagster/home/dagster.yaml
USER 10001:10001
EXPOSE 8080 50051 3000 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=2).status == 200 else 1)"]
ENTRYPOINT []
CMD ["risk-monitor", "serve"]
