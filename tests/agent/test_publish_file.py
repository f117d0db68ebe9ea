"""``agent.url`` is published at once: a supervisor polling for it never reads an empty file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.hardening import publish_file


def test_a_polling_reader_sees_no_file_or_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "agent.url"
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(target.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue

    thread = threading.Thread(target=reader)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        n = 0
        # at least 300 publications, and on until the reader has looked at some (a loaded
        # machine may not schedule the reader thread for a while)
        while n < 300 or (len(seen) < 20 and time.monotonic() < deadline):
            target.unlink(missing_ok=True)  # as a clean stop removes it
            publish_file(target, f"https://127.0.0.1:{8000 + n % 1000}\n")
            n += 1
    finally:
        # the last file stays: on a loaded machine the reader may not have been scheduled during
        # the 300 writes, so let it read at least once (a wait, not a longer run)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join()
    assert seen, "the reader never saw the file"
    assert all(text.startswith("https://127.0.0.1:") and text.endswith("\n") for text in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["agent.url"]  # no temporary file left
