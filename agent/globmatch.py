"""Linear-time glob matching on the agent: the one adapter over RE2 (``google-re2``).

Globs come from outside the agent's trust (policies arrive over the uplink), so they are never
compiled for Python's backtracking ``re``: RE2 matches in time linear in the name's length, and
its memory is capped (:data:`MAX_MEM`), so a hostile glob costs what any glob costs.
:class:`GlobSet` compiles many globs into one RE2 set: one call per name tells which of them
match, whatever their number. The grammar and its limits are :mod:`common.globs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import re2

from common import globs

MAX_MEM = 32 << 20  # bytes RE2 may use for one compiled set or pattern


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.dot_nl = True
    return options


class Glob:
    """One compiled glob; :meth:`fullmatch` says whether it matches a whole name."""

    __slots__ = ("_rx", "glob")

    def __init__(self, glob: str) -> None:
        self.glob = glob
        self._rx = re2.compile(globs.regex_body(glob), _options())

    def fullmatch(self, name: str) -> bool:
        """Whether the glob matches all of ``name``."""
        return self._rx.fullmatch(name) is not None

    # the token policies' rules call ``.match`` on an anchored glob
    match = fullmatch


class GlobSet:
    """Several globs compiled together; :meth:`which` gives the indexes of those that match."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._set = re2.Set.FullMatchSet(_options())
        for glob in self.patterns:
            self._set.Add(globs.regex_body(glob))
        if self.patterns:
            self._set.Compile()

    def which(self, name: str) -> list[int]:
        """Indexes (into ``patterns``) of the globs that match all of ``name``."""
        if not self.patterns:
            return []
        return self._set.Match(name) or []
