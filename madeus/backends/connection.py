"""How to reach a host: the connection settings every backend uses, and the known_hosts file.

The settings are Ansible's (`madeus/inventory.py` asks Ansible for them: templated, vault
decrypted, legacy names understood), so the SSH backend reaches a host exactly as the Ansible
backend's `ansible-playbook` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from madeus.errors import BackendError
from madeus.inventory import Host, Inventory

if TYPE_CHECKING:
    from madeus.backends.router import Habits


@dataclass(frozen=True, slots=True)
class Connection:
    name: str
    address: str
    port: int
    user: str | None
    key_file: str | None  # absolute
    local: bool  # `ansible_connection: local`: run on this machine
    become_user: str | None = None  # run commands as this user, through sudo

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address}:{self.port})"


def connection_of(host: Host, habits: Habits | None = None) -> Connection:
    """The host's settings; `-u`, `--private-key` and `-b` (`habits`) fill what its
    inventory leaves unsaid, as with ansible-playbook."""
    user = host.user or (habits.remote_user if habits is not None else None)
    key = host.key_file
    if key is None and habits is not None and habits.private_key:
        key = str(Path(habits.private_key).expanduser().absolute())
    become = bool(host.become.get("ansible_become", habits.become if habits else False))
    become_user = None
    if become:
        method = str(host.become.get("ansible_become_method") or "sudo")
        if method != "sudo":
            raise BackendError(
                f'host "{host.name}": become method {method} is not supported for shell '
                "actions (sudo is)"
            )
        become_user = str(host.become.get("ansible_become_user") or "root")
    return Connection(host.name, host.address, host.port, user, key, host.local, become_user)


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


def inside_site(host: Host) -> Host:
    """`host` as the other hosts of its site reach it (a site's agent): at its
    `madeus_address`, on SSH's port 22, when the inventory gives one (a testbed, whose
    controller goes through delay proxies), else as the controller does."""
    address = host.vars.get("madeus_address")
    if address is None or host.local:
        return host
    return replace(host, address=str(address), port=22)
