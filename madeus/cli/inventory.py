"""`madeus inventory -i INV [--list | --host HOST | --graph [GROUP]]`: what madeus resolved.

The inventory is read by Ansible (madeus/inventory.py); this prints madeus's model of it in
`ansible-inventory`'s own shapes, so that the two can be compared: `--list` is the JSON of
`ansible-inventory --list` (groups with `hosts` and `children`, `_meta.hostvars` with every
host's merged variables), plus madeus's own additions under `_madeus` (`sites`, as hosts, and
`network_constraints`); `--host HOST` the host's variables; `--graph` the tree of groups.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from madeus.cli._common import EXIT_OK, EXIT_USAGE, add_inventory_arg, fail, reports_errors

if TYPE_CHECKING:
    from madeus.inventory import Inventory


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "inventory",
        help="show the inventory as madeus resolved it (ansible-inventory's shapes)",
        description="Load the inventory as Ansible reads it and print what madeus resolved: "
        "--list (ansible-inventory's JSON, plus madeus's sites under _madeus), --host HOST "
        "(its variables) or --graph (the groups).",
    )
    add_inventory_arg(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="every group and host, as JSON")
    action.add_argument("--host", metavar="HOST", help="one host's variables, as JSON")
    action.add_argument(
        "--graph",
        nargs="?",
        const="all",
        metavar="GROUP",
        help="the tree of groups and hosts under GROUP (default: all)",
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    from madeus.cli._common import load_inventory_of

    inventory = load_inventory_of(args)
    if inventory is None:
        print(
            "madeus inventory: error: no inventory: give -i INVENTORY (or set ANSIBLE_INVENTORY)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.list:
        data = listing(inventory)
        data["_madeus"] = {
            "sites": {site: list(hosts) for site, hosts in inventory.sites.items()},
            "network_constraints": dict(inventory.network_constraints),
        }
        print(json.dumps(data, sort_keys=True, indent=4))
    elif args.host is not None:
        host = inventory.hosts.get(args.host)
        if host is None:
            return fail(f'no host "{args.host}" in the inventory')
        print(json.dumps(dict(host.vars), sort_keys=True, indent=4))
    else:
        if args.graph not in inventory.groups:
            return fail(f'no group "{args.graph}" in the inventory')
        print("\n".join(graph(inventory, args.graph)))
    return EXIT_OK


def listing(inventory: Inventory) -> dict[str, Any]:
    """`ansible-inventory --list`'s document: groups reachable from `all` with their direct
    hosts and their children (empty keys, and groups left empty, dropped), then every host's
    variables under `_meta`."""
    seen: set[str] = set()
    out: dict[str, Any] = {}

    def visit(name: str) -> None:
        group = inventory.groups[name]
        entry: dict[str, Any] = {}
        if name != "all":
            entry["hosts"] = list(group.hosts)
        entry["children"] = list(group.children)
        out[name] = entry
        for child in group.children:
            if child not in seen:
                seen.add(child)
                visit(child)
        for key in ("hosts", "children"):
            if key in entry and not entry[key]:
                del entry[key]
        if not entry:
            del out[name]

    visit("all")
    hostvars = {name: dict(h.vars) for name, h in inventory.hosts.items() if h.vars}
    out["_meta"] = {"hostvars": hostvars, **inventory.listing_meta}
    return out


def graph(inventory: Inventory, name: str, depth: int = 0) -> list[str]:
    """`ansible-inventory --graph`'s lines: each group (`@name:`), its child groups, then
    its own hosts, indented by depth."""

    def line(text: str, level: int) -> str:
        return "  |" * level + "--" + text if level else text

    group = inventory.groups[name]
    lines = [line(f"@{name}:", depth)]
    for child in group.children:
        lines.extend(graph(inventory, child, depth + 1))
    if name != "all":
        lines.extend(line(host, depth + 1) for host in group.hosts)
    return lines
