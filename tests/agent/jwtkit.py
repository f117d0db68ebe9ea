"""Local JWT issuers for tests: keys made here, a JWKS file, and tokens in the Kubernetes and CI
shapes (tests/agent/test_jwt_login.py; other tests may reuse it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
CI_ISS = "https://token.actions.example.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Issuer:
    """One signing key and its public JWK."""

    kid: str
    key: Any
    alg: str

    @classmethod
    def rsa(cls, kid: str) -> Issuer:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> Issuer:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        doc = json.loads(algo.to_jwk(self.key.public_key()))
        doc.update(kid=self.kid, use="sig")
        return doc

    def public_pem(self) -> bytes:
        return bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def mint(self, claims: dict[str, Any], *, kid: str | None = None, no_kid: bool = False) -> str:
        """A token signed with this key (under its own kid unless told otherwise)."""
        headers = None if no_kid else {"kid": kid or self.kid}
        return jwt.encode(claims, self.key, algorithm=self.alg, headers=headers)


def write_jwks(path: Path, *issuers: Issuer) -> Path:
    path.write_text(json.dumps({"keys": [i.jwk() for i in issuers]}))
    return path


def k8s_claims(ns: str = "payments", sa: str = "api", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": K8S_ISS,
        "aud": ["keyvault"],
        "sub": f"system:serviceaccount:{ns}:{sa}",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa}},
    }
    claims.update(over)
    return claims


def ci_claims(repo: str = "acme/api", ref: str = "refs/heads/main", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": CI_ISS,
        "aud": "keyvault-ci",
        "sub": f"repo:{repo}:ref:{ref}",
        "repository": repo,
        "ref": ref,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return claims


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` token."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def hmac_with_public_key(issuer: Issuer, claims: dict[str, Any]) -> str:
    """HS256 keyed with the issuer's public key: the classic algorithm-confusion forgery."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(issuer.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def jwt_config(jwks_file: Path, *, ttl_s: int = 900) -> str:
    """An ``auth.jwt`` block for agent.yaml: a Kubernetes and a CI issuer, one role each."""
    return f"""
auth:
  jwt:
    issuers:
      - name: cluster
        issuer: {K8S_ISS}
        jwks_file: {jwks_file}
        audiences: [keyvault]
      - name: ci
        issuer: {CI_ISS}
        jwks_file: {jwks_file}
        audiences: [keyvault-ci]
    roles:
      - name: payments-api
        issuer: cluster
        bound_subject: "system:serviceaccount:payments:api"
        policy:
          read: ["prod/payments/**"]
        ttl_s: {ttl_s}
      - name: deploy
        issuer: ci
        bound_claims:
          repository: acme/api
          ref: ["refs/heads/main", "refs/tags/v*"]
        policy:
          read: ["ci/**"]
          write: ["ci/deploy/*"]
        ttl_s: {ttl_s}
"""
