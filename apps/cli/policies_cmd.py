"""``keyvault policies …``: rotation policies, sealed on this machine like the apps seal them.

Every command goes through the same view model as the TUI and the desktop forms
(``apps.core.viewmodels.policies``): the same fields, the same checks (all errors at once, each
named by its field), and the same sealing with the organisation's metadata key from the keyring.
The control plane only ever sees a policy's interval, notice and target vaults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from apps.cli.operator import current_session, echo_json, table
from apps.core.viewmodels.policies import PoliciesViewModel, PolicyDraft, PolicyRow
from common.cliutil import friendly_errors
from common.errors import NotFoundError, ValidationError

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _run(work: Callable[[PoliciesViewModel], Awaitable[T]]) -> T:
    """Run ``work`` with a policies view model over this session (its key from the keyring)."""
    session = current_session()

    async def main() -> T:
        async with session.async_client() as client:
            return await work(PoliciesViewModel(client, key_source=session.metadata_key))

    return asyncio.run(main())


def _fields(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The form's fields as options (None: not given, so ``edit`` keeps the policy's value)."""
    options = [
        click.option("--name", help="A name unique in the organisation."),
        click.option("--glob", "name_glob", help="Secret names to select, e.g. 'prod/db/*'."),
        click.option("--labels", help="Labels to select, 'key=value, key=value'."),
        click.option("--interval-days", help="Days between rotations (decimals allowed)."),
        click.option(
            "--notice-days", help="Days overdue before an alert (less than the interval)."
        ),
        click.option("--rotator", type=click.Choice(["random", "postgres", "command"])),
        click.option("--settings", help="Rotator settings, 'key=value, …' (e.g. 'length=40')."),
        click.option("--scope", help="'all', or vault names or ids: 'web-1, vlt_…'."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _given(values: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None and k != "as_json"}


def _print(row: PolicyRow, as_json: bool) -> None:
    if as_json:
        echo_json({**row.doc, "name": row.name})
        return
    for key, value in (("id", row.id), ("name", row.name), ("selector", row.selector_text),
                       ("interval", f"{row.interval_days} days"),
                       ("notice", f"{row.notice_days} days"), ("rotator", row.rotator),
                       ("scope", row.scope_text), ("version", row.doc.get("version"))):  # fmt: skip
        click.echo(f"{key + ':':10} {value}")


def _field_errors(exc: ValidationError) -> ValidationError:
    """The form's field names as this command's options, every error on its own line."""
    fields = exc.details.get("fields")
    if not isinstance(fields, dict) or len(fields) < 2:
        return exc
    option = {"name_glob": "--glob", "interval_days": "--interval-days",
              "notice_days": "--notice-days"}  # fmt: skip
    lines = [f"  {option.get(f, '--' + f.replace('_', '-'))}: {m}" for f, m in fields.items()]
    return ValidationError("the policy is not valid:\n" + "\n".join(lines), details=exc.details)


@click.group("policies")
def policies_group() -> None:
    """Rotation policies: made and sealed here, run by the agents they target."""


@policies_group.command("list")
@json_option
@friendly_errors
def list_cmd(as_json: bool) -> None:
    """Every policy of the organisation (names and selectors opened locally)."""

    async def work(vm: PoliciesViewModel) -> tuple[PolicyRow, ...]:
        await vm.refresh()
        if vm.state.error:
            raise ValidationError(vm.state.error)
        return vm.state.rows

    rows = _run(work)
    if as_json:
        echo_json([{**r.doc, "name": r.name} for r in rows])
        return
    if not rows:
        click.echo("no policies yet; make one with `keyvault policies create`")
        return
    click.echo(table(("ID", "NAME", "SELECTOR", "EVERY (DAYS)", "ROTATOR", "SCOPE"),
                     [(r.id, r.name, r.selector_text, r.interval_days, r.rotator, r.scope_text)
                      for r in rows]))  # fmt: skip


async def _load(vm: PoliciesViewModel, policy_id: str) -> PolicyRow:
    await vm.refresh()
    row = vm.row(policy_id)
    if row is None:
        raise NotFoundError(f"no policy {policy_id}; `keyvault policies list` shows them")
    return row


@policies_group.command("show")
@click.argument("policy_id")
@json_option
@friendly_errors
def show_cmd(policy_id: str, as_json: bool) -> None:
    """One policy."""
    _print(_run(lambda vm: _load(vm, policy_id)), as_json)


@policies_group.command("create")
@_fields
@json_option
@friendly_errors
def create_cmd(as_json: bool, **values: Any) -> None:
    """A new policy (unset options take the forms' defaults: 30 days, random, all vaults)."""
    draft = replace(PolicyDraft(), **_given(values))
    try:
        row = _run(lambda vm: vm.create(draft))
    except ValidationError as exc:
        raise _field_errors(exc) from None
    _print(row, as_json)


@policies_group.command("edit")
@click.argument("policy_id")
@_fields
@json_option
@friendly_errors
def edit_cmd(policy_id: str, as_json: bool, **values: Any) -> None:
    """Change some fields of a policy (sealed again as its next revision)."""

    async def work(vm: PoliciesViewModel) -> PolicyRow:
        row = await _load(vm, policy_id)
        if row.doc.get("sealed") and row.rotator == "":
            raise ValidationError(
                "this policy does not open with the metadata key in this keyring; import the "
                "organisation's key (`keyvault org metadata-key import`) to edit it"
            )
        return await vm.update(policy_id, replace(row.draft(), **_given(values)))

    try:
        row = _run(work)
    except ValidationError as exc:
        raise _field_errors(exc) from None
    _print(row, as_json)


@policies_group.command("delete")
@click.argument("policy_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def delete_cmd(policy_id: str, yes: bool) -> None:
    """Delete a policy (a sealed deletion: agents stop using it)."""
    if not yes:
        click.confirm(f"delete policy {policy_id}?", abort=True)

    async def work(vm: PoliciesViewModel) -> None:
        await vm.delete(policy_id)

    _run(work)
    click.echo(f"policy {policy_id} deleted")
