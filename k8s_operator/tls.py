"""The agents' TLS in the cluster: a CA per VaultAgent, or cert-manager, or given Secrets.

Every pod of a VaultAgent serves the same certificate. It names the client Service in each
form a client may use (``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc``,
``<svc>.<ns>.svc.cluster.local``), every pod's headless name, and 127.0.0.1 (the pod's own
health probe). A client that trusts the VaultAgent's one CA therefore reaches any pod through
the Service. The pods require client certificates from the same CA; a second certificate
(``<name>-client-tls``) is the one their health probe presents.

In the default mode (``spec.tls: {}``) the operator makes the CA with the ``cryptography``
library (via :mod:`common.pki`) once, in the Secret ``<name>-ca`` owned by the VaultAgent, and
never replaces it: objects are created with POST, and one that exists is left alone. The
certificates are issued from it and re-issued only when they are missing, within
:data:`RENEW_BEFORE` of expiry, or (the server's) naming other hosts than it should. With ``spec.tls.issuerRef`` cert-manager ``Certificate``
objects ask the named issuer for the same names; with ``spec.tls.secretRef`` the user's
Secrets are mounted as they are.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from common.pki import CertificateAuthority, cert_not_after
from k8s_operator.api import KubeApi
from k8s_operator.crd import MAX_REPLICAS, AgentSpec
from k8s_operator.resources import headless_name, metadata, tls_secret_names

CLUSTER_DOMAIN = "cluster.local"
CA_VALIDITY = timedelta(days=3650)
CERT_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
CLIENT_NAME = "keyvault-probe"
CERT_MANAGER_API = "cert-manager.io/v1"


def ca_secret_name(name: str) -> str:
    """The Secret holding a VaultAgent's CA certificate and key (operator mode only)."""
    return f"{name}-ca"


def service_names(name: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """Every DNS name a client may use for the Service or for one pod behind it.

    Pod names are listed for every ordinal up to the replica maximum, so scaling up never
    needs a new certificate.
    """
    svc = [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{domain}",
    ]
    headless = f"{headless_name(name)}.{namespace}.svc"
    pods = []
    for ordinal in range(MAX_REPLICAS):
        pod = f"{name}-{ordinal}.{headless}"
        pods += [pod, f"{pod}.{domain}"]
    return [*svc, *pods, "localhost"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret(
    owner: Mapping[str, Any], name: str, data: Mapping[str, bytes], kind: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, name),
        "type": kind,
        "data": {k: _b64(v) for k, v in data.items()},
    }


def new_ca_secret(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A new CA for one VaultAgent, as the Secret that keeps it."""
    meta = owner["metadata"]
    ca = CertificateAuthority.create(
        f"KeyVault agents {meta['namespace']}/{meta['name']}", valid_for=CA_VALIDITY
    )
    data = {"ca.crt": ca.cert_pem(), "ca.key": ca.key_pem()}
    return _secret(owner, ca_secret_name(meta["name"]), data, "Opaque")


def load_ca(secret: Mapping[str, Any]) -> CertificateAuthority:
    """The CA kept in a ``<name>-ca`` Secret."""
    data = secret.get("data") or {}
    return CertificateAuthority.load(
        base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"])
    )


def server_secret(
    owner: Mapping[str, Any], ca: CertificateAuthority, domain: str = CLUSTER_DOMAIN
) -> dict[str, Any]:
    """The pods' server certificate (every Service and pod name), as a TLS Secret."""
    meta = owner["metadata"]
    cert, key = ca.issue_server_cert(
        service_names(meta["name"], meta["namespace"], domain),
        ip_addresses=("127.0.0.1", "::1"),
        valid_for=CERT_VALIDITY,
    )
    name = tls_secret_names(meta["name"], None)[0]
    data = {"tls.crt": cert, "tls.key": key, "ca.crt": ca.cert_pem()}
    return _secret(owner, name, data, "kubernetes.io/tls")


def client_secret(owner: Mapping[str, Any], ca: CertificateAuthority) -> dict[str, Any]:
    """The client certificate the pods' health probe presents, as a TLS Secret."""
    cert, key = ca.issue_client_cert(CLIENT_NAME, valid_for=CERT_VALIDITY)
    name = tls_secret_names(owner["metadata"]["name"], None)[1]
    data = {"tls.crt": cert, "tls.key": key, "ca.crt": ca.cert_pem()}
    return _secret(owner, name, data, "kubernetes.io/tls")


def _dns_names(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName))


def _due(secret: Mapping[str, Any] | None, now: datetime, names: set[str] | None) -> bool:
    """Whether a certificate Secret is missing, unreadable, close to expiry, or (``names``)
    does not carry exactly these DNS names."""
    if secret is None:
        return True
    try:
        cert = base64.b64decode((secret.get("data") or {})["tls.crt"])
        if names is not None and _dns_names(cert) != names:
            return True
        return cert_not_after(cert) - now < RENEW_BEFORE
    except (KeyError, ValueError):
        return True


async def ensure_operator_tls(
    api: KubeApi,
    owner: Mapping[str, Any],
    now: datetime | None = None,
    domain: str = CLUSTER_DOMAIN,
) -> list[str]:
    """Make the CA once and the two certificates when due; returns the names written."""
    meta = owner["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    moment = now or datetime.now(UTC)
    written: list[str] = []
    ca_stored = await api.get("Secret", namespace, ca_secret_name(name))
    if ca_stored is None:
        created = new_ca_secret(owner)
        # POST: when another writer won the race, its CA is kept and read back
        ca_stored = await api.create(created) or await api.get(
            "Secret", namespace, created["metadata"]["name"]
        )
        written.append(created["metadata"]["name"])
    if ca_stored is None:
        return written
    ca = load_ca(ca_stored)
    server_name, client_name = tls_secret_names(name, None)
    # a new CA (the old one's Secret was deleted) makes every certificate due
    fresh = bool(written)
    names = set(service_names(name, namespace, domain))
    server = await api.get("Secret", namespace, server_name)
    if fresh or _due(server, moment, names):
        await api.apply(server_secret(owner, ca, domain))
        written.append(server_name)
    if fresh or _due(await api.get("Secret", namespace, client_name), moment, None):
        await api.apply(client_secret(owner, ca))
        written.append(client_name)
    return written


def certificates(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """cert-manager ``Certificate`` objects for the server and probe certificates."""
    meta = owner["metadata"]
    name = meta["name"]
    issuer = {
        "name": spec.tls.issuer_name,
        "kind": spec.tls.issuer_kind,
        "group": "cert-manager.io",
    }
    server_name, client_name = tls_secret_names(name, spec.tls)
    common = {
        "issuerRef": issuer,
        "duration": "8760h",
        "renewBefore": "720h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
    }
    server = {
        **common,
        "secretName": server_name,
        "commonName": f"{name}.{meta['namespace']}.svc",
        "dnsNames": service_names(name, meta["namespace"], spec.tls.cluster_domain),
        "ipAddresses": ["127.0.0.1", "::1"],
        "usages": ["digital signature", "server auth"],
    }
    client = {
        **common,
        "secretName": client_name,
        "commonName": CLIENT_NAME,
        "usages": ["digital signature", "client auth"],
    }
    return [
        {
            "apiVersion": CERT_MANAGER_API,
            "kind": "Certificate",
            "metadata": metadata(owner, n),
            "spec": s,
        }
        for n, s in ((server_name, server), (client_name, client))
    ]
