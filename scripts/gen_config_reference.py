"""Generate docs/configuration.md from the settings models of the agent and the control plane.

    python scripts/gen_config_reference.py            # rewrite docs/configuration.md
    python scripts/gen_config_reference.py --check    # exit 1 when the file is stale

Every key is listed with its environment variable(s), type and constraints, default and the
field's description; nested sections are flattened (``tls.cert_file`` ↔
``KEYVAULT_TLS__CERT_FILE``). The output depends only on the models, so it is deterministic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, SecretStr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import typedconf  # noqa: E402 - after the path is set

# The agent's models are common.typedconf's (no pydantic at run time), the control plane's are
# pydantic's; both describe their fields alike (annotation, default, description, metadata).
FieldInfo = Any
MODELS = (BaseModel, typedconf.Model)
ALIASES = (AliasChoices, typedconf.AliasChoices)


def is_model(annotation: Any) -> bool:
    """A settings model of either kind."""
    return isinstance(annotation, type) and issubclass(annotation, MODELS)


OUTPUT = ROOT / "docs" / "configuration.md"
NAME = "<name>"
CODE_SPAN = re.compile(
    r"(``.*?``|`[^`]*`)"
)  # placeholder of a mapping's key in keys and environment variables


@dataclass(frozen=True)
class Entry:
    """One setting: dotted key, environment variables, type, default, description."""

    key: str
    env: tuple[str, ...]
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """A table of settings: the top level of a model, or one nested section."""

    key: str
    doc: str
    entries: tuple[Entry, ...]


def _bounds(field: FieldInfo) -> list[str]:
    out = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
        for attr, label in (("min_length", "min length"), ("max_length", "max length")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{label} {value}")
    return out


def type_name(annotation: Any) -> str:
    """A short, human name of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (", optional" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of name to {type_name(args[1])}"
    if is_model(annotation):
        return "section"
    plain = {
        Path: "path",
        SecretStr: "secret string",
        typedconf.SecretStr: "secret string",
        str: "string",
        bool: "boolean",
    }
    return plain.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML, ``required`` or ``unset``."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, MODELS):
        return "section"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def env_names(name: str, field: FieldInfo, env_path: str) -> tuple[str, ...]:
    """The environment variables that set a field (aliases replace the prefixed name)."""
    alias = field.validation_alias
    if isinstance(alias, ALIASES):
        return tuple(c for c in alias.choices if isinstance(c, str) and c.isupper())
    return (f"{env_path}{name}".upper(),)


def _model_of(annotation: Any) -> tuple[Any, bool]:
    """(nested model, is it the values of a mapping) for a field's annotation."""
    if is_model(annotation):
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict and is_model(args[1]):
        return args[1], True
    return None, False


def _item_model(annotation: Any) -> Any:
    """The model of a list's items (``templates: list[TemplateSpec]``), if it is one."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and is_model(args[0]):
        return args[0]
    return None


def sections(
    model: Any, env_path: str, key_path: str = "", doc: str | None = None
) -> Iterator[Section]:
    """The model's own fields as one section, then each nested section, depth first."""
    own: list[Entry] = []
    nested: list[tuple[Any, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{key_path}{name}"
        item = _item_model(field.annotation)
        if item is not None:  # each item's keys; the environment gives the list as JSON
            own.append(_entry(key, name, field, env_path))
            nested.append((item, "", f"{key}[].", field.description or (item.__doc__ or "")))
            continue
        sub, mapping = _model_of(field.annotation)
        if sub is not None:
            env = f"{env_path}{name}__"
            keyp = f"{key}."
            if mapping:
                env, keyp = f"{env}{NAME}__", f"{key}.{NAME}."
                own.append(_entry(key, name, field, env_path))
            nested.append((sub, env, keyp, field.description or (sub.__doc__ or "")))
            continue
        own.append(_entry(key, name, field, env_path))
    yield Section(key_path.rstrip("."), doc or (model.__doc__ or ""), tuple(own))
    for sub, env, keyp, sub_doc in nested:
        yield from sections(sub, env, keyp, sub_doc)


def _entry(key: str, name: str, field: FieldInfo, env_path: str) -> Entry:
    kind = ", ".join([type_name(field.annotation), *_bounds(field)])
    env = env_names(name, field, env_path) if env_path else ()  # "": inside a list item
    return Entry(key, env, kind, default_text(field), field.description or "")


def cell(text: str) -> str:
    """Text fit for a table cell: ``|`` escaped, ``<`` escaped outside code spans, one line."""
    parts = CODE_SPAN.split(text.replace("|", "\\|").replace("\n", " "))
    parts[::2] = [p.replace("<", "&lt;") for p in parts[::2]]
    return "".join(parts).strip() or "—"


def render_sections(title: str, items: list[Section]) -> list[str]:
    """Markdown tables of one model's sections."""
    lines = []
    for sec in items:
        heading = f"`{sec.key}`" if sec.key else "Top level"
        lines += ["", f"### {title}: {heading}", "", cell(sec.doc.strip().splitlines()[0]), ""]
        lines += ["| key | environment | type | default | description |", "|---|---|---|---|---|"]
        for e in sec.entries:
            env = "<br>".join(f"`{v}`" for v in e.env) or "— (in the list's JSON)"
            cells = [f"`{e.key}`", env, cell(e.type), cell(e.default), cell(e.description)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_env_table(variables: dict[str, str]) -> list[str]:
    """A table of the variables an entrypoint reads beside the settings."""
    lines = ["", "| variable | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {cell(v)} |" for k, v in variables.items()]
    return lines


@dataclass(frozen=True)
class Program:
    """A program whose settings are documented."""

    title: str
    model: Any
    env_prefix: str
    intro: str
    container_env: dict[str, str]


def programs() -> list[Program]:
    """The agent and the control plane, with the variables of their container entrypoints."""
    from agent import docker_entrypoint as agent_container
    from agent.settings import AgentSettings
    from control_plane import container as cp_container
    from control_plane.settings import ControlPlaneSettings

    return [
        Program(
            "Agent",
            AgentSettings,
            str(AgentSettings.model_config.get("env_prefix")),
            "`keyvault agent run` reads `--config`, else `<data-dir>/agent.yaml`; in the "
            "container, `/app/config/agent.yaml` when present, else `/app/data/agent.yaml`.",
            agent_container.ENV_VARS,
        ),
        Program(
            "Control plane",
            ControlPlaneSettings,
            str(ControlPlaneSettings.model_config.get("env_prefix")),
            "`keyvault control-plane run --config FILE`; in the container, "
            "`/app/config/control-plane.yaml` when present.",
            cp_container.ENV_VARS,
        ),
    ]


def all_env_names() -> set[str]:
    """Every environment variable our settings and entrypoints read (``<NAME>`` for a key)."""
    names: set[str] = set()
    for prog in programs():
        names.update(prog.container_env)
        for sec in sections(prog.model, prog.env_prefix):
            for entry in sec.entries:
                names.update(entry.env)
    return names


HEADER = """# Configuration reference

<!-- Generated by scripts/gen_config_reference.py from the settings models. Do not edit. -->

Regenerate with `python scripts/gen_config_reference.py`; the tests fail when this file no longer
matches the models (`tests/deploy/test_config_reference.py`).

Precedence, highest first: command-line flags, environment variables, the YAML file, defaults.
A nested key is written in YAML as a section (`tls:` then `cert_file: …`) and in the environment
with `__` between the parts (`KEYVAULT_TLS__CERT_FILE`). `<name>` stands for a key you choose
(`rotation.postgres.<name>.dsn_file` ↔ `KEYVAULT_ROTATION__POSTGRES__<NAME>__DSN_FILE`). A list
is given in the environment as JSON (`KEYVAULT_CP_GATEWAY_NAMES='["vault.example.com"]'`). A bad
value stops the program with one line naming the key, its variable and the problem.
"""


def render() -> str:
    """The whole document."""
    lines = [HEADER.rstrip("\n")]
    for prog in programs():
        lines += ["", f"## {prog.title}", "", prog.intro]
        lines += render_sections(prog.title, list(sections(prog.model, prog.env_prefix)))
        lines += ["", f"### {prog.title}: container entrypoint", ""]
        lines += ["Read by the image's entrypoint in addition to the settings above."]
        lines += render_env_table(prog.container_env)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the reference (or, with ``--check``, compare it); exit 1 when stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/gen_config_reference.py")
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
