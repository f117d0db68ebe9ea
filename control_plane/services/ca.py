"""The service CA (one per deployment) and one intermediate CA per organisation.

The service CA is the only trust root of the agent gateway: it issues each replica's server
certificate and signs every organisation's CA (path length 0), which signs that organisation's
agents' client certificates. Both keys are kept PKCS#8-encrypted under the CA passphrase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from common.errors import ConfigError, IntegrityError
from common.pki import CertificateAuthority
from control_plane import schema as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.background import Clock
    from control_plane.settings import ControlPlaneSettings

SERVICE_CA_NAME = "KeyVault service CA"
SERVICE_CA_ROW = 1


class CAStore:
    """Creates, loads (and caches) the service CA and organisations' CAs."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: ControlPlaneSettings,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self._cache: dict[str, CertificateAuthority] = {}
        self._service: CertificateAuthority | None = None

    def _passphrase(self) -> bytes:
        secret = self.settings.ca_passphrase()
        if secret is None:
            raise ConfigError(
                "no CA key passphrase: set KEYVAULT_CP_CA_KEY_PASSPHRASE or ca_key_file"
            )
        return secret

    async def service(self) -> CertificateAuthority:
        """The deployment's service CA, created on first start (race-safe across replicas)."""
        if self._service is not None:
            return self._service
        password = self._passphrase()
        q = sa.select(t.service_ca).where(t.service_ca.c.id == SERVICE_CA_ROW)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            ca = CertificateAuthority.create(SERVICE_CA_NAME, clock=self.clock)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        t.service_ca.insert().values(
                            id=SERVICE_CA_ROW,
                            cert_pem=ca.cert_pem().decode(),
                            key_pem_encrypted=ca.key_pem(password).decode(),
                            pin=ca.pin(),
                            created_at=self.clock(),
                        )
                    )
            except sa.exc.IntegrityError:  # another replica created it first
                return await self.service()
        else:
            ca = _load(row.cert_pem, row.key_pem_encrypted, password)
        self._service = ca
        return ca

    async def get(self, org_id: str) -> CertificateAuthority:
        """The organisation's CA (an intermediate of the service CA), created on first use."""
        if org_id in self._cache:
            return self._cache[org_id]
        password = self._passphrase()
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.cas).where(t.cas.c.org_id == org_id))).first()
        if row is None:
            parent = await self.service()
            ca = CertificateAuthority.create(
                f"KeyVault organisation {org_id}", parent=parent, clock=self.clock
            )
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        t.cas.insert().values(
                            org_id=org_id,
                            cert_pem=ca.cert_pem().decode(),
                            key_pem_encrypted=ca.key_pem(password).decode(),
                            pin=ca.pin(),
                            created_at=self.clock(),
                        )
                    )
            except sa.exc.IntegrityError:  # another replica created it first
                return await self.get(org_id)
        else:
            ca = _load(row.cert_pem, row.key_pem_encrypted, password)
        self._cache[org_id] = ca
        return ca


def _load(cert_pem: str, key_pem_encrypted: str, password: bytes) -> CertificateAuthority:
    """A stored CA; a key that does not open names the setting that holds the passphrase."""
    try:
        return CertificateAuthority.load(cert_pem.encode(), key_pem_encrypted.encode(), password)
    except IntegrityError:
        raise ConfigError(
            "the stored CA keys do not open with this passphrase: set "
            "KEYVAULT_CP_CA_KEY_PASSPHRASE (or ca_key_file) to the one this control plane's "
            "database was created with"
        ) from None
