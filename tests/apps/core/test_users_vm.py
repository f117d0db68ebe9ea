"""The users view model (shared by the TUI and the desktop app) against a real control plane."""

from __future__ import annotations

import pytest

from apps.core.viewmodels.users import UsersViewModel
from common.cpclient import AsyncControlPlaneClient
from common.errors import ConflictError, PermissionDeniedError, ValidationError
from tests.apps.conftest import OWNER, LiveControlPlane


async def test_admin_manages_users_and_tokens_are_shown_once(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as client:
        vm = UsersViewModel(client, my_email=OWNER, my_role="owner")
        assert vm.can_manage
        await vm.refresh()
        assert [(u.email, u.role, u.you) for u in vm.state.users] == [(OWNER, "owner", True)]
        issued = await vm.invite("new@example.com", "viewer")
        assert issued.kind == "invitation" and "keyvault users accept" in issued.command
        assert "kvi_" not in repr(vm.state) and "kvi_" in issued.command
        token = issued.command.rsplit(" ", 1)[1]
        await client.accept_invitation(token, "a long enough password")
        await vm.refresh()
        new = next(u for u in vm.state.users if u.email == "new@example.com")
        assert (await vm.set_role(new.id, "operator")).role == "operator"
        reset = await vm.reset_password(new.id)
        assert reset.kind == "reset" and "set-password" in reset.command
        vm.clear_issued()
        assert vm.state.issued is None
        await vm.show_sessions(None)
        assert [s.current for s in vm.state.sessions] == [True]
        with pytest.raises(ConflictError, match="last owner"):
            await vm.set_role(next(u.id for u in vm.state.users if u.you), "viewer")
        with pytest.raises(ValidationError):
            await vm.invite("not an address", "viewer")
        await vm.remove(new.id)
        assert [u.email for u in vm.state.users] == [OWNER]


async def test_a_viewer_sees_their_own_sessions_only(live_cp: LiveControlPlane) -> None:
    live_cp.member("v@example.com", "viewer")
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token("v@example.com")) as client:
        vm = UsersViewModel(client, my_email="v@example.com", my_role="viewer")
        assert not vm.can_manage
        await vm.refresh()
        assert vm.state.error is None and vm.state.users == ()
        assert len(vm.state.sessions) == 1 and vm.state.sessions[0].current
        with pytest.raises(PermissionDeniedError):
            await vm.invite("x@example.com", "viewer")
        assert await vm.end_sessions(None) == 1
