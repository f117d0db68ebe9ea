"""Form field specs both operator UIs build their forms from: name, label, kind, help, checks.

A UI walks :attr:`FormSpec.fields` in order and draws each field with its own toolkit (a
text box, a password box, a choice list); it never writes a label, placeholder or hint itself.
What a form's values must satisfy is checked in the core as well, once: by the form's draft
(``PolicyDraft.validate``) or view model (``AgentSecretsViewModel.create``/``update``), each
raising a ``ValidationError`` whose ``details["field"]`` names the field of this spec the UI puts
the message next to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from apps.core.viewmodels.policies import ROTATORS

#: text: one line; secret: a masked line (never shown unasked); choice: one of ``choices``
Kind = Literal["text", "secret", "choice"]


@dataclass(frozen=True)
class FieldSpec:
    """One form field, as both UIs draw it."""

    name: str
    label: str
    kind: Kind = "text"
    placeholder: str = ""
    help: str = ""
    #: a different help text when the form edits an existing object ("" = same as ``help``)
    edit_help: str = ""
    choices: tuple[str, ...] = ()
    #: the field is shown but cannot be changed when editing (a secret's name)
    fixed_on_edit: bool = False

    def help_for(self, editing: bool) -> str:
        """The hint under the field when creating or editing."""
        return (self.edit_help or self.help) if editing else self.help

    @property
    def default(self) -> str:
        """The initial value of an empty form: a choice's first option, else ""."""
        return self.choices[0] if self.kind == "choice" and self.choices else ""


@dataclass(frozen=True)
class FormSpec:
    """A form: its titles and its fields in order."""

    new_title: str
    edit_title: str
    fields: tuple[FieldSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The field names in order (also the ids of the error labels)."""
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> FieldSpec:
        """The spec of one field (KeyError for an unknown name)."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def title(self, editing: bool, **names: str) -> str:
        """The form's title when creating or editing, ``{name}``-style holes filled from ``names``."""
        return (self.edit_title if editing else self.new_title).format(**names)


POLICY_FORM = FormSpec(
    new_title="New rotation policy",
    edit_title="Edit policy",
    fields=(
        FieldSpec("name", "Name", placeholder="e.g. rotate database passwords"),
        FieldSpec(
            "name_glob", "Secret names", placeholder="db/*", help="glob on secret names, e.g. db/*"
        ),
        FieldSpec(
            "labels", "Labels", placeholder="env=prod", help="k=v, k=v — every label must match"
        ),
        FieldSpec("interval_days", "Every (days)", placeholder="30"),
        FieldSpec(
            "notice_days",
            "Notice (days)",
            placeholder="7",
            help="warn this many days before rotation is due",
        ),
        FieldSpec("rotator", "Rotator", kind="choice", choices=ROTATORS),
        FieldSpec(
            "settings",
            "Settings",
            placeholder="length=32",
            help="rotator settings k=v, … (never secrets)",
        ),
        FieldSpec(
            "scope", "Vaults", placeholder="all", help='"all", or vault names or ids: web-1, vlt_…'
        ),
    ),
)

SECRET_FORM = FormSpec(
    new_title="New secret",
    edit_title="Edit {name}",
    fields=(
        FieldSpec("name", "Name", placeholder="db/password", fixed_on_edit=True),
        FieldSpec(
            "value",
            "Value",
            kind="secret",
            placeholder="the secret value",
            edit_help="a new value makes a new version; empty keeps the current one",
        ),
        FieldSpec("labels", "Labels", placeholder="env=prod, team=db"),
        FieldSpec("description", "Description", placeholder="optional"),
    ),
)


AGENT_FORM = FormSpec(
    new_title="Connect an agent",
    edit_title="Connect an agent",
    fields=(
        FieldSpec("name", "Name", placeholder="billing-prod"),
        FieldSpec("url", "Agent URL", placeholder="https://10.0.0.5:8443"),
        FieldSpec(
            "data_dir",
            "Data folder",
            placeholder="/var/lib/keyvault",
            help="the agent's folder (uses its tls/ files) — or the 3 files below",
        ),
        FieldSpec("ca_file", "CA file", placeholder="tls/ca.crt"),
        FieldSpec("cert_file", "Client cert", placeholder="tls/client.crt"),
        FieldSpec("key_file", "Client key", placeholder="tls/client.key"),
        FieldSpec(
            "token", "API token", kind="secret", placeholder="kvt_… (kept in the OS keyring)"
        ),
    ),
)


def labels_text(labels: Any) -> str:
    """Labels (``(k, v)`` pairs, a dict, or text as typed) as ``k=v, k=v``."""
    if isinstance(labels, str):
        return labels
    items: Iterable[tuple[str, str]] = (
        labels.items() if isinstance(labels, dict) else (labels or ())
    )
    return ", ".join(f"{k}={v}" for k, v in items)
