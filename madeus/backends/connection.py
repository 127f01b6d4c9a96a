"""How to reach a host: the connection settings every backend uses, and the known_hosts file.

The settings are Ansible's (`madeus/inventory.py` asks Ansible for them: templated, vault
decrypted, legacy names understood), so the SSH backend reaches a host exactly as the Ansible
backend's `ansible-playbook` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def connection_of(host: Host) -> Connection:
    return Connection(host.name, host.address, host.port, host.user, host.key_file, host.local)


def known_hosts_file(inventory: Inventory, explicit: str | Path | None = None) -> Path:
    """The known_hosts file host keys are checked against: the one given, else a
    `known_hosts` beside the inventory (what `madeus testbed up` writes), else the user's
    `~/.ssh/known_hosts`. A missing file trusts no key."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    if inventory.path:
        source = Path(inventory.path)
        beside = (source if source.is_dir() else source.parent) / "known_hosts"
        if beside.is_file():
            return beside.absolute()
    return Path("~/.ssh/known_hosts").expanduser().absolute()
