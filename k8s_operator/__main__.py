"""``python -m k8s_operator``: run the VaultAgent operator (standalone, one replica).

Watches every namespace unless ``WATCH_NAMESPACES`` lists some (comma separated). Reaches the
API server with the pod's service account, else the kubeconfig (``KUBECONFIG`` or ~/.kube).
Serves its liveness check at ``KEYVAULT_OPERATOR_LIVENESS`` (default
``http://0.0.0.0:8080/healthz``, the Deployment's probe).
"""

from __future__ import annotations

import os
import sys

import kopf

import k8s_operator.handlers
import k8s_operator.vaultsecret_handlers  # noqa: F401 - and the VaultSecret ones
from common.errors import ConfigError
from k8s_operator.api import HttpKubeApi

LIVENESS = "http://0.0.0.0:8080/healthz"


def connect() -> HttpKubeApi:
    """The API client from kopf's own login; ConfigError when there are no credentials."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is None and (
        os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config"))
    ):
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise ConfigError(
            "no Kubernetes credentials: run in a pod with a service account, or set KUBECONFIG"
        )
    return HttpKubeApi.from_connection(info)


def main() -> None:
    """Run kopf with the VaultAgent handlers until SIGTERM."""
    try:
        api = connect()
    except ConfigError as exc:
        print(f"keyvault-operator: {exc.message}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    namespaces = [n.strip() for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n.strip()]
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("KEYVAULT_OPERATOR_LIVENESS") or LIVENESS,
        memo=kopf.Memo(api=api),
    )


if __name__ == "__main__":
    main()
