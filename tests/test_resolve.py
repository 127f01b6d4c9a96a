"""Resolution: families expanded over the inventory, instances placed on hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from madeus.errors import InventoryError
from madeus.frontend import load_text
from madeus.inventory import inventory_from_dict
from madeus.resolve import Link, resolve

SOURCE = """\
component Db(port: int = 3306) {
    places off*, on
    transition start: off -> on
    provide service db at on
}
component Api(region: str) {
    places off*, on
    transition start: off -> on
    use service db for start
}
component Agent {
    places off*, on
    transition start: off -> on
}
assembly edge {
    db = Db on core
    for site in sites {
        api[site] = Api(region = "r1") on control in site
        connect api[site].db -> db.db
    }
    for h in hosts of compute { agent[h] = Agent on h }
}
"""

INVENTORY = {
    "all": {
        "children": {
            "core": {"hosts": {"core-1": None}},
            "control": {"hosts": {"ctl-a": None, "ctl-b": None}},
            "compute": {"hosts": {"cmp-a": None, "cmp-b": None}},
        }
    },
    "sites": {"a": ["ctl-a", "cmp-a"], "b": ["ctl-b", "cmp-b"]},
}


def test_families_expand_per_site_and_per_host() -> None:
    module = load_text(SOURCE, "edge.mad")
    assert module.assembly is not None
    deployment = resolve(module.assembly, inventory_from_dict(INVENTORY))
    placed = {i.name: i.hosts for i in deployment.instances}
    assert placed == {
        "db": ("core-1",),
        "api[a]": ("ctl-a",),
        "api[b]": ("ctl-b",),
        "agent[cmp-a]": ("cmp-a",),
        "agent[cmp-b]": ("cmp-b",),
    }
    assert deployment.links == (
        Link("api[a]", "db", "db", "db"),
        Link("api[b]", "db", "db", "db"),
    )
    assert deployment.provider_of("api[b]", "db") == Link("api[b]", "db", "db", "db")
    assert len(deployment.users_of("db", "db")) == 2
    assert dict(deployment.instance("db").params) == {"port": 3306}
    assert dict(deployment.instance("api[a]").params) == {"region": "r1"}


def test_without_inventory_everything_is_local() -> None:
    module = load_text(SOURCE, "edge.mad")
    assert module.assembly is not None
    deployment = resolve(module.assembly)
    assert {i.name: i.hosts for i in deployment.instances} == {
        "db": ("localhost",),
        "api[local]": ("localhost",),
        "agent[localhost]": ("localhost",),
    }


def test_unknown_targets_are_all_reported(tmp_path: Path) -> None:
    module = load_text(SOURCE.replace("on core", "on kore"), "edge.mad")
    assert module.assembly is not None
    inventory = {**INVENTORY, "all": {"children": {"control": {"hosts": {"ctl-a": None}}}}}
    inventory["sites"] = {"a": ["ctl-a"]}
    with pytest.raises(InventoryError) as caught:
        resolve(module.assembly, inventory_from_dict(inventory, str(tmp_path / "inv.yml")))
    where = tmp_path / "inv.yml"
    assert [str(d.span) + " " + d.message for d in caught.value.diagnostics] == [
        f'edge.mad:16:16 unknown target "kore": no such group or host in inventory {where}',
        f'edge.mad:21:5 unknown target "compute": no such group or host in inventory {where}',
    ]
