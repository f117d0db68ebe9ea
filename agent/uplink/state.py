"""The uplink's files under ``<data_dir>/uplink/``, each written atomically.

=================  =====================================================================
``service-ca.pem``  the control plane's service CA (the only trust root of the uplink)
``client.key``      the agent's private key (0600; never leaves this folder)
``client.crt``      its certificate chain: leaf (CN = vault id) + organisation CA
``state.json``      ``{vault_id, control_plane_url, pin, enrolled_at, name}``, written last:
                    its presence is what "enrolled" means
``pending.*``       an enrollment whose answer has not arrived yet (the same CSR is retried)
``renew.*``         a certificate renewal in progress (see :meth:`UplinkFiles.recover_renewal`)
=================  =====================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import platform
from common.errors import ConfigError, ValidationError
from common.tls import write_pem
from common.uplink import opaque_id

if TYPE_CHECKING:
    from cryptography import x509

# cryptography.x509 and common.pki are imported inside the functions that parse or make a
# certificate: an agent that is not enrolled never does, and they are ~2 MiB of idle RSS.

STATE = "state.json"
SERVICE_CA = "service-ca.pem"
CLIENT_KEY = "client.key"
CLIENT_CRT = "client.crt"
PENDING = "pending.json"
PENDING_KEY = "pending.key"
RENEW_KEY = "renew.key"
RENEW_CRT = "renew.crt"


@dataclass(frozen=True)
class Enrollment:
    """What ``state.json`` holds."""

    vault_id: str
    control_plane_url: str
    pin: str
    enrolled_at: str
    name: str

    def to_json(self) -> dict[str, Any]:
        """The document written to ``state.json``."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any, where: Path) -> Enrollment:
        """Parse ``state.json``; ConfigError naming the file when it is not ours."""
        fields = ("vault_id", "control_plane_url", "pin", "enrolled_at", "name")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(f), str) for f in fields):
            raise ConfigError(
                f"{where} is not an uplink state file; enroll again with "
                "`keyvault agent enroll --force`"
            )
        try:
            opaque_id(doc["vault_id"], "vault_id")
        except ValidationError:
            raise ConfigError(f"{where} names an invalid vault id; enroll again") from None
        return cls(*(doc[f] for f in fields))


@dataclass(frozen=True)
class Certificate:
    """Facts about the agent's current client certificate (no key material)."""

    common_name: str
    not_before: datetime
    not_after: datetime

    def renew_due(self, fraction: float) -> datetime:
        """When ``fraction`` of the certificate's life has passed."""
        return self.not_before + (self.not_after - self.not_before) * fraction


_fsync_dir = platform.fsync_dir


def leaf_of(chain_pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM chain; ValidationError when there is none."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ValidationError("the certificate chain is not PEM") from None
    if not certs:
        raise ValidationError("the certificate chain is empty")
    return certs[0]


def same_key(cert: x509.Certificate, key_pem: bytes) -> bool:
    """Whether the certificate certifies the public half of ``key_pem``."""
    from cryptography.hazmat.primitives import serialization

    from common.pki import load_private_key

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    mine = load_private_key(key_pem).public_key().public_bytes(der, spki)
    return cert.public_key().public_bytes(der, spki) == mine


def describe(cert: x509.Certificate) -> Certificate:
    """The facts of a certificate that the uplink needs."""
    from cryptography.x509.oid import NameOID

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else ""
    return Certificate(
        cn if isinstance(cn, str) else cn.decode(),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


class UplinkFiles:
    """The ``<data_dir>/uplink`` folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"UplinkFiles({str(self.folder)!r})"

    def path(self, name: str) -> Path:
        """A file of the folder."""
        return self.folder / name

    def _write(self, name: str, data: bytes, *, private: bool = False) -> None:
        write_pem(self.folder / name, data, private=private)

    def ensure(self) -> None:
        """Create the folder (0700)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    # ------------------------------------------------------------------ state.json
    def load_state(self) -> Enrollment | None:
        """The enrollment, or None when this folder was never enrolled."""
        path = self.path(STATE)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}); enroll again with --force") from None
        return Enrollment.from_json(doc, path)

    def stamp(self) -> tuple[int, int, int] | None:
        """Identity of ``state.json`` on disk (changes whenever it is rewritten), or None."""
        try:
            st = self.path(STATE).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def write_enrollment(
        self, service_ca: bytes, key_pem: bytes, chain_pem: bytes, state: Enrollment
    ) -> None:
        """Store a new identity: CA, key, chain, then ``state.json`` last (each atomic)."""
        self.ensure()
        self._write(SERVICE_CA, service_ca)
        self._write(CLIENT_KEY, key_pem, private=True)
        self._write(CLIENT_CRT, chain_pem)
        for name in (RENEW_KEY, RENEW_CRT):
            self.path(name).unlink(missing_ok=True)
        _fsync_dir(self.folder)
        body = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        self._write(STATE, body.encode("utf-8"))
        _fsync_dir(self.folder)

    def forget(self) -> None:
        """Remove ``state.json`` so a running agent stops using the old identity."""
        self.path(STATE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ key and certificate
    def certificate(self) -> Certificate:
        """The current client certificate (after finishing an interrupted renewal)."""
        self.recover_renewal()
        try:
            chain = self.path(CLIENT_CRT).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"the uplink certificate {self.path(CLIENT_CRT)} cannot be read "
                f"({exc.strerror}); enroll again with `keyvault agent enroll --force`"
            ) from None
        return describe(leaf_of(chain))

    # ------------------------------------------------------------------ pending enrollment
    @staticmethod
    def _digest(token: str, url: str) -> str:
        return hashlib.sha256(f"{url}\n{token}".encode()).hexdigest()

    def pending(self, token: str, url: str) -> tuple[bytes, bytes] | None:
        """``(csr_pem, key_pem)`` of an unanswered enrollment with this token and URL."""
        try:
            doc = json.loads(self.path(PENDING).read_text(encoding="utf-8"))
            key_pem = self.path(PENDING_KEY).read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("for") != self._digest(token, url):
            return None
        csr = doc.get("csr")
        return (csr.encode("ascii"), key_pem) if isinstance(csr, str) else None

    def save_pending(self, token: str, url: str, csr_pem: bytes, key_pem: bytes) -> None:
        """Keep the CSR and its key until the control plane's answer is stored."""
        self.ensure()
        self._write(PENDING_KEY, key_pem, private=True)
        doc = {"for": self._digest(token, url), "csr": csr_pem.decode("ascii")}
        self._write(PENDING, json.dumps(doc).encode("utf-8"), private=True)

    def clear_pending(self) -> None:
        """Drop the pending enrollment (after success)."""
        for name in (PENDING, PENDING_KEY):
            self.path(name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ renewal
    def save_renewal_key(self, key_pem: bytes) -> None:
        """Keep the new key of a renewal in flight (0600)."""
        self.path(RENEW_CRT).unlink(missing_ok=True)
        self._write(RENEW_KEY, key_pem, private=True)

    def renewal_key(self) -> bytes | None:
        """The key of a renewal in flight, if any."""
        try:
            return self.path(RENEW_KEY).read_bytes()
        except FileNotFoundError:
            return None

    def commit_renewal(self, chain_pem: bytes) -> None:
        """Swap in the renewed key and chain.

        The chain is written to ``renew.crt`` first; then ``renew.key`` and ``renew.crt`` are
        renamed over ``client.key`` and ``client.crt``. A crash anywhere in between is finished
        by :meth:`recover_renewal`, so a reader never pairs a key with another key's certificate.
        """
        self._write(RENEW_CRT, chain_pem)
        _fsync_dir(self.folder)
        self.recover_renewal()

    def recover_renewal(self) -> None:
        """Finish a swap a crash interrupted; forget a renewal that never got its certificate."""
        key, crt = self.path(RENEW_KEY), self.path(RENEW_CRT)
        if not crt.exists():
            return  # nothing to finish (a lone renew.key waits for its certificate)
        if key.exists():
            os.replace(key, self.path(CLIENT_KEY))
        os.replace(crt, self.path(CLIENT_CRT))
        _fsync_dir(self.folder)

    def discard_renewal(self) -> None:
        """Drop a renewal key whose certificate will not come."""
        with contextlib.suppress(FileNotFoundError):
            self.path(RENEW_KEY).unlink()
