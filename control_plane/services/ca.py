"""One CA per organisation; its private key is kept encrypted under the control-plane key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from common.errors import ConfigError
from common.tls import CertificateAuthority
from control_plane import schema as t

if TYPE_CHECKING:
    from control_plane.runtime import ControlPlane


class CAStore:
    """Creates, loads (and caches) organisations' CAs."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self._cache: dict[str, CertificateAuthority] = {}

    def _passphrase(self) -> bytes:
        secret = self.cp.settings.ca_passphrase()
        if secret is None:
            raise ConfigError(
                "no CA key passphrase: set KEYVAULT_CP_CA_KEY_PASSPHRASE or ca_key_file"
            )
        return secret

    async def get(self, org_id: str) -> CertificateAuthority:
        """The organisation's CA, created on first use."""
        if org_id in self._cache:
            return self._cache[org_id]
        password = self._passphrase()
        async with self.cp.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.cas).where(t.cas.c.org_id == org_id))).first()
        if row is None:
            ca = CertificateAuthority.create(f"KeyVault organisation {org_id}")
            try:
                async with self.cp.engine.begin() as conn:
                    await conn.execute(
                        t.cas.insert().values(
                            org_id=org_id,
                            cert_pem=ca.cert_pem().decode(),
                            key_pem_encrypted=ca.key_pem(password).decode(),
                            pin=ca.pin(),
                            created_at=self.cp.now(),
                        )
                    )
            except sa.exc.IntegrityError:  # another replica created it first
                return await self.get(org_id)
        else:
            ca = CertificateAuthority.load(
                row.cert_pem.encode(), row.key_pem_encrypted.encode(), password
            )
        self._cache[org_id] = ca
        return ca
