"""A small Dockerfile parser for the tests: stages and the instructions they hold.

It understands what our Dockerfile uses: comments, line continuations, ``ARG`` defaults before
the first ``FROM``, ``FROM image AS name``, flags such as ``--from=``, ``KEY=value`` lists and the
JSON (exec) form. Not a general parser: no heredocs, no escape directive.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case keyword, its ``--flags`` and the rest of the line."""

    op: str
    flags: dict[str, str]
    args: str

    def words(self) -> list[str]:
        """The arguments, from JSON form or split like a shell."""
        text = self.args.strip()
        if text.startswith("["):
            return [str(w) for w in json.loads(text)]
        return shlex.split(text)

    def pairs(self) -> dict[str, str]:
        """``KEY=value`` arguments (ENV, ARG, LABEL)."""
        return dict(w.split("=", 1) for w in shlex.split(self.args) if "=" in w)


@dataclass
class Stage:
    """A build stage: its base, its name, and its instructions after FROM."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def ops(self, op: str) -> list[Instruction]:
        """The stage's instructions of one kind."""
        return [i for i in self.instructions if i.op == op]


@dataclass
class Dockerfile:
    """Global ARG defaults and the stages, in order."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """A stage by name."""
        return next(s for s in self.stages if s.name == name)

    def chain(self, name: str) -> list[Stage]:
        """A stage and its ancestors (stages it is built FROM), the root first."""
        names = {s.name for s in self.stages}
        out = [self.stage(name)]
        while out[0].base in names:
            out.insert(0, self.stage(out[0].base))
        return out

    def resolve(self, text: str) -> str:
        """Substitute ``${ARG}`` and ``$ARG`` from the global ARG defaults."""
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)

    def effective(self, name: str, op: str) -> Instruction | None:
        """The last ``op`` (USER, ENTRYPOINT, …) in force in a stage, inherited from bases."""
        found = [i for s in self.chain(name) for i in s.ops(op)]
        return found[-1] if found else None

    def env(self, name: str) -> dict[str, str]:
        """Every ENV a stage's image carries, inherited from its bases."""
        out: dict[str, str] = {}
        for stage in self.chain(name):
            for inst in stage.ops("ENV"):
                out.update(inst.pairs())
        return out


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return [line for line in lines if line]


def _split_flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.lstrip()
    return flags, rest


def parse(path: Path) -> Dockerfile:
    """Parse a Dockerfile into its global ARGs and stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        op, _, rest = line.partition(" ")
        op = op.upper()
        flags, rest = _split_flags(rest.strip())
        inst = Instruction(op, flags, rest)
        if op == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert op == "ARG", f"only ARG may come before the first FROM, not {op}"
            args.update(inst.pairs())
        else:
            stages[-1].instructions.append(inst)
    return Dockerfile(args, stages)
