"""The ``random`` rotator and the value generator the other rotators share (``secrets`` CSPRNG)."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Literal

from agent.generate import random_bytes, random_chars
from agent.rotation._base import INVALID_SETTINGS, RotationError

CLASSES = {
    "l": string.ascii_lowercase,
    "u": string.ascii_uppercase,
    "d": string.digits,
    "s": "!#$%&()*+,-./:;<=>?@[]^_{|}~",
}
LOOKALIKES = frozenset("0O1lI|")
CHAR_KEYS = frozenset({"length", "classes", "min_per_class", "exclude_lookalikes"})
BYTES_KEYS = frozenset({"encoding", "bytes"})
GENERATOR_KEYS = CHAR_KEYS | BYTES_KEYS


def _int(settings: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = settings.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RotationError(INVALID_SETTINGS, f"{key} must be a whole number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Generator:
    """How new values are made: characters from classes, or random bytes encoded."""

    length: int = 32
    classes: str = "lud"
    min_per_class: int = 1
    exclude_lookalikes: bool = True
    encoding: Literal["base64", "hex"] | None = None
    bytes: int = 32

    @classmethod
    def parse(cls, settings: dict[str, Any], *, default_classes: str = "lud") -> Generator:
        """Validate generator settings (keys of :data:`GENERATOR_KEYS`), or ``invalid_settings``."""
        if BYTES_KEYS & settings.keys():
            if CHAR_KEYS & settings.keys():
                raise RotationError(INVALID_SETTINGS, "use bytes+encoding or characters, not both")
            encoding = settings.get("encoding", "base64")
            if encoding not in ("base64", "hex"):
                raise RotationError(INVALID_SETTINGS, "encoding must be 'base64' or 'hex'")
            return cls(encoding=encoding, bytes=_int(settings, "bytes", 32, 16, 512))
        length = _int(settings, "length", 32, 8, 1024)
        classes = settings.get("classes", default_classes)
        if (
            not isinstance(classes, str)
            or not classes
            or any(c not in CLASSES for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise RotationError(INVALID_SETTINGS, "classes must be distinct letters of 'luds'")
        min_per_class = _int(settings, "min_per_class", 1, 0, 1024)
        if min_per_class * len(classes) > length:
            raise RotationError(INVALID_SETTINGS, "length is too short for min_per_class")
        exclude = settings.get("exclude_lookalikes", True)
        if not isinstance(exclude, bool):
            raise RotationError(INVALID_SETTINGS, "exclude_lookalikes must be true or false")
        return cls(length, classes, min_per_class, exclude)

    def new_value(self) -> str:
        """A fresh random value."""
        if self.encoding is not None:
            return random_bytes(self.bytes, self.encoding)
        pools = [self._pool(c) for c in self.classes]
        return random_chars(pools, self.min_per_class, self.length)

    def _pool(self, cls: str) -> str:
        pool = CLASSES[cls]
        return "".join(c for c in pool if c not in LOOKALIKES) if self.exclude_lookalikes else pool


def reject_unknown(settings: dict[str, Any], allowed: frozenset[str]) -> None:
    """``invalid_settings`` when ``settings`` has keys outside ``allowed`` (names only)."""
    unknown = sorted(str(k) for k in settings.keys() - allowed)
    if unknown:
        raise RotationError(INVALID_SETTINGS, f"unknown settings: {', '.join(unknown)}")


class RandomRotator:
    """A new random value and nothing else to do outside the vault."""

    def __init__(self, settings: dict[str, Any]) -> None:
        reject_unknown(settings, GENERATOR_KEYS)
        self.generator = Generator.parse(settings)

    def __repr__(self) -> str:
        return f"RandomRotator({self.generator!r})"

    def generate(self, current: str | None) -> str:
        """A fresh random value."""
        return self.generator.new_value()

    def apply(self, new: str, current: str | None) -> None:
        """Nothing outside the vault uses the value."""

    def verify(self, new: str) -> None:
        """Nothing to check."""

    def revert(self, current: str | None, new: str) -> None:
        """Nothing to undo."""
