"""How to reach a host: one resolution of its connection settings, shared by every backend.

The SSH backend connects with these settings and the Ansible backend hands the same ones to
Ansible, so a host is reached the same way whatever kind of action runs on it. Paths come out
absolute: no backend resolves them from a directory of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madeus.inventory import Host, Inventory


@dataclass(frozen=True, slots=True)
class Connection:
    name: str
    address: str
    port: int
    user: str | None
    key_file: str | None  # absolute
    local: bool  # `ansible_connection: local`: run on this machine

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address}:{self.port})"


def connection_of(inventory: Inventory, host: Host) -> Connection:
    """The host's own settings, completed by its groups' variables (a port or a user set on a
    group rather than on the host)."""
    merged: Mapping[str, Any] = (
        inventory.host_vars(host.name) if host.name in inventory.hosts else {}
    )
    port = host.port
    if port == 22 and "ansible_port" in merged:
        port = int(merged["ansible_port"])
    user = host.user or _text(merged.get("ansible_user"))
    key = host.key_file or _text(merged.get("ansible_ssh_private_key_file"))
    return Connection(
        host.name,
        host.address,
        port,
        user,
        None if key is None else str(_beside(inventory, key)),
        host.connection == "local",
    )


def known_hosts_file(inventory: Inventory, explicit: str | Path | None = None) -> Path:
    """The known_hosts file host keys are checked against: the one given, else a
    `known_hosts` beside the inventory (what `madeus testbed up` writes), else the user's
    `~/.ssh/known_hosts`. A missing file trusts no key."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    if inventory.path:
        beside = Path(inventory.path).parent / "known_hosts"
        if beside.is_file():
            return beside.absolute()
    return Path("~/.ssh/known_hosts").expanduser().absolute()


def _beside(inventory: Inventory, path: str) -> Path:
    """A relative path from the inventory: beside the inventory file when it is there (where
    it most likely sits), else from the current directory, as Ansible reads it."""
    p = Path(path).expanduser()
    if not p.is_absolute() and inventory.path:
        beside = Path(inventory.path).parent / p
        if beside.exists():
            return beside.absolute()
    return p.absolute()


def _text(value: object) -> str | None:
    return None if value is None else str(value)
