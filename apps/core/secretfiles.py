"""Secrets files in and out: ``.env``, a JSON/YAML map, and OpenBao/Vault ``kv get`` output.

:func:`parse` reads a file's text into ``(name, value)`` pairs and checks every one first,
raising one :class:`~common.errors.ValidationError` that lists every problem (with line numbers
for ``.env``); nothing is written by anyone when it raises. Error messages name keys and lines,
never a value. :func:`to_env` and :func:`to_json` write the other way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import yaml

from common.errors import ValidationError

FORMATS = ("env", "json", "yaml", "bao")
MAX_ERRORS = 20  # problems listed in one message; the rest are counted
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "`": "`"}
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    """One secret to import: its full name (prefix included) and value."""

    name: str
    value: str
    where: str  # "line 3" or "key 'x'": for messages


def detect(filename: str, text: str) -> str:
    """The format from the file's extension, else from its content."""
    suffix = PurePath(filename).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json" or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return "json"  # parse() reports the JSON error with its position
        return "bao" if _looks_like_kv(doc) else "json"
    return "env"


def _looks_like_kv(doc: Any) -> bool:
    """Whether ``doc`` is the JSON of ``bao kv get`` / ``vault kv get``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("data"), dict)
        and bool({"request_id", "lease_duration", "lease_id", "renewable"} & set(doc))
    )


def parse(text: str, fmt: str, prefix: str = "") -> list[Entry]:
    """Every secret in ``text`` (format ``fmt``), named ``prefix + key``; all problems at once."""
    from apps.core.viewmodels.agent_secrets import check_name  # the client stays off `agent run`

    problems: list[str] = []
    if fmt == "env":
        pairs = _parse_env(text, problems)
    elif fmt in ("json", "yaml", "bao"):
        pairs = _parse_map(text, fmt, problems)
    else:
        raise ValidationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for key, value, where in pairs:
        name = prefix + key
        try:
            check_name(name)
            if name != name.strip():
                raise ValidationError("name must not start or end with spaces")
        except ValidationError as exc:
            problems.append(f"{where}: {name[:80]!r}: {exc.message}")
            continue
        if not value:
            problems.append(f"{where}: {key!r} has an empty value (the agent refuses empty values)")
            continue
        if name in seen:
            problems.append(f"{where}: {key!r} is already set at {seen[name]}")
            continue
        seen[name] = where
        entries.append(Entry(name, value, where))
    if problems:
        shown = problems[:MAX_ERRORS]
        more = len(problems) - len(shown)
        tail = f"\n  … and {more} more" if more else ""
        raise ValidationError(
            f"{len(problems)} problem(s) in the file; nothing was imported:\n  "
            + "\n  ".join(shown)
            + tail
        )
    return entries


# ---------------------------------------------------------------- .env


def _parse_env(text: str, problems: list[str]) -> list[tuple[str, str, str]]:
    """``KEY=value`` lines: comments, blank lines, ``export``, quotes and escapes."""
    lines = text.splitlines()
    out: list[tuple[str, str, str]] = []
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        where = f"line {number}"
        if not sep:
            problems.append(f"{where}: expected KEY=value")
            continue
        if not _ENV_KEY.fullmatch(key):
            problems.append(
                f"{where}: {key[:40]!r} is not a valid key (letters, digits, '_', '.', '/', '-', "
                "not starting with a digit)"
            )
            continue
        rest = rest.lstrip()
        try:
            if rest.startswith('"'):
                value, i = _double_quoted(rest[1:], lines, i)
            elif rest.startswith("'"):
                end = rest.find("'", 1)
                if end < 0:
                    raise ValueError("single quote not closed on this line")
                value, after = rest[1:end], rest[end + 1 :]
                _only_comment(after)
            else:
                value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
                if value.startswith(("'", '"')):
                    raise ValueError("quote not closed")
        except ValueError as exc:
            problems.append(f"{where}: {key}: {exc}")
            continue
        out.append((key, value, where))
    return out


def _double_quoted(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """A double-quoted value (escapes; may go on over lines); the value and the next line."""
    chars: list[str] = []
    while True:
        j = 0
        while j < len(rest):
            c = rest[j]
            if c == "\\" and j + 1 < len(rest):
                nxt = rest[j + 1]
                if nxt not in _ESCAPES:
                    raise ValueError(f'unknown escape \\{nxt} (use \\n \\t \\r \\" \\\\ \\$)')
                chars.append(_ESCAPES[nxt])
                j += 2
                continue
            if c == '"':
                _only_comment(rest[j + 1 :])
                return "".join(chars), i
            chars.append(c)
            j += 1
        if i >= len(lines):
            raise ValueError("double quote not closed before the end of the file")
        chars.append("\n")
        rest, i = lines[i], i + 1


def _only_comment(after: str) -> None:
    after = after.strip()
    if after and not after.startswith("#"):
        raise ValueError("unexpected text after the closing quote")


# ---------------------------------------------------------------- JSON / YAML / bao


def _parse_map(text: str, fmt: str, problems: list[str]) -> list[tuple[str, str, str]]:
    try:
        doc = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError: message and position, no content
        raise ValidationError(f"not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError(f"not valid YAML{at}; expected a map of name: value") from None
    if fmt == "bao":
        doc = _kv_data(doc)
    elif _looks_like_kv(doc):
        raise ValidationError("this looks like `bao kv get -format=json` output; use --format bao")
    if not isinstance(doc, dict):
        raise ValidationError(f"expected a {fmt.upper()} object of name → string value")
    out = []
    for key, value in doc.items():
        where = f"key {str(key)[:80]!r}"
        if not isinstance(key, str):
            problems.append(f"{where}: names must be text")
        elif not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            problems.append(f"{where}: value must be a string, not {kind} (quote it)")
        else:
            out.append((key, value, where))
    return out


def _kv_data(doc: Any) -> Any:
    """The secret's fields from KV v2 ``{"data": {"data": {...}, "metadata": {...}}}`` or KV v1
    ``{"data": {...}}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ValidationError(
            "expected the output of `bao kv get -format=json` (an object with a data object)"
        )
    data = doc["data"]
    if isinstance(data.get("data"), dict) and "metadata" in data:
        return data["data"]  # KV v2
    return data  # KV v1


# ---------------------------------------------------------------- export


def to_json(pairs: list[tuple[str, str]]) -> str:
    """A JSON object of name → value, sorted, with a final newline."""
    return json.dumps(dict(pairs), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_env(pairs: list[tuple[str, str]]) -> str:
    """``KEY='value'`` lines (double quotes with escapes when needed); keys must be shell
    variable names: use ``--prefix`` to drop a path, or JSON for other names."""
    bad = [k for k, _ in pairs if not _SHELL_NAME.fullmatch(k)]
    if bad:
        raise ValidationError(
            f"{len(bad)} name(s) are not .env keys (letters, digits, '_'): "
            f"{', '.join(bad[:10])}; export with --prefix to drop a common path, or --format json"
        )
    lines = []
    for key, value in sorted(pairs):
        if "'" not in value and "\n" not in value and "\r" not in value:
            lines.append(f"{key}='{value}'")
        else:
            escaped = "".join(
                {"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`", "\n": "\\n", "\r": "\\r"}.get(
                    c, c
                )
                for c in value
            )
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + ("\n" if lines else "")
