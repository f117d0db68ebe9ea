# KeyVault images: three final stages from one Dockerfile (classic builder; no BuildKit needed).
#   docker build --target agent         -t keyvault/agent:0.1.0 .
#   docker build --target control-plane -t keyvault/control-plane:0.1.0 .
#   docker build --target operator      -t keyvault/operator:0.1.0 .
# Each final stage holds one virtualenv with only its own packages and extra, no pip, and a
# CycloneDX SBOM of that venv at /usr/share/keyvault/sbom.cdx.json. Bases: PYTHON_IMAGE for the
# builders (needs python3 -m venv and pip), RUNTIME_IMAGE for the final stages (python3 only).
# Without a registry, scripts/docker_base.sh makes both locally and prints their image IDs: pass
# them as --build-arg PYTHON_IMAGE=sha256:… RUNTIME_IMAGE=sha256:… to pin them (docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=keyvault/python-runtime:3.11-bookworm

# ---------------------------------------------------------------- builder: source + SBOM tool
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# the SBOM tool lives in a venv of its own: it never enters a target's venv
RUN python3 -m venv /opt/sbom \
 && /opt/sbom/bin/pip install -q "cyclonedx-bom==7.5.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY serverkit ./serverkit
COPY agent ./agent
COPY control_plane ./control_plane
COPY apps ./apps
COPY k8s_operator ./k8s_operator
COPY deploy/docker/build_target.sh /usr/local/bin/build_target

# ---------------------------------------------------------------- a venv per target
# build_target PACKAGES EXTRA: a wheel of only those packages, a pip-less venv at /opt/venv
# with it and the extra's dependencies, and the SBOM at /opt/sbom.cdx.json
FROM builder AS build-agent
RUN build_target "common serverkit agent" agent

FROM builder AS build-control-plane
RUN build_target "common serverkit control_plane" control-plane

FROM builder AS build-operator
RUN build_target "common k8s_operator" k8s

# ---------------------------------------------------------------- shared runtime base
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.vendor="KeyVault" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.source="https://github.com/keyvault/keyvault" \
      org.opencontainers.image.documentation="https://github.com/keyvault/keyvault/blob/main/docs/deployment.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="debian:bookworm (python3 3.11)"
RUN groupadd --system --gid 10001 keyvault \
 && useradd --system --uid 10001 --gid keyvault --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin keyvault \
 && mkdir -p /app/config /app/data \
 && chown keyvault:keyvault /app/data \
 && chmod 0700 /app/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYVAULT_APP_DIR=/app \
    KEYVAULT_HEARTBEAT_FILE=/tmp/keyvault.alive
WORKDIR /app

# ---------------------------------------------------------------- Kubernetes operator
FROM runtime AS operator
COPY --from=build-operator /opt/venv /opt/venv
COPY --from=build-operator /opt/sbom.cdx.json /usr/share/keyvault/sbom.cdx.json
LABEL org.opencontainers.image.title="keyvault-operator" \
      org.opencontainers.image.description="KeyVault Kubernetes operator for VaultAgent resources"
USER 10001:10001
# liveness is kopf's /healthz, probed by the kubelet (deploy/k8s/operator.yaml): no process here
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "k8s_operator"]

# ---------------------------------------------------------------- control plane
FROM runtime AS control-plane
COPY --from=build-control-plane /opt/venv /opt/venv
COPY --from=build-control-plane /opt/sbom.cdx.json /usr/share/keyvault/sbom.cdx.json
LABEL org.opencontainers.image.title="keyvault-control-plane" \
      org.opencontainers.image.description="KeyVault control plane: operator API (TLS) and agent gateway (mutual TLS)"
ENV KEYVAULT_CP_BIND=0.0.0.0 \
    KEYVAULT_CP_GATEWAY_BIND=0.0.0.0
USER 10001:10001
# operator API (TLS 1.3; the first start issues its certificate), agent gateway (mutual TLS)
EXPOSE 8443 8444
# the server touches $KEYVAULT_HEARTBEAT_FILE every 5 s once listening: a shell and find, no Python
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "test -n \"$(find \"$KEYVAULT_HEARTBEAT_FILE\" -newermt '-20 seconds' 2>/dev/null)\""]
ENTRYPOINT ["python", "-m", "control_plane.container"]
CMD ["run"]

# ---------------------------------------------------------------- vault agent (default target)
FROM runtime AS agent
COPY --from=build-agent /opt/venv /opt/venv
COPY --from=build-agent /opt/sbom.cdx.json /usr/share/keyvault/sbom.cdx.json
LABEL org.opencontainers.image.title="keyvault-agent" \
      org.opencontainers.image.description="KeyVault vault agent: holds and serves the secrets (mutual TLS)"
ENV KEYVAULT_DATA_DIR=/app/data \
    KEYVAULT_BIND=0.0.0.0 \
    VAULT_MASTER_KEY_FILE=/app/config/master.key
VOLUME ["/app/config", "/app/data"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "test -n \"$(find \"$KEYVAULT_HEARTBEAT_FILE\" -newermt '-20 seconds' 2>/dev/null)\""]
ENTRYPOINT ["python", "-m", "agent.docker_entrypoint"]
CMD ["run"]
