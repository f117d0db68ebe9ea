"""The template language: Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`.

A template sees two functions, ``secret("name")`` (the value as text) and
``secret_json("name")`` (the value parsed as JSON), and nothing of the agent, its files or its
environment: no loader (so no ``include``/``import``/``extends``), strict undefined names, the
sandbox's attribute rules (no ``__class__``, ``__globals__``, …), bounded string and list
multiplication, a bounded output size and a time budget enforced inside the render.

Errors never carry a secret value: every message is cut and has the values read in that render
blanked out before anyone sees it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from agent.errors import AgentError

MISSING_SECRET = "missing_secret"  # noqa: S105 - a reason code, not a password
TEMPLATE_ERROR = "template_error"
TOO_LARGE = "too_large"
TOO_SLOW = "too_slow"
WRITE_ERROR = "write_error"
RELOAD_FAILED = "reload_failed"
AUDIT_UNAVAILABLE = "audit_unavailable"

_MAX_MESSAGE = 300


class TemplateFailure(AgentError):
    """A render (or write, or reload) that did not succeed; ``reason`` is a fixed code."""

    code = "template_failed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _OutOfTime(BaseException):
    """Raised inside the template's own frames when the budget is spent (not catchable by
    ``except Exception`` in library code between)."""


class _Environment(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` bounded (``'x' * 10**9`` is refused, not built)."""

    intercepted_binops = frozenset({"*", "**"})
    max_items = 1024 * 1024

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise jinja2.exceptions.SecurityError("exponent larger than 64 refused")
            return left**right
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                if len(seq) * times > self.max_items:
                    raise jinja2.exceptions.SecurityError("repetition too large refused")
        return left * right


def environment() -> SandboxedEnvironment:
    """A fresh sandbox: no loader, strict undefined, only ``range``, ``dict`` and ``namespace``
    as globals (``secret``/``secret_json`` are given per render)."""
    env = _Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.globals = {k: env.globals[k] for k in ("range", "dict", "namespace")}
    return env


def compile_template(env: SandboxedEnvironment, text: str) -> jinja2.Template:
    """Parse a template; a syntax error raises ``TemplateFailure`` naming the line."""
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(
            TEMPLATE_ERROR, f"syntax error on line {exc.lineno}: {exc.message}"[:_MAX_MESSAGE]
        ) from None


Lookup = Callable[[str], "tuple[str, int, str] | None"]  # name -> (id, version, value) | missing


@dataclass
class Reads:
    """What one render read: name → (id, version), or None for a secret that does not exist."""

    used: dict[str, tuple[str, int] | None] = field(default_factory=dict)
    values: list[str] = field(default_factory=list, repr=False)

    def redact(self, text: str) -> str:
        """``text`` cut short, with every value read in this render blanked out."""
        for value in sorted(self.values, key=len, reverse=True):
            if value:
                text = text.replace(value, "***")
        return text[:_MAX_MESSAGE]


def render(
    template: jinja2.Template,
    lookup: Lookup,
    reads: Reads,
    *,
    max_bytes: int,
    budget: float,
    error_on_missing: bool = True,
) -> bytes:
    """Render ``template`` (blocking; run it off the event loop). Records each secret read in
    ``reads``; raises :class:`TemplateFailure` with a reason code on any failure."""

    def secret(name: Any) -> str:
        if not isinstance(name, str):
            raise TemplateFailure(TEMPLATE_ERROR, "secret() takes a secret name (text)")
        found = lookup(name)
        if found is None:
            reads.used[name] = None
            if error_on_missing:
                raise TemplateFailure(MISSING_SECRET, f"secret {name!r} does not exist")
            return ""
        sid, version, value = found
        reads.used[name] = (sid, version)
        reads.values.append(value)
        return value

    def secret_json(name: Any) -> Any:
        value = secret(name)
        if value == "" and reads.used.get(name) is None:
            return {}
        try:
            return json.loads(value)
        except ValueError:
            raise TemplateFailure(TEMPLATE_ERROR, f"secret {name!r} is not JSON") from None

    deadline = time.monotonic() + budget
    out: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(_tracer(deadline))
    try:
        for chunk in template.generate(secret=secret, secret_json=secret_json):
            size += len(chunk)
            if size > max_bytes:
                raise TemplateFailure(TOO_LARGE, f"output is larger than {max_bytes} bytes")
            out.append(chunk)
    except TemplateFailure:
        raise
    except _OutOfTime:
        raise TemplateFailure(TOO_SLOW, f"render took longer than {budget} s") from None
    except RecursionError:
        raise TemplateFailure(TEMPLATE_ERROR, "recursion too deep") from None
    except Exception as exc:
        raise TemplateFailure(TEMPLATE_ERROR, reads.redact(_describe(exc))) from None
    finally:
        sys.settrace(previous)
    data = "".join(out).encode("utf-8")
    if len(data) > max_bytes:
        raise TemplateFailure(TOO_LARGE, f"output is larger than {max_bytes} bytes")
    return data


def _describe(exc: Exception) -> str:
    """An exception as one line, with the template line when Jinja knows it."""
    line = _template_line(exc)
    where = f" (line {line})" if line else ""
    return f"{type(exc).__name__}{where}: {exc}"


def _template_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _tracer(deadline: float) -> Callable[[FrameType, str, Any], Any]:
    """A trace function that follows only the template's own frames and stops the render when
    the deadline passes (checked every 256 lines: a loop with no output is caught too)."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += 1
        if not count & 255 and time.monotonic() > deadline:
            raise _OutOfTime
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == "<template>" else None

    return calls
