"""Logging for the agent: text or JSON lines, with tokens and key material scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_SCRUB = [
    (re.compile(r"kvt_[A-Za-z0-9_\-]{8,}"), "kvt_***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.~+/]+=*"), r"\1***"),
    (re.compile(r"(?i)(passphrase|password|secret|token)=\S+"), r"\1=***"),
]


def scrub(text: str) -> str:
    """Remove anything that looks like a token or credential from a log line."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class ScrubbingFilter(logging.Filter):
    """Applies :func:`scrub` to every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Render, scrub and freeze the message."""
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


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
        return json.dumps(doc)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger for the agent process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubbingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
