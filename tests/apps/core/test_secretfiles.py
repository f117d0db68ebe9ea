"""Parsing secrets files for ``keyvault secrets import`` and writing them for ``export``:
every format, every problem reported at once with its line, never a value in a message."""

from __future__ import annotations

import json

import pytest

from apps.core.secretfiles import detect, parse, to_env, to_json
from common.errors import ValidationError

ENV = """\
# a comment, then a blank line

export DB_USER=alice
DB_PASS="p@ss \\"quoted\\" \\$HOME\\n2nd"   # trailing comment
LITERAL='no $expansion \\n here'
PLAIN = spaced value # comment
MULTI="line one
line two"
URL=https://example.test/?a=b#frag
"""


def test_env_file_quotes_export_comments_escapes() -> None:
    got = {e.name: e.value for e in parse(ENV, "env", "app/")}
    assert got == {
        "app/DB_USER": "alice",
        "app/DB_PASS": 'p@ss "quoted" $HOME\n2nd',
        "app/LITERAL": "no $expansion \\n here",
        "app/PLAIN": "spaced value",
        "app/MULTI": "line one\nline two",
        "app/URL": "https://example.test/?a=b#frag",
    }


def test_env_errors_name_every_bad_line_and_no_value() -> None:
    text = 'GOOD=1\nthis is not a pair\n1BAD=x\nS=\'open\nE=\nDUP=a\nDUP=b\nX="a\\qb"\nQ="never closed\n'
    with pytest.raises(ValidationError) as caught:
        parse(text, "env")
    message = caught.value.message
    for expected in (
        "line 2: expected KEY=value",
        "line 3: '1BAD' is not a valid key",
        "line 4: S: single quote not closed on this line",
        "line 5: 'E' has an empty value",
        "line 7: 'DUP' is already set at line 6",
        "line 8: X: unknown escape \\q",
        "line 9: Q: double quote not closed before the end of the file",
    ):
        assert expected in message, message
    assert "nothing was imported" in message and "never closed" not in message


def test_bad_names_and_values_are_all_reported() -> None:
    doc = {"ok": "v", "bad//name": "v", "n": 3, "z": None, "empty": "", "sec_" + "a" * 26: "v"}
    with pytest.raises(ValidationError) as caught:
        parse(json.dumps(doc), "json")
    message = caught.value.message
    assert message.startswith("5 problem(s)")
    assert "value must be a string, not int" in message and "not NoneType" not in message
    assert "'empty' has an empty value" in message


def test_json_yaml_and_bao_shapes() -> None:
    assert [(e.name, e.value) for e in parse('{"a": "1", "b/c": "2"}', "json")] == [
        ("a", "1"),
        ("b/c", "2"),
    ]
    assert [(e.name, e.value) for e in parse("a: '1'\nb: two\n", "yaml", "p/")] == [
        ("p/a", "1"),
        ("p/b", "two"),
    ]
    v2 = {"request_id": "r", "lease_duration": 0, "renewable": False,
          "data": {"data": {"user": "u", "pass": "p"}, "metadata": {"version": 3}}}  # fmt: skip
    v1 = {"request_id": "r", "lease_duration": 2764800, "renewable": False,
          "data": {"user": "u1"}}  # fmt: skip
    assert {e.name: e.value for e in parse(json.dumps(v2), "bao")} == {"user": "u", "pass": "p"}
    assert {e.name: e.value for e in parse(json.dumps(v1), "bao")} == {"user": "u1"}
    with pytest.raises(ValidationError, match="use --format bao"):
        parse(json.dumps(v2), "json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse('{"a": ', "json")
    with pytest.raises(ValidationError, match="not valid YAML at line 2"):
        parse("a: 1\n  - b: [\n", "yaml")


def test_format_detection() -> None:
    assert detect("x.env", "A=1") == "env"
    assert detect(".env", "A=1") == "env"
    assert detect("x.yml", "a: b") == "yaml"
    assert detect("x.json", '{"a": "b"}') == "json"
    assert detect("-", '{"request_id": "r", "data": {"a": "b"}}') == "bao"
    assert detect("export", "A=1\n") == "env"


def test_export_round_trips() -> None:
    pairs = [("A", "it's"), ("B", 'dq " $x `y` \\ \n end'), ("C", "plain")]
    back = {e.name: e.value for e in parse(to_env(pairs), "env")}
    assert back == dict(pairs)
    assert json.loads(to_json(pairs)) == dict(pairs)
    with pytest.raises(ValidationError, match="--prefix"):
        to_env([("db/pass", "x")])
