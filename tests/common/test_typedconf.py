"""common.typedconf: every field type, the environment's rules, and every error path.

The agent's own settings are checked against what pydantic gave in
tests/agent/test_settings_parity.py; these tests use small models of their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from common.errors import ConfigError
from common.typedconf import (
    AliasChoices,
    Field,
    Model,
    SecretStr,
    ValidationError,
    env_values,
    load_settings,
)

SECRET = "correct horse battery staple"


class Hook(Model):
    argv: list[str] = Field(min_length=1, description="Program and arguments.")
    timeout: float = Field(30, gt=0, le=600)

    def _check(self) -> None:
        if not self.argv[0].startswith("/"):
            raise ValueError("argv[0] must be an absolute path")


class Section(Model):
    enabled: bool = True
    mode: Literal["a", "b"] = "a"
    path: Path | None = None
    names: list[str] = Field(default_factory=lambda: ["**"])


class Octal(Model):
    mode: int = Field(0o600, ge=0, le=0o777)

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("mode"), str):
            try:
                return {**data, "mode": int(data["mode"], 8)}
            except ValueError:
                raise ValueError(f"mode {data['mode']!r} must be octal") from None
        return data


class Settings(Model):
    model_config: ClassVar[dict[str, Any]] = {"env_prefix": "TCTEST_"}

    name: str = Field("kv", pattern=r"^[a-z]+$", description="A name.")
    port: int = Field(8080, ge=0, le=65535)
    ratio: float = Field(0.5, gt=0, lt=1)
    flag: bool = False
    level: Literal["DEBUG", "INFO"] = "INFO"
    home: Path = Path("./data")
    key_file: Path | None = Field(
        None, validation_alias=AliasChoices("key_file", "TCTEST_KEY_FILE", "OLD_KEY_FILE")
    )
    passphrase: SecretStr | None = None
    tags: list[str] = Field(default_factory=list)
    claims: dict[str, str | list[str]] = Field(default_factory=dict)
    section: Section = Field(default_factory=Section)
    hooks: dict[str, Hook] = Field(default_factory=dict)
    octal: list[Octal] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)

    def _check(self) -> None:
        if self.flag and self.passphrase is not None:
            raise ValueError("set flag or passphrase, not both")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.lower().startswith("tctest_") or key.lower() in ("old_key_file", "key_file"):
            monkeypatch.delenv(key)


def problems(
    data: dict[str, Any], model: type[Model] = Settings
) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


# ---------------------------------------------------------------- types


def test_defaults_and_default_factories() -> None:
    s = Settings()
    assert (s.name, s.port, s.ratio, s.flag, s.level, s.home) == (
        "kv", 8080, 0.5, False, "INFO", Path("./data")
    )  # fmt: skip
    assert (s.key_file, s.passphrase, s.tags, s.claims, s.hooks, s.limit) == (
        None, None, [], {}, {}, None
    )  # fmt: skip
    assert s.section == Section() and s.section.names == ["**"]
    other = Settings()
    other.tags.append("x")
    other.section.names.append("y")
    assert Settings().tags == [] and Settings().section.names == ["**"]  # never shared
    assert s.model_fields_set == set()


@pytest.mark.parametrize(
    ("raw", "value"),
    [("8080", 8080), (" 7 ", 7), ("+3", 3), ("1_000", 1000), ("12.0", 12), (443.0, 443), (True, 1)],
)
def test_int_accepts_what_pydantic_accepts(raw: Any, value: int) -> None:
    got = Settings.model_validate({"port": raw}).port
    assert got == value and type(got) is int


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("eighty", "Input should be a valid integer, unable to parse string as an integer"),
        ("0x10", "Input should be a valid integer, unable to parse string as an integer"),
        ("", "Input should be a valid integer, unable to parse string as an integer"),
        (80.5, "Input should be a valid integer, got a number with a fractional part"),
        (None, "Input should be a valid integer"),
        ([80], "Input should be a valid integer"),
        (70000, "Input should be less than or equal to 65535"),
        (-1, "Input should be greater than or equal to 0"),
    ],
)
def test_int_errors(raw: Any, message: str) -> None:
    assert problems({"port": raw}) == [(("port",), message)]


@pytest.mark.parametrize(("raw", "value"), [("0.25", 0.25), (" 1e-1 ", 0.1), (5, 5.0)])
def test_float(raw: Any, value: float) -> None:
    got = Hook.model_validate({"argv": ["/bin/true"], "timeout": raw}).timeout
    assert got == value and type(got) is float


def test_float_errors_and_bounds() -> None:
    msg = "Input should be a valid number, unable to parse string as a number"
    assert problems({"ratio": "half"}) == [(("ratio",), msg)]
    assert problems({"ratio": None}) == [(("ratio",), "Input should be a valid number")]
    assert problems({"ratio": 0}) == [(("ratio",), "Input should be greater than 0")]
    assert problems({"ratio": "1"}) == [(("ratio",), "Input should be less than 1")]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("yes", True), ("No", False),
     ("on", True), ("off", False), ("y", True), ("f", False), (1, True), (0, False), (True, True)],
)  # fmt: skip
def test_bool_accepts_pydantic_words(raw: Any, value: bool) -> None:
    assert Settings.model_validate({"flag": raw}).flag is value


@pytest.mark.parametrize("raw", ["maybe", "2", "", " yes", 2])
def test_bool_errors(raw: Any) -> None:
    msg = "Input should be a valid boolean, unable to interpret input"
    assert problems({"flag": raw}) == [(("flag",), msg)]
    assert problems({"flag": None}) == [(("flag",), "Input should be a valid boolean")]


def test_str_literal_and_pattern() -> None:
    assert problems({"name": 12}) == [(("name",), "Input should be a valid string")]
    assert problems({"name": "Kv 1"}) == [(("name",), "String should match pattern '^[a-z]+$'")]
    assert Settings.model_validate({"level": "DEBUG"}).level == "DEBUG"
    for bad in ("debug", "LOUD", 1):
        assert problems({"level": bad}) == [(("level",), "Input should be 'DEBUG' or 'INFO'")]
    three = problems({"section": {"mode": "c"}})
    assert three == [(("section", "mode"), "Input should be 'a' or 'b'")]


def test_path_and_optional() -> None:
    s = Settings.model_validate({"home": "/srv/kv", "key_file": "/k", "section": {"path": None}})
    assert s.home == Path("/srv/kv") and s.key_file == Path("/k") and s.section.path is None
    message = "Input is not a valid path for <class 'pathlib.Path'>"
    assert problems({"home": 3}) == [(("home",), message)]
    assert problems({"home": None}) == [(("home",), message)]
    assert Settings.model_validate({"limit": None}).limit is None
    assert problems({"limit": 0}) == [(("limit",), "Input should be greater than or equal to 1")]


def test_lists() -> None:
    assert Settings.model_validate({"tags": ("a", "b")}).tags == ["a", "b"]
    assert problems({"tags": "a"}) == [(("tags",), "Input should be a valid list")]
    assert problems({"tags": ["a", 2, 3]}) == [
        (("tags", 1), "Input should be a valid string"),
        (("tags", 2), "Input should be a valid string"),
    ]
    empty = "List should have at least 1 item after validation, not 0"
    assert problems({"argv": []}, Hook) == [(("argv",), empty)]


def test_union_of_str_and_list() -> None:
    s = Settings.model_validate({"claims": {"repo": "acme/api", "ref": ["main", "v*"]}})
    assert s.claims == {"repo": "acme/api", "ref": ["main", "v*"]}
    assert problems({"claims": {"x": 1}}) == [
        (("claims", "x", "str"), "Input should be a valid string"),
        (("claims", "x", "list[str]"), "Input should be a valid list"),
    ]
    assert problems({"claims": []}) == [(("claims",), "Input should be a valid dictionary")]


def test_nested_models_and_mappings_of_models() -> None:
    s = Settings.model_validate(
        {"section": {"enabled": "no", "names": []}, "hooks": {"reload": {"argv": ["/bin/true"]}}}
    )
    assert s.section.enabled is False and s.section.names == []
    assert s.hooks["reload"].argv == ["/bin/true"] and s.hooks["reload"].timeout == 30
    assert s.model_fields_set == {"section", "hooks"}
    assert s.section.model_fields_set == {"enabled", "names"}
    msg = "Input should be a valid dictionary or instance of Section"
    assert problems({"section": None}) == [(("section",), msg)]
    assert problems({"hooks": {"x": {}}}) == [(("hooks", "x", "argv"), "Field required")]


def test_secret_is_never_shown() -> None:
    s = Settings.model_validate({"passphrase": SECRET})
    assert isinstance(s.passphrase, SecretStr) and s.passphrase.get_secret_value() == SECRET
    for text in (repr(s), str(s), repr(s.passphrase), str(s.passphrase), str(s.model_dump())):
        assert SECRET not in text
    assert repr(s.passphrase) == "SecretStr('**********')"
    assert problems({"passphrase": 123}) == [(("passphrase",), "Input should be a valid string")]
    with pytest.raises(ValidationError) as caught:  # a bad value is never echoed in the error
        Settings.model_validate({"passphrase": SECRET, "flag": True, "port": SECRET})
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.errors())


def test_unknown_keys_are_refused_by_name() -> None:
    msg = "Extra inputs are not permitted"
    assert problems({"prot": 1}) == [(("prot",), msg)]
    assert problems({"section": {"enabld": False}}) == [(("section", "enabld"), msg)]
    assert problems({"octal": [{"mod": 1}]}, Settings) == [(("octal", 0, "mod"), msg)]


def test_aliases_are_read_in_order() -> None:
    assert Settings.model_validate({"OLD_KEY_FILE": "/old"}).key_file == Path("/old")
    both = Settings.model_validate({"OLD_KEY_FILE": "/old", "key_file": "/new"})
    assert both.key_file == Path("/new")


def test_validators_before_and_after() -> None:
    assert [o.mode for o in Settings.model_validate({"octal": [{"mode": "0640"}]}).octal] == [416]
    assert problems({"octal": [{"mode": "rw"}]}) == [(("octal", 0), "mode 'rw' must be octal")]
    assert problems({"octal": [{"mode": "1000"}]}) == [
        (("octal", 0, "mode"), "Input should be less than or equal to 511")
    ]
    assert problems({"hooks": {"x": {"argv": ["true"]}}}) == [
        (("hooks", "x"), "argv[0] must be an absolute path")
    ]
    # the model check runs only once its fields are valid; problems are all reported at once
    assert problems({"flag": True, "passphrase": "x"}) == [((), "set flag or passphrase, not both")]
    assert problems({"flag": True, "passphrase": "x", "port": "x", "name": "A"}) == [
        (("name",), "String should match pattern '^[a-z]+$'"),
        (("port",), "Input should be a valid integer, unable to parse string as an integer"),
    ]


def test_construction_with_keywords_validates() -> None:
    assert Settings(port="81").port == 81
    with pytest.raises(ValidationError, match="less than or equal to 65535") as caught:
        Settings(port=70000)
    assert isinstance(caught.value, ValueError)


def test_model_copy_dump_and_fields() -> None:
    s = Settings.model_validate({"port": 81, "section": {"mode": "b"}})
    moved = s.model_copy(update={"port": 0})
    assert (moved.port, s.port, moved.section.mode) == (0, 81, "b")
    assert moved.model_fields_set == {"port", "section"}
    assert s.model_dump()["section"] == {
        "enabled": True,
        "mode": "b",
        "path": None,
        "names": ["**"],
    }
    assert s == Settings.model_validate({"port": "81", "section": {"mode": "b"}}) != moved
    field = Settings.model_fields["port"]
    assert (field.default, field.is_required(), field.metadata[0].le) == (8080, False, 65535)
    assert Settings.model_fields["name"].description == "A name."
    assert Hook.model_fields["argv"].is_required()


def test_unsupported_field_types_are_refused_at_definition() -> None:
    with pytest.raises(TypeError, match=r"Bad\.when: typedconf cannot validate"):

        class Bad(Model):
            when: complex = 0j


# ---------------------------------------------------------------- the environment


def test_environment_prefix_nesting_json_and_case(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TCTEST_PORT": "81",
        "tctest_flag": "yes",
        "TcTest_Section__Mode": "b",
        "TCTEST_TAGS": '["a", "b"]',
        "TCTEST_HOOKS__RELOAD__ARGV": '["/bin/true"]',
        "TCTEST_HOOKS__RELOAD__TIMEOUT": "5",
        "TCTEST_SECTION": '{"enabled": false, "mode": "a"}',
        "TCTEST_NOT_A_SETTING": "ignored",
    }
    values, found = env_values(Settings, env)
    assert found == []
    assert values == {
        "port": "81",
        "flag": "yes",
        "tags": ["a", "b"],
        "section": {"enabled": False, "mode": "b"},  # the nested variable beats the JSON
        "hooks": {"reload": {"argv": ["/bin/true"], "timeout": "5"}},
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings(Settings)
    assert (s.port, s.flag, s.tags, s.section.mode, s.section.enabled) == (
        81,
        True,
        ["a", "b"],
        "b",
        False,
    )
    assert s.hooks["reload"].argv == ["/bin/true"] and s.hooks["reload"].timeout == 5


def test_environment_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLD_KEY_FILE", "/old")
    assert load_settings(Settings).key_file == Path("/old")
    monkeypatch.setenv("TCTEST_KEY_FILE", "/new")  # an earlier choice wins
    assert load_settings(Settings).key_file == Path("/new")
    monkeypatch.setenv("KEY_FILE", "/bare")  # the field's own name is the first choice
    assert load_settings(Settings).key_file == Path("/bare")


def test_precedence_defaults_yaml_env_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "port: 7000\nname: yaml\nsection:\n  mode: b\n  enabled: false\nOLD_KEY_FILE: /y\n"
    )
    s = load_settings(Settings, cfg)
    assert (s.port, s.name, s.section.mode, s.key_file) == (7000, "yaml", "b", Path("/y"))
    monkeypatch.setenv("TCTEST_PORT", "7100")
    monkeypatch.setenv("TCTEST_SECTION__ENABLED", "true")
    monkeypatch.setenv("OLD_KEY_FILE", "/env")
    s = load_settings(Settings, cfg)
    assert (s.port, s.section.enabled, s.section.mode, s.key_file) == (
        7100,
        True,
        "b",
        Path("/env"),
    )
    s = load_settings(Settings, cfg, {"port": 7200, "name": None})
    assert (s.port, s.name) == (7200, "yaml")  # None: the flag was not given


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"TCTEST_PORT": "eighty"}, "invalid setting port (TCTEST_PORT): Input should be a valid "
         "integer, unable to parse string as an integer"),
        ({"TCTEST_LEVEL": "LOUD"}, "invalid setting level (TCTEST_LEVEL): Input should be "
         "'DEBUG' or 'INFO'"),
        ({"TCTEST_SECTION__MODE": "c"}, "invalid setting section.mode (TCTEST_SECTION__MODE): "
         "Input should be 'a' or 'b'"),
        ({"TCTEST_SECTION__ENABLD": "1"}, "invalid setting section.enabld "
         "(TCTEST_SECTION__ENABLD): Extra inputs are not permitted"),
        ({"TCTEST_HOOKS__X__TIMEOUT": "5"}, "invalid setting hooks.x.argv (TCTEST_HOOKS__X__ARGV):"
         " Field required"),
        ({"TCTEST_FLAG": "1", "TCTEST_PASSPHRASE": SECRET}, "invalid settings: set flag or "
         "passphrase, not both"),
    ],
)  # fmt: skip
def test_environment_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings)
    assert caught.value.message == line
    assert caught.value.exit_code == 78


def test_bad_json_is_reported_without_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCTEST_TAGS", f'["{SECRET}"')
    monkeypatch.setenv("TCTEST_HOOKS__X__ARGV", f"{SECRET}")
    monkeypatch.setenv("TCTEST_PORT", "x")
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings)
    lines = caught.value.message.split("; ")
    assert lines[0].startswith("invalid setting tags (TCTEST_TAGS): not valid JSON (")
    assert lines[1].startswith(
        "invalid setting hooks.x.argv (TCTEST_HOOKS__X__ARGV): not valid JSON"
    )
    assert lines[2].startswith("invalid setting port (TCTEST_PORT)")  # all problems at once
    assert SECRET not in caught.value.message


def test_a_union_with_a_list_keeps_text_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCTEST_CLAIMS__REPO", "acme/api")
    monkeypatch.setenv("TCTEST_CLAIMS__REF", '["main"]')
    assert load_settings(Settings).claims == {"repo": "acme/api", "ref": ["main"]}


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Settings, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(Settings, bad)
    bad.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(Settings, bad)
    bad.write_text("")
    assert load_settings(Settings, bad) == Settings()
