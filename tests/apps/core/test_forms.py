"""Form field specs: one policy form and one secret form for both UIs, in one order."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.core.forms import POLICY_FORM, SECRET_FORM, labels_text
from apps.core.viewmodels.policies import ROTATORS, PolicyDraft
from common.errors import ValidationError


def test_policy_form_fields_are_the_drafts_fields_in_form_order() -> None:
    assert POLICY_FORM.names == (
        "name",
        "name_glob",
        "labels",
        "interval_days",
        "notice_days",
        "rotator",
        "settings",
        "scope",
    )
    # every field is one the draft takes, so a form's values build a draft as they are
    draft = PolicyDraft(**{name: "" for name in POLICY_FORM.names})
    assert all(getattr(draft, name) == "" for name in POLICY_FORM.names)


def test_the_rotator_is_a_choice_of_the_rotators_defaulting_to_random() -> None:
    rotator = POLICY_FORM.field("rotator")
    assert rotator.kind == "choice" and rotator.choices == ROTATORS
    assert rotator.default == "random"
    assert POLICY_FORM.field("name").default == ""
    with pytest.raises(KeyError):
        POLICY_FORM.field("nope")


def test_a_drafts_error_names_a_field_of_the_spec() -> None:
    values = {spec.name: spec.default for spec in POLICY_FORM.fields}
    with pytest.raises(ValidationError) as caught:
        PolicyDraft(**values).validate()
    assert caught.value.details["field"] in POLICY_FORM.names


def test_secret_form_masks_the_value_and_fixes_the_name_when_editing() -> None:
    assert SECRET_FORM.names == ("name", "value", "labels", "description")
    value = SECRET_FORM.field("value")
    assert value.kind == "secret"
    assert value.help_for(editing=False) == ""
    assert "new version" in value.help_for(editing=True)
    assert SECRET_FORM.field("name").fixed_on_edit
    assert not SECRET_FORM.field("labels").fixed_on_edit


def test_titles_when_creating_and_editing() -> None:
    assert POLICY_FORM.title(False) == "New rotation policy"
    assert POLICY_FORM.title(True) == "Edit policy"
    assert SECRET_FORM.title(False, name="x") == "New secret"
    assert SECRET_FORM.title(True, name="db/{pw}") == "Edit db/{pw}"


def test_labels_text_from_pairs_dicts_and_text() -> None:
    assert labels_text((("env", "prod"), ("team", "db"))) == "env=prod, team=db"
    assert labels_text({"env": "prod"}) == "env=prod"
    assert labels_text("as typed") == "as typed"
    assert labels_text(None) == "" and labels_text(()) == ""


def test_agent_connect_form_matches_the_profile_parser(tmp_path: Path) -> None:
    from apps.core.agents import AgentProfile
    from apps.core.forms import AGENT_FORM

    assert AGENT_FORM.names == (
        "name",
        "url",
        "data_dir",
        "ca_file",
        "cert_file",
        "key_file",
        "token",
    )
    assert AGENT_FORM.field("token").kind == "secret"  # a password box, kept in the keyring
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        (tmp_path / key).write_text("x")
        files[key] = str(tmp_path / key)
    values = {name: "" for name in AGENT_FORM.names if name != "token"}
    values.update(name="billing", url="https://10.0.0.5:8443", **files)
    profile = AgentProfile.from_form(values)
    assert profile.name == "billing" and profile.ca_file == files["ca_file"]
    with pytest.raises(ValidationError) as caught:
        AgentProfile.from_form({**values, "ca_file": str(tmp_path / "missing")})
    assert caught.value.details["field"] in AGENT_FORM.names
