"""Typed settings with the standard library only: models, the ``KEYVAULT_…`` environment, errors.

The agent's settings (:mod:`agent.settings`) are built on this module so that a running agent
never imports pydantic (9 MiB of its idle memory, docs/performance.md "Issue 18, round 4"). The
control plane keeps pydantic through :mod:`common.settings`, which shares this module's YAML
reading, merging and error lines.

A model is a class with annotated fields, written like a pydantic model::

    class TLSSettings(Model):
        enabled: bool = Field(True, description="Serve HTTPS.")
        client_cert: Literal["required", "optional", "none"] = "required"

        def _check(self) -> None:  # runs after the fields are valid; raise ValueError
            if self.client_cert == "required" and not self.enabled:
                raise ValueError("client certificates need HTTPS: set enabled: true")

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Path``, :class:`SecretStr`,
``Literal[...]``, ``X | None``, ``A | B``, ``list[X]``, ``dict[str, X]`` and nested models.
Values are converted as pydantic's lax mode does (``"8080"`` is an int, ``"yes"`` a bool) and
every problem is reported at once, with pydantic's wording, as a :class:`ValidationError`.
Unknown keys are refused (``extra="forbid"``). ``_before`` (a classmethod) may rewrite the
input mapping first; ``_check`` validates the whole model afterwards.

Loading (:func:`load_settings`), highest precedence first: overrides (command-line flags), the
environment, the YAML file, defaults. The environment source reads, case-insensitively,
``<prefix><FIELD>`` (``KEYVAULT_PORT``) or the names a field lists in :class:`AliasChoices`
(first present wins); ``__`` descends into nested models and mappings of models
(``KEYVAULT_ROTATION__POSTGRES__MAIN__DSN_FILE``); lists, mappings and sections given whole are
JSON (``KEYVAULT_WEBHOOKS='[…]'``).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

from common.errors import ConfigError

ENV_PREFIX = "KEYVAULT_"
NESTING = "__"
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INT_TEXT = re.compile(r"[+-]?\d[\d_]*(\.0*)?")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_BAD: Any = _Missing()  # a value that did not validate (its error is already recorded)


# ---------------------------------------------------------------- values and field declarations


class SecretStr:
    """A string never shown by ``repr``, ``str`` or a log line; read it with get_secret_value."""

    __slots__ = ("_secret_value",)

    def __init__(self, value: str) -> None:
        self._secret_value = value

    def get_secret_value(self) -> str:
        """The secret itself."""
        return self._secret_value

    def __str__(self) -> str:
        return "**********" if self._secret_value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._secret_value == self._secret_value

    def __hash__(self) -> int:
        return hash(self._secret_value)

    def __len__(self) -> int:
        return len(self._secret_value)


class AliasChoices:
    """Other names a field is read under, in the input and the environment (first present wins)."""

    __slots__ = ("choices",)

    def __init__(self, *choices: str) -> None:
        self.choices = list(choices)


class Constraints:
    """A field's bounds (``gt``/``ge``/``lt``/``le``, lengths, a regular expression)."""

    __slots__ = ("ge", "gt", "le", "lt", "max_length", "min_length", "pattern")

    def __init__(
        self,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
    ) -> None:
        self.gt = gt
        self.ge = ge
        self.lt = lt
        self.le = le
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)


class FieldInfo:
    """One field of a model: its type, default, description, aliases and constraints."""

    __slots__ = (
        "_regex",
        "annotation",
        "constraints",
        "default",
        "default_factory",
        "description",
        "validation_alias",
    )

    def __init__(
        self,
        default: Any = MISSING,
        *,
        default_factory: typing.Callable[[], Any] | None = None,
        description: str | None = None,
        validation_alias: AliasChoices | None = None,
        constraints: Constraints | None = None,
    ) -> None:
        self.annotation: Any = Any
        self.default = default
        self.default_factory = default_factory
        self.description = description
        self.validation_alias = validation_alias
        self.constraints = constraints or Constraints()
        pattern = self.constraints.pattern
        self._regex = re.compile(pattern) if pattern is not None else None

    @property
    def metadata(self) -> list[Constraints]:
        """The constraints as a list (empty when there are none), as pydantic lists them."""
        return [self.constraints] if self.constraints else []

    def is_required(self) -> bool:
        """True when the field has neither a default nor a default factory."""
        return self.default is MISSING and self.default_factory is None

    def get_default(self) -> Any:
        """A fresh default value (a mutable default is copied, never shared)."""
        if self.default_factory is not None:
            return self.default_factory()
        if isinstance(self.default, list | dict | set):
            return copy.deepcopy(self.default)
        return self.default

    def input_keys(self, name: str) -> list[str]:
        """The keys that set this field in an input mapping, first match wins."""
        if self.validation_alias is None:
            return [name]
        return [name, *(c for c in self.validation_alias.choices if c != name)]


def Field(
    default: Any = MISSING,
    *,
    default_factory: typing.Callable[[], Any] | None = None,
    description: str | None = None,
    validation_alias: AliasChoices | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
) -> Any:
    """Declare a field: default (omit it for a required field), description and constraints."""
    bounds = Constraints(
        gt=gt, ge=ge, lt=lt, le=le, min_length=min_length, max_length=max_length, pattern=pattern
    )
    return FieldInfo(
        default,
        default_factory=default_factory,
        description=description,
        validation_alias=validation_alias,
        constraints=bounds,
    )


# ---------------------------------------------------------------- errors


class ValidationError(ValueError):
    """Every problem found in one input; ``errors()`` lists them as ``{"loc", "msg"}``."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        lines = [f"{len(errors)} validation error{'s' if len(errors) != 1 else ''} for {title}"]
        for err in errors:
            lines.append(".".join(str(p) for p in err["loc"]) or title)
            lines.append(f"  {err['msg']}")
        super().__init__("\n".join(lines))

    def errors(self) -> list[dict[str, Any]]:
        """The problems, in field order: ``loc`` (the path of keys) and ``msg`` (what is wrong)."""
        return list(self._errors)


def describe_errors(errors: list[dict[str, Any]], *, prefix: str = ENV_PREFIX) -> str:
    """One line per bad setting: key, its environment variable, and the problem."""
    lines = []
    for err in errors:
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc:
            lines.append(f"invalid settings: {msg}")
            continue
        env = prefix + NESTING.join(loc).upper()
        lines.append(f"invalid setting {'.'.join(loc)} ({env}): {msg}")
    return "; ".join(lines)


Loc = tuple[str | int, ...]


class _Problems(list[dict[str, Any]]):
    def add(self, loc: Loc, msg: str) -> None:
        self.append({"loc": loc, "msg": msg})


# ---------------------------------------------------------------- models

M = TypeVar("M", bound="Model")


class Model:
    """A settings model: annotated fields, validated on construction and by model_validate."""

    model_config: ClassVar[dict[str, Any]] = {}
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _input_keys: ClassVar[dict[str, list[str]]] = {}
    _known_keys: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(base.__dict__.get("model_fields", {}))
        for name in inspect.get_annotations(cls):
            hint = hints[name]
            if typing.get_origin(hint) is ClassVar or name.startswith("_"):
                continue
            declared = cls.__dict__.get(name, MISSING)
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(declared)
            _supported(hint, f"{cls.__name__}.{name}")
            info.annotation = hint
            fields[name] = info
            if name in cls.__dict__:
                delattr(cls, name)  # an instance holds its value; no class attribute shadows it
        cls.model_fields = fields
        cls._input_keys = {name: f.input_keys(name) for name, f in fields.items()}
        cls._known_keys = frozenset(k for keys in cls._input_keys.values() for k in keys)

    def __init__(self, **data: Any) -> None:
        problems = _Problems()
        _validate_model(type(self), data, (), problems, into=self)
        if problems:
            raise ValidationError(type(self).__name__, problems)

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        """Build the model from a mapping (or return an instance as is); raise ValidationError."""
        problems = _Problems()
        built = _validate_model(cls, data, (), problems)
        if problems:
            raise ValidationError(cls.__name__, problems)
        return typing.cast(M, built)

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite the input before its fields are validated (override; raise ValueError)."""
        return data

    def _check(self) -> None:
        """Check the model once its fields are valid (override; raise ValueError)."""

    @property
    def model_fields_set(self) -> set[str]:
        """Names of the fields the input set (the others hold their defaults)."""
        return set(self.__dict__.get("_fields_set", ()))

    def model_dump(self) -> dict[str, Any]:
        """The values as a mapping; nested models become mappings, secrets stay SecretStr."""
        return {name: _dump(getattr(self, name)) for name in self.model_fields}

    def model_copy(self: M, *, update: Mapping[str, Any] | None = None) -> M:
        """A shallow copy, with ``update`` applied as is (not validated, as pydantic does)."""
        new = copy.copy(self)  # a new __dict__ with the same values
        if update:
            new.__dict__.update(update)
            new.__dict__["_fields_set"] = frozenset(self.model_fields_set | set(update))
        return new

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.model_fields)
        return f"{type(self).__name__}({body})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.model_fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a pydantic model


def _supported(hint: Any, where: str) -> None:
    """Refuse, when the model is defined, a field type :func:`_convert` cannot validate."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType, list, dict):
        for arg in typing.get_args(hint):
            _supported(arg, where)
    elif not (
        hint is Any
        or origin is Literal
        or hint in _SCALARS
        or (isinstance(hint, type) and issubclass(hint, Model))
    ):
        raise TypeError(f"{where}: typedconf cannot validate fields of type {hint!r}")


def _dump(value: Any) -> Any:
    if isinstance(value, Model):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _validate_model(
    cls: type[Model], data: Any, loc: Loc, problems: _Problems, into: Model | None = None
) -> Any:
    if into is None and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        problems.add(loc, f"Input should be a valid dictionary or instance of {cls.__name__}")
        return _BAD
    try:
        data = cls._before(dict(data))
    except ValueError as exc:
        problems.add(loc, str(exc))
        return _BAD
    before = len(problems)
    values: dict[str, Any] = {}
    given: set[str] = set()
    for name, info in cls.model_fields.items():
        key = next((k for k in cls._input_keys[name] if k in data), None)
        if key is None:
            if info.is_required():
                problems.add((*loc, name), "Field required")
            else:
                values[name] = info.get_default()
            continue
        given.add(name)
        values[name] = _field_value(info, data[key], (*loc, name), problems)
    for key in data:
        if key not in cls._known_keys:
            problems.add((*loc, key), "Extra inputs are not permitted")
    if len(problems) > before:
        return _BAD
    obj = into if into is not None else cls.__new__(cls)
    obj.__dict__.update(values)
    obj.__dict__["_fields_set"] = frozenset(given)
    try:
        obj._check()
    except ValueError as exc:
        problems.add(loc, str(exc))
        return _BAD
    return obj


def _field_value(info: FieldInfo, raw: Any, loc: Loc, problems: _Problems) -> Any:
    value = _convert(info.annotation, raw, loc, problems)
    if value is _BAD or value is None:
        return value
    bounds = info.constraints
    if isinstance(value, int | float) and not isinstance(value, bool):
        for attr, fails, words in (
            ("gt", lambda v, b: not v > b, "greater than"),
            ("ge", lambda v, b: not v >= b, "greater than or equal to"),
            ("lt", lambda v, b: not v < b, "less than"),
            ("le", lambda v, b: not v <= b, "less than or equal to"),
        ):
            bound = getattr(bounds, attr)
            if bound is not None and fails(value, bound):
                problems.add(loc, f"Input should be {words} {bound}")
                return _BAD
    if isinstance(value, str | list | dict):
        what = ("String", "character") if isinstance(value, str) else ("List", "item")
        lo, hi = bounds.min_length, bounds.max_length
        if lo is not None and len(value) < lo:
            tail = " after validation" if what[0] == "List" else ""
            got = f", not {len(value)}" if what[0] == "List" else ""
            plural = "s" if lo != 1 else ""
            problems.add(loc, f"{what[0]} should have at least {lo} {what[1]}{plural}{tail}{got}")
            return _BAD
        if hi is not None and len(value) > hi:
            plural = "s" if hi != 1 else ""
            problems.add(loc, f"{what[0]} should have at most {hi} {what[1]}{plural}")
            return _BAD
    if info._regex is not None and isinstance(value, str) and not info._regex.search(value):
        problems.add(loc, f"String should match pattern '{bounds.pattern}'")
        return _BAD
    return value


def _type_label(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return repr(hint).replace("typing.", "").replace("pathlib.", "")


def _exact(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if origin in (int, float):
        return type(value) is origin
    return isinstance(origin, type) and isinstance(value, origin)


def _convert(hint: Any, value: Any, loc: Loc, problems: _Problems) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Union or origin is types.UnionType:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(members) < len(typing.get_args(hint)):
            return None
        if len(members) == 1:
            return _convert(members[0], value, loc, problems)
        exact = [m for m in members if _exact(m, value)]
        for member in exact or members:
            scratch = _Problems()
            out = _convert(member, value, (*loc, _type_label(member)), scratch)
            if out is not _BAD:
                return out
        for member in members:  # none fits: report what each member found wrong
            _convert(member, value, (*loc, _type_label(member)), problems)
        return _BAD
    if origin is Literal:
        choices = typing.get_args(hint)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        names = [repr(c) for c in choices]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        problems.add(loc, f"Input should be {listed}")
        return _BAD
    if origin is list:
        if not isinstance(value, list | tuple | set | frozenset):
            problems.add(loc, "Input should be a valid list")
            return _BAD
        (item,) = typing.get_args(hint) or (Any,)
        items = [_convert(item, v, (*loc, i), problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.add(loc, "Input should be a valid dictionary")
            return _BAD
        key_hint, item = typing.get_args(hint) or (Any, Any)
        mapping: dict[Any, Any] = {}
        bad = False
        for k, v in value.items():
            key = _convert(key_hint, k, (*loc, k, "[key]"), problems)
            converted = _convert(item, v, (*loc, k), problems)
            bad = bad or key is _BAD or converted is _BAD
            mapping[key] = converted
        return _BAD if bad else mapping
    if isinstance(hint, type) and issubclass(hint, Model):
        return _validate_model(hint, value, loc, problems)
    convert = _SCALARS.get(hint)
    if convert is None:
        raise TypeError(f"typedconf cannot validate fields of type {hint!r}")
    result, problem = convert(value)
    if problem is not None:
        problems.add(loc, problem)
        return _BAD
    return result


def _to_str(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        return value, None
    return _BAD, "Input should be a valid string"


def _to_secret(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, SecretStr):
        return value, None
    if isinstance(value, str):
        return SecretStr(value), None
    return _BAD, "Input should be a valid string"


def _to_int(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, int):
        return int(value), None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return _BAD, "Input should be a finite number"
        if not value.is_integer():
            return _BAD, "Input should be a valid integer, got a number with a fractional part"
        return int(value), None
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text) and "__" not in text and not text.endswith("_"):
            return int(text.split(".")[0]), None
        return _BAD, "Input should be a valid integer, unable to parse string as an integer"
    return _BAD, "Input should be a valid integer"


def _to_float(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        try:
            return float(value.strip()), None
        except ValueError:
            return _BAD, "Input should be a valid number, unable to parse string as a number"
    return _BAD, "Input should be a valid number"


def _to_bool(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int | float | str):
        text = value.lower() if isinstance(value, str) else value
        if text in _TRUE or (not isinstance(value, str) and value == 1):
            return True, None
        if text in _FALSE or (not isinstance(value, str) and value == 0):
            return False, None
        return _BAD, "Input should be a valid boolean, unable to interpret input"
    return _BAD, "Input should be a valid boolean"


def _to_path(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        return Path(value), None
    return _BAD, "Input is not a valid path for <class 'pathlib.Path'>"


def _to_none(value: Any) -> tuple[Any, str | None]:
    return (None, None) if value is None else (_BAD, "Input should be None")


_SCALARS: dict[Any, typing.Callable[[Any], tuple[Any, str | None]]] = {
    str: _to_str,
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    Path: _to_path,
    SecretStr: _to_secret,
    type(None): _to_none,
}


# ---------------------------------------------------------------- the environment


def _unwrap(hint: Any) -> list[Any]:
    """The members of a union (or the hint itself), without None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _is_complex(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return True
    return isinstance(hint, type) and issubclass(hint, Model)


def _complexity(hint: Any) -> tuple[bool, bool]:
    """(given as JSON, a failed JSON parse is kept as text) for a field's type."""
    if _is_complex(hint):
        return True, False
    members = _unwrap(hint)
    if len(members) > 1 or members[0] is not hint:
        if any(_is_complex(m) for m in members):
            return True, True
    return False, False


def _step(hint: Any, key: str) -> tuple[Any, bool]:
    """The type one ``__`` part leads to from ``hint``: (type or MISSING, is it a model field)."""
    for member in _unwrap(hint):
        if typing.get_origin(member) is dict:
            args = typing.get_args(member)
            return (args[-1] if args else Any), False
        if isinstance(member, type) and issubclass(member, Model):
            for name, keys in member._input_keys.items():
                if key in (k.lower() for k in keys):
                    return member.model_fields[name].annotation, True
    return MISSING, False


def _env_names(cls: type[Model], name: str, prefix: str) -> list[str]:
    alias = cls.model_fields[name].validation_alias
    if alias is not None:
        return [c.lower() for c in alias.choices]
    return [f"{prefix}{name}".lower()]


def env_values(
    cls: type[Model], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The values the environment sets for ``cls`` as a nested mapping, and JSON problems."""
    prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
    env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    problems = _Problems()
    out: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        names = _env_names(cls, name, prefix)
        raw = next((env[n] for n in names if n in env), None)
        is_json, lenient = _complexity(info.annotation)
        if not is_json:
            if raw is not None:
                out[name] = raw
            continue
        nested = _explode(info.annotation, names, env, (name,), problems)
        if raw is None:
            if nested:
                out[name] = nested
            continue
        value = _json(raw, (name,), lenient, problems)
        if value is _BAD or value is None:  # JSON null: as if the variable were not set
            continue
        out[name] = merge(value, nested) if isinstance(value, dict) else value
    return out, problems


def _json(raw: str, loc: Loc, lenient: bool, problems: _Problems) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        if lenient:
            return raw
        # the message names the position only: the value itself may be a secret
        where = f"{exc.msg} at character {exc.pos + 1}"
        problems.add(loc, f"not valid JSON ({where}): a list, mapping or section is given as JSON")
        return _BAD


def _explode(
    hint: Any, names: list[str], env: Mapping[str, str], loc: Loc, problems: _Problems
) -> dict[str, Any]:
    """``<NAME>__A__B=v`` variables as ``{"a": {"b": v}}``, JSON where the target is complex."""
    result: dict[str, Any] = {}
    heads = [f"{n}{NESTING}" for n in names]
    for env_name, raw in env.items():
        head = next((h for h in heads if env_name.startswith(h)), None)
        if head is None:
            continue
        *parts, last = env_name[len(head) :].split(NESTING)
        target, into = hint, result
        for part in parts:
            target, _ = _step(target, part) if target is not MISSING else (MISSING, False)
            child = into.setdefault(part, {})
            if not isinstance(child, dict):
                break
            into = child
        else:
            target, is_field = _step(target, last) if target is not MISSING else (MISSING, False)
            value: Any = raw
            if target is not MISSING and raw:
                is_json, lenient = _complexity(target)
                if is_json:
                    value = _json(raw, (*loc, *parts, last), lenient or not is_field, problems)
                    if value is _BAD:
                        continue
            into[last] = value
    return result


# ---------------------------------------------------------------- files, merging, loading


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML settings file into a mapping, with clear errors."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    return doc


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` laid over ``base``: mappings are merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    cls: type[M], config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> M:
    """Build ``cls`` from defaults < YAML file < environment < overrides, or raise ConfigError."""
    file_values = read_yaml(config_file) if config_file else {}
    flag_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
    env, env_problems = env_values(cls)
    problems = _Problems(env_problems)
    built = _validate_model(cls, merge(merge(file_values, env), flag_values), (), problems)
    if problems:
        raise ConfigError(describe_errors(problems, prefix=prefix))
    return typing.cast(M, built)
