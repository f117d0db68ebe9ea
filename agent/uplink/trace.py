"""An optional JSON-lines record of every uplink frame (``uplink.trace_file``), for debugging.

Each line is ``{"at": time, "dir": "out"|"in", "frame": {...}}`` with the frame as the object it
is, so the file shows exactly what crossed the wire -- which by design never holds a secret
value, key, token or plaintext name.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

log = logging.getLogger("keyvault.agent.uplink")


class FrameTrace:
    """Appends frames to a file; does nothing without one. Never raises."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def write(self, direction: str, text: str) -> None:
        """Record one frame's text (``direction`` is ``out`` or ``in``)."""
        if self.path is None:
            return
        try:
            frame = json.loads(text)
        except ValueError:
            frame = text
        line = json.dumps(
            {"at": datetime.now(UTC).isoformat(), "dir": direction, "frame": frame},
            separators=(",", ":"),
        )
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            log.warning("uplink trace %s cannot be written (%s); tracing stops", self.path, exc)
            self.path = None

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
