"""The agent as a file to ship: a zipapp of the running madeus, named by its hash.

Both ends compute `source_hash()` the same way (every file of the package but compiled ones,
by path), so the controller knows an agent runs exactly its own code: a file whose hash does
not match is replaced. The zipapp holds madeus only; the host's Python (`madeus_agent_python`,
`python3` by default, 3.11 or later) must provide asyncssh when the site's hosts are reached over
SSH, as Ansible asks for a Python on the hosts it manages.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from functools import cache
from importlib import resources
from importlib.abc import Traversable

from madeus import __version__

MAIN = b"import sys\nfrom madeus.agents.serve import main\nsys.exit(main())\n"
_STAMP = (1980, 1, 1, 0, 0, 0)


def _files(root: Traversable, prefix: str) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for entry in root.iterdir():
        name = f"{prefix}/{entry.name}"
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.extend(_files(entry, name))
        elif not entry.name.endswith((".pyc", ".pyo")):
            found.append((name, entry.read_bytes()))
    return found


@cache
def package_files() -> tuple[tuple[str, bytes], ...]:
    """Every file of the running madeus package, by path (`madeus/...`), sorted."""
    return tuple(sorted(_files(resources.files("madeus"), "madeus")))


@cache
def source_hash() -> str:
    digest = hashlib.sha256()
    for name, data in package_files():
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def zipapp() -> bytes:
    """The agent as a zipapp: `python3 FILE agent` runs it (the same bytes for the same
    sources)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (("__main__.py", MAIN), *package_files()):
            info = zipfile.ZipInfo(name, _STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            z.writestr(info, data)
    return buffer.getvalue()


def file_name() -> str:
    return f"madeus-agent-{__version__}-{source_hash()[:16]}.pyz"
