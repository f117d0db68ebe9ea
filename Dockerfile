# syntax=docker/dockerfile:1
# KeyVault images: two final stages from one build.
#   docker build --target agent         -t keyvault/agent .
#   docker build --target control-plane -t keyvault/control-plane .
# See docs/deployment.md; every variable is in docs/configuration.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder: one wheel of ours
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libffi-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY agent ./agent
COPY control_plane ./control_plane
COPY apps ./apps
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- a venv per target
FROM builder AS build-agent
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "$(ls /wheels/keyvault-*.whl)[agent]"

FROM builder AS build-control-plane
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "$(ls /wheels/keyvault-*.whl)[control-plane]"

# ---------------------------------------------------------------- shared runtime base
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 keyvault \
 && useradd --system --uid 10001 --gid keyvault --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin keyvault \
 && mkdir -p /app/config /app/data \
 && chown keyvault:keyvault /app/data \
 && chmod 0700 /app/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYVAULT_APP_DIR=/app
WORKDIR /app

# ---------------------------------------------------------------- control plane
FROM runtime AS control-plane
COPY --from=build-control-plane /opt/venv /opt/venv
ENV KEYVAULT_CP_BIND=0.0.0.0 \
    KEYVAULT_CP_GATEWAY_BIND=0.0.0.0
USER 10001:10001
# operator API (plain HTTP: put it behind your TLS-terminating proxy), agent gateway (mutual TLS)
EXPOSE 8443 8444
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "control_plane.container", "health"]
ENTRYPOINT ["python", "-m", "control_plane.container"]
CMD ["run"]

# ---------------------------------------------------------------- vault agent (default target)
FROM runtime AS agent
COPY --from=build-agent /opt/venv /opt/venv
ENV KEYVAULT_DATA_DIR=/app/data \
    KEYVAULT_BIND=0.0.0.0 \
    VAULT_MASTER_KEY_FILE=/app/config/master.key
VOLUME ["/app/config", "/app/data"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "agent.docker_entrypoint", "health"]
ENTRYPOINT ["python", "-m", "agent.docker_entrypoint"]
CMD ["run"]
