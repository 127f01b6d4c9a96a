"""The inventory side of madeus: `python -m madeus.ansible_cli inventory ARGS...`.

One of the two modules that import ansible (with `ansible_worker.py`, which runs plays, and the
callback plugin in `backends/ansible_plugins/`). It runs in a process of its own, never in
madeus's: Ansible's import is heavy, and its global state (configuration, display) is a command
line's.

It reads one JSON document on standard input, what must not show in `ps`:
`{"args": [...], "vault_password": TEXT or null}`: `args` are more words of the command line
(the operator's `-e`), `vault_password` answers Ansible's vault prompt (`--ask-vault-pass`,
asked once by madeus). Standard input is /dev/null afterwards.

`inventory ARGS`: `ansible-inventory ARGS --list`, loaded by Ansible's own inventory command
line class (`InventoryManager`, `VariableManager`, vault, plugins, `group_vars/`...), and
printed as one JSON document for `madeus/inventory.py` (`InventoryDocument` there says what it
holds): Ansible's `--list` view, every group (empty ones too) with its direct hosts, children
and variables, per host the connection settings Ansible would use (templated, vault decrypted)
and the decrypted values of its vaulted variables, and the hosts matching each host pattern of
`MADEUS_PATTERNS` (a JSON list: `web:&db`, `nova-*`...). An error is a document too
(`{"errors": [...]}`, with the file, line and column Ansible knows), never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# The connection settings of a host: (what madeus calls it, the ssh connection plugin's option).
_SSH_OPTIONS = (
    ("address", "host"),
    ("port", "port"),
    ("user", "remote_user"),
    ("key_file", "private_key_file"),
)
_BECOME = ("ansible_become", "ansible_become_user", "ansible_become_method")


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "inventory":
        sys.exit("usage: python -m madeus.ansible_cli inventory ARGS...")
    private = _private()
    more = [str(a) for a in private.get("args") or ()]
    sys.exit(_inventory([*argv[1:], *more]))


def _private() -> dict[str, Any]:
    """The standard input's document (see the module docstring); standard input is then
    /dev/null."""
    document = read_private()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return document


def read_private(*, first_line_only: bool = False) -> dict[str, Any]:
    """The private document on standard input (all of it, or its first line, read without
    buffering what follows); Ansible's vault prompt then gets the password given, if any."""
    if first_line_only:
        data = b""
        while not data.endswith(b"\n"):
            byte = os.read(0, 1)  # one byte at a time: what follows is not ours to read
            if not byte:
                break
            data += byte
        text = data.decode()
    else:
        text = sys.stdin.read()
    document = json.loads(text) if text.strip() else {}
    if not isinstance(document, dict):
        sys.exit("madeus: the private document on standard input must be a JSON object")
    password = document.get("vault_password")
    if isinstance(password, str):
        import getpass

        # Ansible asks with getpass (`--ask-vault-pass`): the answer is already known.
        getpass.getpass = lambda prompt="Password: ", stream=None: password
    return document


def _inventory(args: list[str]) -> int:
    """Load the inventory as `ansible-inventory ARGS --list` would, print the document."""
    out = sys.stdout
    try:
        document = _load(args)
    except Exception as exc:  # Ansible's errors (and any other): a document, not a traceback
        out.write(json.dumps({"errors": errors_of(exc)}) + "\n")
        return 1
    out.write(json.dumps(document, default=str) + "\n")
    return 0


def _load(args: list[str]) -> dict[str, Any]:
    from ansible.cli import CLI
    from ansible.cli.inventory import InventoryCLI

    cli = InventoryCLI(["ansible-inventory", *args, "--list"])
    CLI.run(cli)  # what every Ansible command does first: parse, load the plugins
    check_extra_vars()
    cli.loader, cli.inventory, cli.vm = cli._play_prereqs()
    inventory, vm = cli.inventory, cli.vm
    listing = json.loads(cli.dump(cli.json_inventory(cli._get_group("all"))))
    groups: dict[str, Any] = {}
    for group in inventory.groups.values():
        groups[group.name] = {
            "hosts": [h.name for h in group.hosts],
            "members": [h.name for h in group.get_hosts()],
            "children": [g.name for g in group.child_groups],
            "vars": json.loads(cli.dump(cli._get_group_variables(group))),
        }
    hosts: dict[str, Any] = {}
    for host in inventory.get_hosts("all"):
        variables = vm.get_vars(host=host, include_hostvars=False, stage="all")
        hosts[host.name] = {
            "connection": _connection(cli.loader, host, variables),
            "vaulted": _vaulted(variables),
        }
    sources = [s for s in inventory._sources if isinstance(s, str)]
    patterns = {
        pattern: [h.name for h in inventory.get_hosts(pattern, ignore_limits=True)]
        for pattern in json.loads(os.environ.get("MADEUS_PATTERNS") or "[]")
    }
    from ansible.utils.vars import load_extra_vars

    return {
        "list": listing,
        "groups": groups,
        "hosts": hosts,
        "sources": sources,
        "patterns": patterns,
        "extra_vars": _plain(load_extra_vars(cli.loader)),
    }


def check_extra_vars() -> None:
    """The operator's `-e`, parsed first: a value Ansible cannot split is said as such, not
    as the inventory source failing that it makes Ansible report later."""
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.vars import load_extra_vars

    try:
        load_extra_vars(DataLoader())
    except AnsibleError as exc:
        message = str(getattr(exc, "message", "") or exc).strip()
        raise ExtraVarsError(f"extra variables (-e): {message}") from None


class ExtraVarsError(Exception):
    """The operator's extra variables do not parse."""


def _connection(loader: Any, host: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """How Ansible reaches `host`: the ssh connection plugin's options resolved from the
    host's variables (templated: `ansible_host: "{{ inventory_hostname }}.{{ domain }}"`),
    the environment and ansible.cfg, as Ansible resolves them (of aliases such as
    `ansible_host` and `ansible_ssh_host`, the last one listed wins)."""
    from ansible import constants as C
    from ansible.plugins.loader import connection_loader
    from ansible.template import Templar

    templar = Templar(loader=loader, variables=variables)

    def rendered(name: str) -> Any:
        value = variables.get(name)
        return None if value is None else _plain(templar.template(value))

    connection_loader.get("ssh", class_only=True)  # loads the plugin's option definitions
    names = {"inventory_hostname", "ansible_host", "ansible_ssh_host", "ansible_port"}
    names |= {"ansible_ssh_port", "ansible_user", "ansible_ssh_user"}
    names |= {"ansible_private_key_file", "ansible_ssh_private_key_file"}
    resolved = {name: rendered(name) for name in names if name in variables}
    options = C.config.get_plugin_options("connection", "ssh", variables=resolved)
    found: dict[str, Any] = {key: options.get(option) for key, option in _SSH_OPTIONS}
    kind = rendered("ansible_connection") or (
        "local" if host.name in C.LOCALHOST and host.implicit else "ssh"
    )
    found["connection"] = str(kind)
    become = {name: rendered(name) for name in _BECOME if name in variables}
    if "ansible_become" in become:  # INI values are strings: "true", "yes", "1"
        become["ansible_become"] = _boolean(become["ansible_become"])
    found["become"] = become
    return found


def _vaulted(variables: dict[str, Any]) -> dict[str, str]:
    """The decrypted values of the host's vaulted variables (top level), by name; those
    without the secret to decrypt them are left out (Ansible only needs it if it uses them)."""
    from ansible.errors import AnsibleError

    found: dict[str, str] = {}
    for name, value in variables.items():
        kind = type(value).__name__
        if kind in ("EncryptedString", "AnsibleVaultEncryptedUnicode"):
            try:
                found[name] = str(value)
            except AnsibleError:
                continue
    return found


def _boolean(value: Any) -> bool:
    from ansible.module_utils.parsing.convert_bool import boolean

    return bool(boolean(value, strict=False))


def _plain(value: Any) -> Any:
    """Ansible's tagged and unsafe strings as plain JSON values."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def errors_of(exc: BaseException) -> list[dict[str, Any]]:
    """Ansible's error, with the source position it knows (2.19 tags objects with their
    origin; earlier releases say it in the message), and its causes."""
    found: list[dict[str, Any]] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 5:
        message = str(getattr(seen, "message", "") or seen).strip()
        entry: dict[str, Any] = {"message": message, "kind": type(seen).__name__}
        origin = _origin(seen)
        if origin is not None:
            entry.update(origin)
        found.append(entry)
        seen = seen.__cause__
    return found


def _origin(exc: BaseException) -> dict[str, Any] | None:
    obj = getattr(exc, "obj", None)
    if obj is None:
        return None
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # older ansible-core: no tags
        return None
    origin = Origin.get_tag(obj)
    if origin is None or origin.path is None:
        return None
    return {"path": origin.path, "line": origin.line_num, "col": origin.col_num}


if __name__ == "__main__":
    main(sys.argv[1:])
