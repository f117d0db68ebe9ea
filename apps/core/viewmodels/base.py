"""The shape every view model shares: a frozen state, change listeners, guarded async work.

A view model is given a client and holds one immutable state object (a frozen dataclass with
at least ``loading`` and ``error``). Commands are coroutines; a UI runs them in its own way
(a Textual worker, a Qt asyncio bridge) and repaints when a listener is called with the new
state. No UI toolkit is imported here or in any view model.

Two kinds of failure, two paths:

* loading a screen's data (``refresh``) never raises a :class:`KeyVaultError`: the message goes
  into ``state.error`` and the previous rows are kept, so a screen shows what it had plus why
  it is stale;
* an action a person asked for (rotate, acknowledge, create…) raises the
  :class:`KeyVaultError` with its one-line message, for the UI to show as a notification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from common.errors import KeyVaultError

S = TypeVar("S")
T = TypeVar("T")
Listener = Callable[[Any], None]


def when(value: Any) -> datetime | None:
    """A timezone-aware datetime from the API's ISO text (None for missing or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class ViewModel(Generic[S]):
    """Holds ``state`` and tells listeners about every new one."""

    def __init__(self, state: S, on_change: Listener | None = None) -> None:
        self._state = state
        self._listeners: list[Listener] = [on_change] if on_change else []

    @property
    def state(self) -> S:
        """The current (immutable) state."""
        return self._state

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(state)`` after every change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _set(self, **changes: Any) -> S:
        """Replace fields of the state and notify listeners; returns the new state."""
        self._state = dataclasses.replace(self._state, **changes)  # type: ignore[type-var]
        for listener in list(self._listeners):
            listener(self._state)
        return self._state

    async def _load(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run a load with ``loading`` set; a KeyVaultError goes to ``state.error``, not up."""
        self._set(loading=True)
        try:
            result = await work()
        except KeyVaultError as exc:
            self._set(loading=False, error=exc.message)
            return None
        self._set(loading=False, error=None)
        return result
