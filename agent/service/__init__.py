"""Running the agent as an operating-system service: systemd units and Windows services.

What does not depend on the platform lives here: the command line a service manager starts.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from common.errors import ConfigError

STOP_MARGIN_SECONDS = 10  # beyond shutdown_timeout: uplink/scheduler stop, job drain, store close


def is_frozen() -> bool:
    """True inside the single-file binary (PyInstaller sets ``sys.frozen``)."""
    return bool(getattr(sys, "frozen", False))


def keyvault_program(executable: str | None = None, *, windows: bool = False) -> Path:
    """The ``keyvault`` console script next to this interpreter (or on PATH)."""
    name = "keyvault.exe" if windows else "keyvault"
    here = Path(executable or sys.executable).parent
    for candidate in (here / name, here / "Scripts" / name):
        if candidate.is_file():
            return candidate
    found = shutil.which("keyvault")
    if found is None:
        raise ConfigError(
            "cannot find the `keyvault` program next to this Python or on PATH; "
            "install the package (pip install 'keyvault[agent]') or use the single binary"
        )
    return Path(found)


def agent_command(
    data_dir: Path, *, frozen: bool | None = None, executable: str | None = None
) -> list[str]:
    """The foreground ``run`` command a service manager starts: the binary's or the script's."""
    folder = str(data_dir.resolve())
    if is_frozen() if frozen is None else frozen:
        return [str(Path(executable or sys.executable).resolve()), "run", "--data-dir", folder]
    return [str(keyvault_program(executable)), "agent", "run", "--data-dir", folder]


def stop_timeout(shutdown_timeout: float) -> int:
    """Seconds a service manager should allow a stop: the agent's shutdown budget plus what it
    does after in-flight requests (systemd's ``TimeoutStopSec``, Windows' stop wait hint)."""
    return math.ceil(shutdown_timeout) + STOP_MARGIN_SECONDS
