"""``common.eventloop.running_loop``: asyncio's running loop without a system call per ask."""

from __future__ import annotations

import asyncio
import threading

from common.eventloop import new_event_loop, run_event_loop, running_loop


def test_none_outside_a_loop_and_the_loop_inside_it() -> None:
    assert running_loop() is None

    async def main() -> tuple[object, object]:
        return running_loop(), asyncio.get_running_loop()

    seen, real = run_event_loop(main())
    assert seen is real
    assert running_loop() is None  # the loop stopped: not answered from memory


def test_a_later_loop_on_the_same_thread_is_found_not_the_stopped_one() -> None:
    async def ask() -> tuple[object, object]:
        return running_loop(), asyncio.get_running_loop()

    first = asyncio.run(ask())
    second = run_event_loop(ask())
    assert first[0] is first[1]
    assert second[0] is second[1]
    assert first[0] is not second[0]


def test_each_thread_sees_its_own_loop() -> None:
    """A loop running on another thread is not this thread's running loop."""
    started, release = threading.Event(), threading.Event()
    other = new_event_loop()

    def serve() -> None:
        async def park() -> None:
            assert running_loop() is other
            started.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait)

        other.run_until_complete(park())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert started.wait(10)
        assert running_loop() is None  # this thread runs no loop, though `other` is running

        async def mine() -> object:
            return running_loop()

        assert asyncio.run(mine()) is not other
    finally:
        release.set()
        thread.join(10)
        other.close()


def test_current_loop_raises_as_asyncio_does_outside_a_loop() -> None:
    import pytest

    from common.eventloop import current_loop

    with pytest.raises(RuntimeError, match="no running event loop"):
        current_loop()

    async def main() -> bool:
        return current_loop() is asyncio.get_running_loop()

    assert run_event_loop(main())
