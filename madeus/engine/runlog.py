"""Per-run directories: `.madeus/runs/<run-id>/`, private to the operator (dirs 0700, files 0600).

Layout: `<transition id>@<host>.out` / `.err` per transition and host (created only when the action
writes something), `plan.json` (the plan used) and `trace.json` (always, also after a failure).
Run ids sort by time: a UTC timestamp to the millisecond, then a short random suffix.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from madeus.trace import dumps_lines

DEFAULT_RUNS = Path(".madeus") / "runs"
DIR_MODE = 0o700
FILE_MODE = 0o600


def new_run_id(now: datetime | None = None) -> str:
    moment = now if now is not None else datetime.now(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z-{secrets.token_hex(3)}"


def make_private_dir(path: Path) -> Path:
    """Create `path` and missing parents as 0700 (parents too: they hold every run's logs)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def new_run_dir(base: str | Path = DEFAULT_RUNS) -> Path:
    return make_private_dir(Path(base) / new_run_id())


def log_stem(transition_id: str, host: str) -> str:
    """`mariadb.pull@control-1`; a `/` (never in our names, but hosts come from inventories)
    must not escape the run directory."""
    return f"{transition_id}@{host}".replace("/", "_").replace("\0", "_")


def open_private(path: Path, append: bool = False) -> int:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.open(path, flags, FILE_MODE)


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    with os.fdopen(open_private(path), "w", encoding="utf-8") as out:
        out.write(dumps_lines(data))
