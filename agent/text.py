"""What "safe text" means for the agent's metadata (token names, label values, descriptions).

One regular expression, written so that Python's ``re`` and the ECMA-262 dialect of JSON Schema
read it the same way, is both the server's check and the OpenAPI document's ``pattern``: no
control characters (C0, DEL, C1) and none of the invisible format characters that can disguise
text on a screen (soft hyphen, zero-width and bidirectional controls, byte-order mark).
Descriptions may also hold tabs and newlines.
"""

from __future__ import annotations

import re

_UNSAFE = r"\u007f-\u009f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
SAFE_LINE = rf"^[^\u0000-\u001f{_UNSAFE}]*$"
SAFE_TEXT = rf"^[^\u0000-\u0008\u000b-\u001f{_UNSAFE}]*$"  # tab and newline allowed
_LINE = re.compile(SAFE_LINE)
_TEXT = re.compile(SAFE_TEXT)


def is_safe_line(value: str) -> bool:
    """One line of text with no control or invisible format characters."""
    return _LINE.fullmatch(value) is not None and not value.endswith("\n")


def is_safe_text(value: str) -> bool:
    """Like :func:`is_safe_line`, but tabs and newlines are allowed."""
    return _TEXT.fullmatch(value) is not None
