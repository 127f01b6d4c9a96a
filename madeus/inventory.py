"""Inventories: Ansible's YAML inventory plus Madeus's optional `sites` and `network_constraints`.

```yaml
all:
  children:
    control: {hosts: {control-1: {ansible_host: 192.0.2.10}}}
    compute: {hosts: {compute-1: {}, compute-2: {}}, vars: {madeus_max_parallel: 4}}
sites:                      # Madeus only: site name -> groups or hosts
  lyon: [control]
  nantes: [compute]
network_constraints: {default_delay: 25ms, default_rate: 1gbit}
```
Without an inventory, `Inventory.local()` stands in: one host, `localhost`, run locally; every
group name resolves to it and it forms the one site `local`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madeus.errors import Diagnostic, InventoryError
from madeus.source import Span

LOCAL_HOST = "localhost"
LOCAL_SITE = "local"
_HOST_KEYS = {
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "ansible_connection",
}


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str  # how the controller reaches it (ansible_host)
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    connection: str = "ssh"  # "ssh" or "local"
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def internal_address(self) -> str:
        """How other hosts reach it: `madeus_address` when set (testbeds), else `address`."""
        return str(self.vars.get("madeus_address", self.address))


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    hosts: tuple[str, ...] = ()  # direct members
    children: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Inventory:
    hosts: Mapping[str, Host]
    groups: Mapping[str, Group]
    sites: Mapping[str, tuple[str, ...]]  # site -> host names
    network_constraints: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    local: bool = False

    @classmethod
    def local_default(cls) -> Inventory:
        host = Host(LOCAL_HOST, "127.0.0.1", connection="local")
        return cls(
            hosts={LOCAL_HOST: host},
            groups={"all": Group("all", (LOCAL_HOST,))},
            sites={LOCAL_SITE: (LOCAL_HOST,)},
            local=True,
        )

    def has_target(self, name: str) -> bool:
        return self.local or name in self.groups or name in self.hosts

    def hosts_of(self, name: str) -> tuple[str, ...]:
        """Hosts of a group (children included, in declaration order) or the host itself."""
        if self.local:
            return (LOCAL_HOST,)
        if name in self.groups:
            seen: dict[str, None] = {}
            self._collect(name, seen, set())
            return tuple(seen)
        if name in self.hosts:
            return (name,)
        raise KeyError(name)

    def _collect(self, group: str, out: dict[str, None], visiting: set[str]) -> None:
        if group in visiting:
            return
        visiting.add(group)
        g = self.groups[group]
        out.update(dict.fromkeys(g.hosts))
        for child in g.children:
            self._collect(child, out, visiting)

    def groups_of(self, host: str) -> tuple[str, ...]:
        """Groups containing the host, outermost first (Ansible's variable precedence)."""
        found = [g for g in self.groups if host in self.hosts_of(g)]
        depth = {g: self._depth(g) for g in found}
        return tuple(sorted(found, key=lambda g: (depth[g], g)))

    def _depth(self, group: str) -> int:
        parents = [p for p, g in self.groups.items() if group in g.children]
        return 0 if not parents else 1 + max(self._depth(p) for p in parents)

    def host_vars(self, host: str) -> dict[str, Any]:
        """Group variables (outermost group first), then the host's own variables."""
        merged: dict[str, Any] = {}
        for group in self.groups_of(host):
            merged.update(self.groups[group].vars)
        merged.update(self.hosts[host].vars)
        return merged

    def site_of(self, host: str) -> str | None:
        return next((s for s, hosts in self.sites.items() if host in hosts), None)


def load_inventory(path: str | Path) -> Inventory:
    """Read an Ansible YAML inventory; raise InventoryError with a positioned diagnostic."""
    import yaml

    text_path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError([_diag(text_path, f"cannot read inventory: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InventoryError(
            [_diag(text_path, f"inventory is not valid YAML: {problem}", line, col)]
        ) from None
    return inventory_from_dict(data if data is not None else {}, text_path)


def inventory_from_dict(data: object, path: str = "<inventory>") -> Inventory:
    if not isinstance(data, dict):
        raise InventoryError([_diag(path, "inventory must be a mapping of groups")])
    hosts: dict[str, Host] = {}
    groups: dict[str, Group] = {}
    problems: list[Diagnostic] = []
    top = {k: v for k, v in data.items() if k not in ("sites", "network_constraints")}
    for name, body in top.items():
        _read_group(str(name), body, hosts, groups, problems, path)
    sites: dict[str, tuple[str, ...]] = {}
    raw_sites = data.get("sites") or {}
    if not isinstance(raw_sites, dict):
        problems.append(_diag(path, "`sites` must map site names to lists of groups or hosts"))
        raw_sites = {}
    partial = Inventory(hosts, groups, {}, path=path)
    for site, members in raw_sites.items():
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, list):
            problems.append(_diag(path, f'site "{site}" must list groups or hosts'))
            continue
        site_hosts: dict[str, None] = {}
        for member in members:
            if not partial.has_target(str(member)):
                problems.append(
                    _diag(path, f'site "{site}" names unknown group or host "{member}"')
                )
                continue
            site_hosts.update(dict.fromkeys(partial.hosts_of(str(member))))
        sites[str(site)] = tuple(site_hosts)
    constraints = data.get("network_constraints") or {}
    if not isinstance(constraints, dict):
        problems.append(_diag(path, "`network_constraints` must be a mapping"))
        constraints = {}
    if problems:
        raise InventoryError(problems)
    # As in Ansible, `all` holds every host, whether or not the file spells it out.
    everything = groups.get("all", Group("all"))
    groups["all"] = Group("all", tuple(hosts), everything.children, everything.vars)
    return Inventory(hosts, groups, sites, constraints, path=path)


def _read_group(
    name: str,
    body: object,
    hosts: dict[str, Host],
    groups: dict[str, Group],
    problems: list[Diagnostic],
    path: str,
) -> None:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        problems.append(_diag(path, f'group "{name}" must be a mapping'))
        return
    members: list[str] = []
    for host_name, host_vars in (body.get("hosts") or {}).items():
        host_name = str(host_name)
        members.append(host_name)
        host = _read_host(host_name, host_vars or {}, problems, path)
        if host is not None and host_name not in hosts:
            hosts[host_name] = host
    children = body.get("children") or {}
    if not isinstance(children, dict):
        problems.append(_diag(path, f'children of group "{name}" must be a mapping'))
        children = {}
    for child, child_body in children.items():
        _read_group(str(child), child_body, hosts, groups, problems, path)
    previous = groups.get(name)
    group_vars = dict(previous.vars) if previous else {}
    group_vars.update(body.get("vars") or {})
    groups[name] = Group(
        name,
        tuple(dict.fromkeys((*(previous.hosts if previous else ()), *members))),
        tuple(dict.fromkeys((*(previous.children if previous else ()), *map(str, children)))),
        group_vars,
    )


def _read_host(name: str, raw: object, problems: list[Diagnostic], path: str) -> Host | None:
    if not isinstance(raw, dict):
        problems.append(_diag(path, f'variables of host "{name}" must be a mapping'))
        return None
    try:
        port = int(raw.get("ansible_port", 22))
    except (TypeError, ValueError):
        problems.append(_diag(path, f'ansible_port of host "{name}" is not a number'))
        return None
    connection = str(raw.get("ansible_connection", "ssh"))
    return Host(
        name=name,
        address=str(raw.get("ansible_host", name)),
        port=port,
        user=None if raw.get("ansible_user") is None else str(raw["ansible_user"]),
        key_file=None
        if raw.get("ansible_ssh_private_key_file") is None
        else str(raw["ansible_ssh_private_key_file"]),
        connection="local" if connection == "local" else "ssh",
        vars={k: v for k, v in raw.items() if k not in _HOST_KEYS},
    )


def _diag(path: str, message: str, line: int = 0, col: int = 0) -> Diagnostic:
    return Diagnostic("inventory", message, Span(path, line, col, line, col + 1))
