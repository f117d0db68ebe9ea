"""Random secret values: passwords with character-class rules, or raw bytes as base64/hex."""

from __future__ import annotations

import base64
import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import ValidationError

CLASSES = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": "!#$%&()*+,-./:;<=>?@[]^_{|}~",
}
LOOKALIKES = set("Il1O0o|`'\"")


def random_chars(pools: list[str], min_per_class: int, length: int) -> str:
    """``length`` characters from the CSPRNG: ``min_per_class`` from each pool, the rest from
    all of them, shuffled (Fisher-Yates)."""
    chars = [secrets.choice(pool) for pool in pools for _ in range(min_per_class)]
    everything = "".join(pools)
    chars += [secrets.choice(everything) for _ in range(length - len(chars))]
    for i in range(len(chars) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def random_bytes(count: int, encoding: str) -> str:
    """``count`` random bytes as ``hex`` or (otherwise) standard base64 text."""
    raw = secrets.token_bytes(count)
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()


@dataclass(frozen=True)
class GeneratorSpec:
    """How to make a new value. ``mode="password"`` or ``mode="bytes"``."""

    mode: Literal["password", "bytes"] = "password"
    length: int = 32
    classes: tuple[str, ...] = ("lower", "upper", "digits", "symbols")
    min_per_class: int = 1
    exclude_lookalikes: bool = False
    encoding: Literal["base64", "hex"] = "base64"

    @classmethod
    def parse(cls, doc: dict[str, Any] | None) -> GeneratorSpec:
        """Validate a generator spec from a request body (all fields optional)."""
        doc = dict(doc or {})
        mode = doc.pop("mode", "password")
        if mode not in ("password", "bytes"):
            raise ValidationError("generator.mode must be 'password' or 'bytes'")
        length = doc.pop("length", 32)
        if not isinstance(length, int) or isinstance(length, bool) or not 8 <= length <= 1024:
            raise ValidationError("generator.length must be a whole number from 8 to 1024")
        classes = doc.pop("classes", list(cls.classes))
        if (
            not isinstance(classes, list)
            or not classes
            or any(not isinstance(c, str) or c not in CLASSES for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ValidationError(
                f"generator.classes must be a non-empty list drawn from {', '.join(CLASSES)}"
            )
        min_per = doc.pop("min_per_class", 1)
        if not isinstance(min_per, int) or isinstance(min_per, bool) or min_per < 0:
            raise ValidationError("generator.min_per_class must be a whole number ≥ 0")
        if mode == "password" and min_per * len(classes) > length:
            raise ValidationError(
                f"generator.length {length} is too short for {min_per} of each of {len(classes)} classes"
            )
        exclude = doc.pop("exclude_lookalikes", False)
        encoding = doc.pop("encoding", "base64")
        if not isinstance(exclude, bool):
            raise ValidationError("generator.exclude_lookalikes must be true or false")
        if encoding not in ("base64", "hex"):
            raise ValidationError("generator.encoding must be 'base64' or 'hex'")
        if doc:
            raise ValidationError(f"unknown generator fields: {', '.join(sorted(doc))}")
        return cls(mode, length, tuple(classes), min_per, exclude, encoding)

    def generate(self) -> str:
        """A new random value following this spec (CSPRNG)."""
        if self.mode == "bytes":
            return random_bytes(self.length, self.encoding)
        return random_chars([self._pool(c) for c in self.classes], self.min_per_class, self.length)

    def _pool(self, name: str) -> str:
        pool = CLASSES[name]
        return "".join(c for c in pool if c not in LOOKALIKES) if self.exclude_lookalikes else pool
