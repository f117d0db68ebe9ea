"""A master-key change that cannot leave an agent unable to restart.

Before the keystore changes, the new key is checked (a passphrase of printable characters, a
key file that exists and holds a key) and the agent's ``agent.yaml`` is prepared beside the old
one naming the new key; the keystore transaction commits, then the new config replaces the old
in one ``rename``. If the transaction fails the prepared file is removed and nothing changed. If
the agent dies between the two steps, its next start finds the prepared file, and uses it when
(and only when) it opens the keystore (:func:`recover`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from agent import CONFIG_NAME
from agent.crypto import KeySource
from agent.text import is_safe_line
from common.errors import ConfigError, ValidationError

log = logging.getLogger("keyvault.agent")
PENDING_SUFFIX = ".rekey"
MIN_PASSPHRASE = 12


def new_key_source(key_file: str | None, passphrase: str | None) -> KeySource:
    """The new master key, checked; a 400 that says how to fix anything wrong."""
    if (key_file is None) == (passphrase is None):
        raise ValidationError("give exactly one of new_key_file or new_passphrase")
    if passphrase is not None:
        if not is_safe_line(passphrase):
            raise ValidationError(
                "new_passphrase must not contain control characters (NUL, newline, escape, "
                "…): they cannot be typed back reliably at the next start; use printable text"
            )
        if len(passphrase) < MIN_PASSPHRASE:
            raise ValidationError(f"new_passphrase must be at least {MIN_PASSPHRASE} characters")
        return KeySource.from_passphrase(passphrase)
    path = Path(key_file or "")
    if not path.is_absolute():
        raise ValidationError("new_key_file must be an absolute path on the agent's host")
    if not path.is_file():
        raise ValidationError(
            f"new key file {path} does not exist on the agent's host; create it there first "
            f"(e.g. `openssl rand -hex 32 > {path}` with mode 0600) and keep a copy off the host"
        )
    try:
        return KeySource.from_key_file(path)
    except ConfigError as exc:  # the caller's file, not the agent's config
        raise ValidationError(exc.message.replace("master key file", "new key file")) from None


class PendingConfig:
    """``agent.yaml`` as it must be after the rekey, written beside it until the commit."""

    def __init__(self, data_dir: Path) -> None:
        self.config = data_dir / CONFIG_NAME
        self.pending = data_dir / (CONFIG_NAME + PENDING_SUFFIX)

    def prepare(self, key_file: Path | None) -> bool:
        """Write the new config; False when there is no ``agent.yaml`` to keep in step."""
        if not self.config.is_file():
            return False
        doc: dict[str, Any] = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        doc.pop("master_key_file", None)
        doc.pop("master_passphrase", None)
        if key_file is not None:
            doc = {"master_key_file": str(key_file), **doc}
        self.pending.unlink(missing_ok=True)
        fd = os.open(self.pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump(doc, sort_keys=False))
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def commit(self) -> None:
        """Put the new config in place (one rename) and make it durable."""
        os.replace(self.pending, self.config)
        with contextlib.suppress(OSError):  # not every platform can fsync a folder
            fd = os.open(self.config.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abandon(self) -> None:
        """Forget the prepared config (the keystore did not change)."""
        self.pending.unlink(missing_ok=True)


def recover(data_dir: Path) -> Path | None:
    """The key file a rekey interrupted after its commit names, if there is such a leftover."""
    pending = PendingConfig(data_dir).pending
    if not pending.is_file():
        return None
    doc = yaml.safe_load(pending.read_text(encoding="utf-8")) or {}
    value = doc.get("master_key_file")
    return Path(value) if isinstance(value, str) else None


def promote(data_dir: Path) -> None:
    """The prepared config opened the keystore: make it the config."""
    log.warning("a rekey was interrupted after its commit; %s now names the new key", CONFIG_NAME)
    PendingConfig(data_dir).commit()


def discard(data_dir: Path) -> None:
    """The prepared config belongs to a rekey that never committed."""
    PendingConfig(data_dir).abandon()
