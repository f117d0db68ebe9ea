"""Whether one policy grants no more than another: a token mints tokens within its own rights.

A rule ``(glob', caps')`` is covered by a policy when one of its rules ``(glob, caps)`` has
every capability of ``caps'`` (``admin`` has all) and every name ``glob'`` matches is matched
by ``glob``. The glob inclusion is decided on the globs themselves, token by token, and errs
on the side of "not covered": a rule is only accepted when inclusion is certain.

Glob tokens (the syntax of :mod:`agent.auth`): ``**`` any string, ``*`` any string without
``/``, ``?`` one character other than ``/``, anything else itself.
"""

from __future__ import annotations

from functools import lru_cache

from agent.auth import Policy, Rule

ANY, SEGMENT, ONE = "**", "*", "?"


def tokens(glob: str) -> tuple[str, ...]:
    """A glob split into its tokens."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith(ANY, i):
            out.append(ANY)
            i += 2
        else:
            out.append(glob[i])
            i += 1
    return tuple(out)


def _within_segment(part: str) -> bool:
    """Whether every string ``part`` matches is free of ``/``."""
    return part in (SEGMENT, ONE) or (len(part) == 1 and part != "/")


def glob_includes(outer: str, inner: str) -> bool:
    """Whether every name ``inner`` matches is matched by ``outer`` (sound, not complete)."""
    return _includes(tokens(outer), tokens(inner))


@lru_cache(maxsize=4096)
def _includes(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    if not outer:
        return not inner
    head, rest = outer[0], outer[1:]
    if head == ANY:  # any run of inner's tokens
        return any(_includes(rest, inner[k:]) for k in range(len(inner) + 1))
    if head == SEGMENT:  # any run of inner's tokens that never yields a '/'
        for k in range(len(inner) + 1):
            if k and not _within_segment(inner[k - 1]):
                break
            if _includes(rest, inner[k:]):
                return True
        return False
    if not inner:
        return False
    first = inner[0]
    if head == ONE:
        return (first == ONE or (len(first) == 1 and first not in "/*")) and _includes(
            rest, inner[1:]
        )
    return first == head and _includes(rest, inner[1:])


def rule_covered(rule: Rule, by: Policy) -> bool:
    """Whether some rule of ``by`` grants at least ``rule``'s capabilities on all its names."""
    for mine in by.rules:
        caps_ok = "admin" in mine.capabilities or rule.capabilities <= mine.capabilities
        if caps_ok and glob_includes(mine.path, rule.path):
            return True
    return False


def uncovered(policy: Policy, by: Policy) -> list[Rule]:
    """The rules of ``policy`` that ``by`` does not grant (empty: ``policy`` is within it)."""
    return [rule for rule in policy.rules if not rule_covered(rule, by)]
