"""Inventories, loaded by Ansible itself: whatever `ansible-inventory` accepts.

INI, YAML, JSON, host ranges (`web[01:20]`), directories of sources, `group_vars/` and
`host_vars/`, inventory plugins (`constructed`...), several sources, `ANSIBLE_INVENTORY`, comma
host lists (`-i h1,h2,`), vault (`--vault-password-file`, `--vault-id`, `--ask-vault-pass`):
`load_inventory` hands the sources to Ansible's own inventory command line, in a process of its
own (`madeus/ansible_cli.py`), and builds the model from what it answers. So the hosts of a
group and the variables of a host are exactly those `ansible-inventory --list` shows, Ansible's
precedence included (`ansible_group_priority`, a host's `ansible_port` over its group's), and a
host's connection settings (address, port, user, key, connection type, `become`) are those
Ansible would use: templated (`ansible_host: "{{ inventory_hostname }}.{{ domain }}"`), vault
decrypted, legacy names (`ansible_ssh_host`...) understood.

Madeus adds two variables of its own, read from the group `all` (its `vars`, or
`group_vars/all.yml`):

```yaml
all:
  vars:
    madeus_sites:                 # site name -> groups or hosts
      lyon: [control]
      nantes: [compute-1, compute-2]
    madeus_network_constraints: {default_delay: 25ms, default_rate: 1gbit}   # EnOS-style
```

Without an inventory, `Inventory.local_default()` stands in: one host, `localhost`, run
locally; every group name resolves to it and it forms the one site `local`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madeus.errors import Diagnostic, InventoryError
from madeus.source import Span

LOCAL_HOST = "localhost"
LOCAL_SITE = "local"
logger = logging.getLogger(__name__)
SITES_VAR = "madeus_sites"
AGENT_PYTHON_VAR = "madeus_agent_python"  # the Python a site's agent runs on
CONSTRAINTS_VAR = "madeus_network_constraints"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str  # how the controller reaches it (ansible_host)
    port: int = 22
    user: str | None = None
    key_file: str | None = None  # absolute
    connection: str = "ssh"  # Ansible's connection type: "ssh", "local", "paramiko"...
    # Every variable of the host, merged as Ansible merges them (vaulted values as Ansible
    # shows them: {"__ansible_vault": "..."}).
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)
    become: Mapping[str, Any] = field(default_factory=dict, compare=False)
    vaulted: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def internal_address(self) -> str:
        """How other hosts reach it: `madeus_address` when set (testbeds), else `address`."""
        return str(self.vars.get("madeus_address", self.address))

    @property
    def local(self) -> bool:
        return self.connection == "local"


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    hosts: tuple[str, ...] = ()  # direct members
    children: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)
    members: tuple[str, ...] = ()  # every host, children's included, in Ansible's order


@dataclass(frozen=True, slots=True)
class Inventory:
    hosts: Mapping[str, Host]
    groups: Mapping[str, Group]
    sites: Mapping[str, tuple[str, ...]]  # site -> host names
    network_constraints: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # as Ansible took them (files and directories absolute)
    local: bool = False
    # The options Ansible needs to read the sources again (vault, extra variables): what the
    # Ansible backend hands to ansible-playbook with the sources.
    options: InventoryOptions = field(
        default_factory=lambda: InventoryOptions(), compare=False, repr=False
    )
    # What `ansible-inventory --list` puts in `_meta` besides `hostvars` (its JSON profile).
    listing_meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The operator's extra variables (`-e`), as Ansible parsed them: they override instance
    # parameters of the same name, and reach Ansible actions.
    extra_vars: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Ansible host patterns (`web:&db`, `nova-*`, `all:!storage`) and the hosts they match, as
    # Ansible matched them: those asked for when loading, then those asked for later.
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def local_default(cls) -> Inventory:
        host = Host(LOCAL_HOST, "127.0.0.1", connection="local")
        return cls(
            hosts={LOCAL_HOST: host},
            groups={"all": Group("all", (LOCAL_HOST,), members=(LOCAL_HOST,))},
            sites={LOCAL_SITE: (LOCAL_HOST,)},
            local=True,
        )

    @property
    def path(self) -> str | None:
        """The first source that is a file or directory (known_hosts is looked for beside
        it), else None."""
        return next((s for s in self.sources if os.path.exists(s)), None)

    def has_target(self, name: str) -> bool:
        return self.local or name in self.groups or name in self.hosts

    def hosts_of(self, name: str) -> tuple[str, ...]:
        """Hosts of a group (children included, in Ansible's order) or the host itself."""
        if self.local:
            return (LOCAL_HOST,)
        if name in self.groups:
            return self.groups[name].members
        if name in self.hosts:
            return (name,)
        raise KeyError(name)

    def hosts_matching(self, pattern: str) -> tuple[str, ...]:
        """The hosts an Ansible host pattern matches, in Ansible's order (asked to Ansible
        when the pattern was not given when loading)."""
        if self.local:
            return (LOCAL_HOST,)
        if pattern not in self.patterns:
            document, said = _ask_ansible(self.sources, self.options, [pattern])
            if "errors" in document:
                raise InventoryError(_diagnostics(document["errors"], said, list(self.sources)))
            self.patterns.update(_patterns(document))
        return self.patterns[pattern]

    def placement(self, target: str | None) -> tuple[str, ...]:
        """The hosts an instance placed `on target` runs on: this machine without a target
        or an inventory; a group's hosts, a host, or what an Ansible host pattern matches
        (empty when nothing does)."""
        if target is None or self.local:
            return (LOCAL_HOST,)
        if target in self.groups or target in self.hosts:
            return self.hosts_of(target)
        return self.hosts_matching(target)

    def host(self, name: str) -> Host:
        """Host `name`; one the inventory does not know (a plan or a state built elsewhere) is
        reached at its name, over SSH unless it is `localhost`."""
        found = self.hosts.get(name)
        if found is not None:
            return found
        return Host(name, name, connection="local" if name == LOCAL_HOST else "ssh")

    def groups_of(self, host: str) -> tuple[str, ...]:
        """The groups the host belongs to (directly or through a child group)."""
        return tuple(g for g, group in self.groups.items() if host in group.members)

    def host_vars(self, host: str) -> Mapping[str, Any]:
        """The host's variables, merged as Ansible merges them."""
        return self.hosts[host].vars

    def site_of(self, host: str) -> str | None:
        return next((s for s, hosts in self.sites.items() if host in hosts), None)


@dataclass(frozen=True, slots=True)
class InventoryOptions:
    """What `ansible-inventory` would be told besides the sources. The extra variables and
    the vault password may hold secrets: Ansible processes get them on standard input
    (`private()`), never on their command line (`args()`)."""

    vault_ids: tuple[str, ...] = ()
    vault_password_files: tuple[str, ...] = ()
    ask_vault_pass: bool = False
    extra_vars: tuple[str, ...] = ()  # as `-e` takes them: key=value, YAML/JSON, @file
    # `--ask-vault-pass`: asked once (by the command line), answered to every Ansible process.
    vault_password: str | None = field(default=None, repr=False)

    def args(self) -> list[str]:
        """The options that may show in `ps`."""
        found: list[str] = []
        for vault_id in self.vault_ids:
            found += ["--vault-id", vault_id]
        for path in self.vault_password_files:
            found += ["--vault-password-file", str(Path(path).expanduser().absolute())]
        if self.ask_vault_pass or self.vault_password is not None:
            found.append("--ask-vault-pass")
        return found

    def private(self) -> dict[str, Any]:
        """The rest, for `madeus.ansible_cli`'s standard input."""
        extra = [a for e in self.extra_vars for a in ("-e", _absolute_file(e))]
        return {"args": extra, "vault_password": self.vault_password}


def load_inventory(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    options: InventoryOptions | None = None,
    patterns: Iterable[str] = (),
) -> Inventory:
    """Load the inventory Ansible reads from `sources` (one or several, or None for Ansible's
    default: `ANSIBLE_INVENTORY`, else its configuration), with the hosts each host pattern
    of `patterns` matches; raise InventoryError with a diagnostic positioned where Ansible says
    the problem is."""
    options = options or InventoryOptions()
    if sources is None:
        given: list[str] = []
    elif isinstance(sources, str | os.PathLike):
        given = [_absolute_source(os.fspath(sources))]
    else:
        given = [_absolute_source(os.fspath(s)) for s in sources]
    for source in given:
        if not ("," in source or os.path.exists(source)):
            raise InventoryError([_at(source, "cannot read inventory: no such file or directory")])
    started = time.monotonic()
    document, said = _ask_ansible(tuple(given), options, list(patterns))
    if "errors" in document:
        raise InventoryError(_diagnostics(document["errors"], said, given))
    inventory = _from_document(document, options)
    logger.info(
        "inventory %s: %d hosts, %d groups, %d sites (read by Ansible in %.1f s)",
        " ".join(inventory.sources) or "(Ansible's default)",
        len(inventory.hosts),
        len(inventory.groups),
        len(inventory.sites),
        time.monotonic() - started,
    )
    for line in said.splitlines():
        if line.strip():
            logger.info("ansible-inventory: %s", line.rstrip())
    return inventory


def local_inventory(options: InventoryOptions | None = None) -> Inventory:
    """This machine alone (no inventory), with the operator's extra variables as Ansible
    parses them (asked to Ansible only when there are some)."""
    local = Inventory.local_default()
    if options is None or not options.extra_vars:
        return local
    document, said = _ask_ansible(("localhost,",), options, [])
    if "errors" in document:
        raise InventoryError(_diagnostics(document["errors"], said, []))
    return dataclasses.replace(
        local, extra_vars=dict(document.get("extra_vars") or {}), options=options
    )


def _source_args(sources: Iterable[str]) -> list[str]:
    return [a for s in sources for a in ("-i", s)]


def _patterns(document: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    return {p: tuple(hosts) for p, hosts in (document.get("patterns") or {}).items()}


def inventory_from_dict(data: Mapping[str, Any], path: str | None = None) -> Inventory:
    """An inventory written as the mapping of a YAML inventory (madeus's `sites` and
    `network_constraints` may be given as top-level keys: they become `madeus_sites` and
    `madeus_network_constraints` of `all`), written into `path` (a new private file when
    None), then loaded like any other."""
    import yaml

    body = {k: v for k, v in data.items() if k not in _TOP_LEVEL}
    extra = {var: data[key] for key, var in _TOP_LEVEL.items() if key in data}
    if extra:
        top = dict(body.get("all") or {})
        top["vars"] = {**(top.get("vars") or {}), **extra}
        body["all"] = top
    if path is None:
        path = str(Path(tempfile.mkdtemp(prefix="madeus-inventory-")) / "inventory.yml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(yaml.safe_dump(body, sort_keys=False))
    return load_inventory(path)


# --- asking Ansible -------------------------------------------------------------------------------


def _ask_ansible(
    sources: Sequence[str], options: InventoryOptions, patterns: list[str]
) -> tuple[dict[str, Any], str]:
    """Run the inventory side of `madeus/ansible_cli.py`: its document, and what Ansible said
    on its standard error (warnings, and the details of parse failures)."""
    env = {
        "MADEUS_PATTERNS": json.dumps(patterns),
        **os.environ,
        # A source that no plugin can parse is an error, not a warning and an empty inventory.
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore"),
    }
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "madeus.ansible_cli", "inventory"),
            *_source_args(sources),
            *options.args(),
        ],
        input=json.dumps(options.private()),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    try:
        document = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]
        document = {"errors": [{"message": f"ansible-inventory failed: {reason}"}]}
    if not isinstance(document, dict):
        document = {"errors": [{"message": "ansible-inventory gave no inventory"}]}
    return document, done.stderr


def _from_document(document: Mapping[str, Any], options: InventoryOptions) -> Inventory:
    listing = document["list"]
    hostvars: Mapping[str, Any] = listing.get("_meta", {}).get("hostvars", {})
    hosts: dict[str, Host] = {}
    for name, info in document["hosts"].items():
        conn = info["connection"]
        port = conn.get("port")
        key = conn.get("key_file")
        hosts[name] = Host(
            name=name,
            address=str(conn.get("address") or name),
            port=int(port) if port not in (None, "") else 22,
            user=None if conn.get("user") in (None, "") else str(conn["user"]),
            key_file=None if not key else str(Path(str(key)).expanduser().absolute()),
            connection="ssh" if conn.get("connection") in ("smart", None) else conn["connection"],
            vars=dict(hostvars.get(name, {})),
            become=dict(conn.get("become") or {}),
            vaulted=dict(info.get("vaulted") or {}),
        )
    groups: dict[str, Group] = {}
    raw_groups: Mapping[str, Any] = document["groups"]
    for name, info in raw_groups.items():
        groups[name] = Group(
            name,
            tuple(info["hosts"]),
            tuple(info["children"]),
            dict(info.get("vars") or {}),
            tuple(info["members"]),
        )
    # `all` holds every host, as in Ansible (its own direct list holds only those written there).
    everything = groups.get("all", Group("all"))
    groups["all"] = Group(
        "all", everything.hosts, everything.children, everything.vars, tuple(hosts)
    )
    partial = Inventory(hosts, groups, {}, sources=tuple(document.get("sources", ())))
    all_vars = dict(groups["all"].vars)
    where = partial.path or "the inventory"
    for var, (key, path, value) in _top_level_additions(partial.sources).items():
        if var in all_vars:
            raise InventoryError(
                [_at(path, f"`{key}` is given twice: here, and as the variable `{var}` of all")]
            )
        all_vars[var], where = value, path
    sites = _sites(all_vars.get(SITES_VAR), partial, where)
    constraints = all_vars.get(CONSTRAINTS_VAR) or {}
    if not isinstance(constraints, Mapping):
        raise InventoryError([_at(where, f"`{CONSTRAINTS_VAR}` must be a mapping")])
    meta = {k: v for k, v in listing.get("_meta", {}).items() if k != "hostvars"}
    return Inventory(
        hosts,
        groups,
        sites,
        dict(constraints),
        partial.sources,
        options=options,
        listing_meta=meta,
        extra_vars=dict(document.get("extra_vars") or {}),
        patterns=_patterns(document),
    )


# madeus's additions as top-level keys of a YAML or JSON inventory file (Ansible skips them,
# with a warning): the form they had before they were variables of `all`, and a side file
# (`-i sites.yml`) holding only them.
_TOP_LEVEL = {"sites": SITES_VAR, "network_constraints": CONSTRAINTS_VAR}


def _top_level_additions(sources: Iterable[str]) -> dict[str, tuple[str, str, Any]]:
    """`{variable: (key, file, value)}` for the top-level `sites` / `network_constraints` of
    the YAML and JSON files among `sources` (and directly in the directories among them)."""
    import yaml

    files: list[str] = []
    for source in sources:
        if os.path.isdir(source):
            files += sorted(str(p) for p in Path(source).iterdir() if p.is_file())
        elif os.path.isfile(source):
            files.append(source)
    found: dict[str, tuple[str, str, Any]] = {}
    for path in files:
        if not path.endswith((".yml", ".yaml", ".json")):
            continue
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeError, yaml.YAMLError):
            continue  # Ansible read it (a vaulted file...): nothing of madeus's in it
        if isinstance(data, Mapping):
            for key, var in _TOP_LEVEL.items():
                if key in data:
                    found[var] = (key, path, data[key])
    return found


def _sites(raw: object, inventory: Inventory, where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InventoryError(
            [_at(where, f"`{SITES_VAR}` must map site names to lists of groups or hosts")]
        )
    problems: list[Diagnostic] = []
    sites: dict[str, tuple[str, ...]] = {}
    for site, members in raw.items():
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, list):
            problems.append(_at(where, f'site "{site}" must list groups or hosts'))
            continue
        site_hosts: dict[str, None] = {}
        for member in members:
            if not inventory.has_target(str(member)):
                problems.append(_at(where, f'site "{site}" names unknown group or host "{member}"'))
                continue
            site_hosts.update(dict.fromkeys(inventory.hosts_of(str(member))))
        sites[str(site)] = tuple(site_hosts)
    if problems:
        raise InventoryError(problems)
    return sites


# --- errors ---------------------------------------------------------------------------------------

# `Origin: PATH:LINE:COL` (or `PATH:LINE`, or `PATH`) in what Ansible prints about a failure.
_ORIGIN = re.compile(r"^Origin: (?P<path>.+?)(?::(?P<line>\d+))?(?::(?P<col>\d+))?$")
_FAILED = re.compile(
    r"^\[(?:WARNING|ERROR)\]: Failed to parse inventory with '(\w+)' plugin: (.+)$"
)


def _diagnostics(
    errors: Iterable[Mapping[str, Any]], said: str, sources: list[str]
) -> list[Diagnostic]:
    """Ansible's failure as diagnostics: for each source no plugin could parse, the failure
    of the plugin meant for it (YAML for .yml/.yaml/.json files, else INI), at the position
    Ansible gives; else Ansible's own error."""
    first = next(iter(errors), {})
    if str(first.get("kind")) == "ExtraVarsError":  # the operator's -e, not the inventory
        return [Diagnostic("extra-vars", str(first.get("message")))]
    failures = _plugin_failures(said)
    found: list[Diagnostic] = []
    for source in sources or [f.path for f in failures]:
        mine = [f for f in failures if f.path == source]
        if not mine:
            continue
        best = max(mine, key=lambda f: (_meant_for(f.plugin, source), f.line > 0))
        line, col = (best.line, best.col) if best.line else _locate(source, best.message)
        found.append(
            Diagnostic(
                "inventory",
                f"cannot read inventory: {best.message}",
                Span(source, line, col, line, col + 1),
            )
        )
    if found:
        return found
    messages = [str(e.get("message", "")) for e in errors] or ["unknown error"]
    path = str(first.get("path") or (sources[0] if sources else "<inventory>"))
    line, col = int(first.get("line") or 0), int(first.get("col") or 0)
    return [
        Diagnostic(
            "inventory",
            f"cannot read inventory: {messages[0]}",
            Span(path, line, col, line, col + 1),
        )
    ]


@dataclass(frozen=True, slots=True)
class _Failure:
    plugin: str
    message: str
    path: str
    line: int
    col: int


def _plugin_failures(said: str) -> list[_Failure]:
    found: list[_Failure] = []
    plugin = message = None
    for line in said.splitlines():
        head = _FAILED.match(line)
        if head is not None:
            plugin, message = head.group(1), head.group(2).strip()
            continue
        origin = _ORIGIN.match(line.strip())
        if origin is not None and plugin is not None and message is not None:
            path = origin.group("path")
            if path.startswith("<"):  # `<inventory plugin ... with source ...>`: no file
                continue
            found.append(
                _Failure(
                    plugin,
                    message,
                    path,
                    int(origin.group("line") or 0),
                    int(origin.group("col") or 0),
                )
            )
            plugin = message = None
    return found


# What Ansible's INI plugin quotes of the line it could not parse: `... got: LINE`,
# `Invalid section entry: 'LINE'`, `Error parsing host definition 'LINE': ...`, `Section
# [G:KIND] has unknown type`.
_QUOTED_LINE = re.compile(r"got: (?P<got>.+)$|'(?P<quoted>[^']+)'|Section (?P<section>\[[^\]]*\])")


def _locate(path: str, message: str) -> tuple[int, int]:
    """Where in `path` the text Ansible quotes in `message` is: (line, column), 1-based; (0, 0)
    when unknown. ansible-core 2.19's INI plugin forgets the line number it had counted, but
    quotes the line."""
    quoted = _QUOTED_LINE.search(message.strip())
    if quoted is None or not os.path.isfile(path):
        return 0, 0
    fragment = next((g for g in quoted.groups() if g), "").strip()
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0, 0
    for number, text in enumerate(lines, start=1):
        at = text.find(fragment)
        if fragment and at >= 0:
            return number, at + 1
    return 0, 0


def _meant_for(plugin: str, source: str) -> bool:
    yaml_like = source.endswith((".yml", ".yaml", ".json"))
    return plugin in ("yaml", "auto") if yaml_like else plugin == "ini"


def _at(path: str, message: str, line: int = 0, col: int = 0) -> Diagnostic:
    return Diagnostic("inventory", message, Span(path, line, col, line, col + 1))


def _absolute_source(source: str) -> str:
    """A file or directory made absolute (Ansible resolves nothing from a directory of its
    own then); a host list (`h1,h2,`) or a plugin name as it is."""
    if "," in source or not os.path.exists(source):
        return source
    return str(Path(source).expanduser().absolute())


def _absolute_file(extra: str) -> str:
    return "@" + str(Path(extra[1:]).expanduser().absolute()) if extra.startswith("@") else extra
