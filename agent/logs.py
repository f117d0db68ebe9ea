"""Logging for the agent: text or JSON lines, with tokens and key material scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_SCRUB = [
    (re.compile(r"kvt_[A-Za-z0-9_\-]{8,}"), "kvt_***"),
    (re.compile(r"kve_[A-Za-z0-9_\-.]{8,}"), "kve_***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.~+/]+=*"), r"\1***"),
    (re.compile(r"(?i)(passphrase|password|secret|token)=\S+"), r"\1=***"),
]


def scrub(text: str) -> str:
    """Remove anything that looks like a token or credential from a log line."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class ScrubbingFilter(logging.Filter):
    """Applies :func:`scrub` to every record's rendered message.

    A request the HTTP parser rejects is logged by aiohttp with an exception that quotes the
    raw request line or header, which may hold a token that no pattern can recognise once
    mangled. Such records keep one line and lose the exception.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Render, scrub and freeze the message."""
        if record.exc_info and _is_http_parse_error(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
            record.msg, record.args = "rejected a malformed HTTP request (answered 400)", None
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def _is_http_parse_error(exc: BaseException | None) -> bool:
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # pragma: no cover - aiohttp is always there on the agent
        return False
    return isinstance(exc, HttpProcessingError)


class ScrubbingFormatter(logging.Formatter):
    """A text formatter whose whole output, tracebacks included, goes through :func:`scrub`."""

    def format(self, record: logging.LogRecord) -> str:
        """The scrubbed line."""
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = scrub(self.formatException(record.exc_info))
        return scrub(json.dumps(doc))


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger for the agent process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubbingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
