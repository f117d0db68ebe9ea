"""Secret-name globs: the one grammar, its limits, and its translation for a linear-time engine.

A glob is 1-200 characters of ``A-Z a-z 0-9 _ . - /`` and the wildcards ``*`` (within one
``/``-separated segment), ``**`` (across segments) and ``?`` (one character of a segment).
Whoever makes a glob (an operator app, the agent's token rules) checks it here; whoever matches
one (the agent) compiles :func:`regex_body` with RE2, an engine without backtracking, so the cost
of a match grows with the name's length only. The limits keep the compiled automaton small.
"""

from __future__ import annotations

import re

from common.errors import ValidationError

MAX_GLOB = 200  # characters
MAX_WILDCARDS = 16  # ``*``, ``**`` and ``?``, each counted once
_CHARS = re.compile(r"^[A-Za-z0-9_.\-/*?]+$")
_TOKENS = re.compile(r"\*\*|\*|\?|[^*?]+")


def problem(glob: object) -> str | None:
    """What is wrong with a glob (a sentence with the fix), or None when it is usable."""
    if not isinstance(glob, str) or not 1 <= len(glob) <= MAX_GLOB:
        return f"a name glob is 1-{MAX_GLOB} characters"
    if not _CHARS.match(glob):
        return "a name glob holds only letters, digits, _ . - / and the wildcards * ** ?"
    if "***" in glob:
        return "a name glob may not hold three * in a row; write ** for any depth"
    wildcards = sum(1 for part in _TOKENS.findall(glob) if part in ("*", "**", "?"))
    if wildcards > MAX_WILDCARDS:
        return f"a name glob holds at most {MAX_WILDCARDS} wildcards (* ** ?), not {wildcards}"
    return None


def check(glob: object, field: str = "name_glob") -> str:
    """The glob itself, or ValidationError (``details.field`` = ``field``) saying what is wrong."""
    found = problem(glob)
    if found is not None:
        raise ValidationError(f"{field}: {found}", details={"field": field})
    assert isinstance(glob, str)
    return glob


def regex_body(glob: str) -> str:
    """The glob as an RE2 (and Python) regex body, to be matched against a whole name."""
    out = []
    for part in _TOKENS.findall(glob):
        if part == "**":
            out.append("(?s:.*)")
        elif part == "*":
            out.append("[^/]*")
        elif part == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(part))
    return "".join(out)


def literal_prefix(glob: str) -> str:
    """The part of the glob before its first wildcard (names sharing it are the only candidates)."""
    cut = min((i for i in (glob.find("*"), glob.find("?")) if i >= 0), default=len(glob))
    return glob[:cut]
