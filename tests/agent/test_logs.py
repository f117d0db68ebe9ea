"""Log lines: JSON on request, and tokens or credentials scrubbed from every line."""

from __future__ import annotations

import json
import logging

import pytest

from agent.logs import JsonFormatter, ScrubbingFilter, scrub, setup_logging


@pytest.mark.parametrize(
    ("line", "leak"),
    [
        ("auth with kvt_abcdefghijklmnopqrstuvwxyz012345 failed", "kvt_abcdefghijklmnop"),
        ("header was Bearer abc.def-ghi", "abc.def-ghi"),
        ("dsn postgresql://u@h/db password=hunter2x", "hunter2x"),
        ("KEYVAULT_MASTER_PASSPHRASE passphrase=correct-horse", "correct-horse"),
    ],
)
def test_scrub(line: str, leak: str) -> None:
    assert leak not in scrub(line)


def test_json_lines_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    try:
        logging.getLogger("keyvault.test").warning("token %s used", "kvt_" + "z" * 30)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        doc = json.loads(err)
        assert doc["level"] == "warning" and doc["logger"] == "keyvault.test"
        assert "zzzz" not in err and "kvt_***" in doc["message"]
    finally:
        logging.getLogger().handlers.clear()


def test_filter_freezes_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "secret=%s", ("abc123",), None)
    ScrubbingFilter().filter(record)
    assert record.getMessage() == "secret=***"
    assert "abc123" not in JsonFormatter().format(record)
