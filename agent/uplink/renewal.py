"""Certificate renewal over the uplink: new key pair, ``renew`` frame, atomic swap.

At ``uplink.renew_at`` (two thirds by default) of the certificate's life the agent makes a new
P-256 key, keeps it in ``renew.key`` and sends a CSR. The control plane answers with a
``certificate`` frame; once the new leaf is checked (our new key, CN = vault id, signed by the
organisation CA sent with it) key and chain are swapped in (:meth:`UplinkFiles.commit_renewal`)
and used from the next connection. At most one renewal is attempted per connection.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from agent.crypto import Clock, utcnow
from agent.uplink.state import Certificate, UplinkFiles, describe, same_key
from common.errors import ValidationError

# cryptography.x509 and common.pki are imported when a renewal is made (~2 MiB of idle RSS
# for an agent that never renews, docs/performance.md).
log = logging.getLogger("keyvault.agent.uplink")
RETRY_AFTER = timedelta(minutes=10)


class Renewal:
    """The renewal state of one connection."""

    def __init__(
        self, files: UplinkFiles, vault_id: str, fraction: float, *, clock: Clock = utcnow
    ) -> None:
        self.files = files
        self.vault_id = vault_id
        self.fraction = fraction
        self._clock = clock
        self.in_flight = False
        self.done = False
        self._not_before_retry: datetime | None = None

    def due(self, cert: Certificate) -> bool:
        """Whether to send a ``renew`` now."""
        now = self._clock()
        if self.in_flight or self.done or now >= cert.not_after:
            return False
        if self._not_before_retry is not None and now < self._not_before_retry:
            return False
        return now >= cert.renew_due(self.fraction)

    def request(self) -> dict[str, Any]:
        """A new key (kept in ``renew.key``) and the ``renew`` frame with its CSR."""
        from common.pki import make_csr

        csr_pem, key_pem = make_csr(self.vault_id)
        self.files.save_renewal_key(key_pem)
        self.in_flight = True
        log.info("renewing the uplink certificate (a new key pair was made)")
        return {"type": "renew", "csr": csr_pem.decode("ascii")}

    def failed(self, message: str) -> None:
        """The control plane refused (``renewal_failed``); try again later."""
        self.in_flight = False
        self._not_before_retry = self._clock() + RETRY_AFTER
        self.files.discard_renewal()
        log.warning("certificate renewal refused by the control plane: %s", message[:200])

    def accept(self, frame: dict[str, Any]) -> Certificate:
        """Check and store the ``certificate`` frame's leaf; ValidationError if it is not ours."""
        key_pem = self.files.renewal_key()
        if not self.in_flight or key_pem is None:
            raise ValidationError("a certificate arrived without a renewal in flight")
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.serialization import Encoding

        leaf_pem, ca_pem = frame.get("certificate"), frame.get("ca_certificate")
        if not isinstance(leaf_pem, str) or not isinstance(ca_pem, str):
            raise ValidationError("the certificate frame lacks certificate or ca_certificate")
        try:
            leaf = x509.load_pem_x509_certificates(leaf_pem.encode("ascii"))[0]
            org_ca = x509.load_pem_x509_certificate(ca_pem.encode("ascii"))
            leaf.verify_directly_issued_by(org_ca)
        except (ValueError, TypeError, IndexError, InvalidSignature):
            raise ValidationError("the renewed certificate is not signed by its CA") from None
        facts = describe(leaf)
        if not same_key(leaf, key_pem) or facts.common_name != self.vault_id:
            raise ValidationError("the renewed certificate is for another key or vault")
        chain = leaf.public_bytes(Encoding.PEM) + org_ca.public_bytes(Encoding.PEM)
        self.files.commit_renewal(chain)
        self.in_flight, self.done = False, True
        log.info("uplink certificate renewed; valid until %s", facts.not_after.isoformat())
        return facts
