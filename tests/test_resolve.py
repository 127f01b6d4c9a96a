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


PLACED = """\
component C(port: int = 1, name: str = "x", on_: bool = false) {
    places a*, b
    transition t: a -> b
}
assembly placed {
    patterned = C on "control:compute:!cmp-b"
    in_site   = C on control in a
    by_host   = C on compute in b
}
"""


def test_patterns_and_sites_of_the_inventory_place_instances(tmp_path: Path) -> None:
    """`on "PATTERN"` is matched by Ansible; `on GROUP in SITE` outside a family keeps the
    hosts of GROUP in that site of the inventory, whether the site lists groups or hosts."""
    module = load_text(PLACED, "placed.mad")
    assert module.assembly is not None
    inventory = inventory_from_dict(INVENTORY, str(tmp_path / "inv.yml"))
    deployment = resolve(module.assembly, inventory)
    assert {i.name: i.hosts for i in deployment.instances} == {
        "patterned": ("ctl-a", "ctl-b", "cmp-a"),
        "in_site": ("ctl-a",),
        "by_host": ("cmp-b",),
    }


def test_an_instance_with_no_host_is_an_error_at_its_target(tmp_path: Path) -> None:
    module = load_text(
        PLACED.replace('"control:compute:!cmp-b"', '"compute:&control"').replace(
            "in b", "in nowhere"
        ),
        "placed.mad",
    )
    assert module.assembly is not None
    inventory = inventory_from_dict(INVENTORY, str(tmp_path / "inv.yml"))
    with pytest.raises(InventoryError) as caught:
        resolve(module.assembly, inventory)
    assert [(str(d.span), d.message) for d in caught.value.diagnostics] == [
        (
            "placed.mad:6:22",
            f'pattern "compute:&control" has no hosts (inventory {tmp_path / "inv.yml"}): an '
            "instance must run somewhere",
        ),
        ("placed.mad:8:22", 'unknown site "nowhere" (the sites of the inventory: a, b)'),
    ]


def test_without_an_inventory_a_site_of_this_machine_still_places(tmp_path: Path) -> None:
    module = load_text(
        "component C {\n    places a*, b\n    transition t: a -> b\n}\n"
        "assembly one {\n    c = C on control in local\n}\n",
        "one.mad",
    )
    assert module.assembly is not None
    assert resolve(module.assembly).instance("c").hosts == ("localhost",)


def test_a_family_over_sites_without_sites_says_it_is_empty(tmp_path: Path) -> None:
    module = load_text(SOURCE, "edge.mad")
    assert module.assembly is not None
    plain = {"all": INVENTORY["all"]}
    deployment = resolve(module.assembly, inventory_from_dict(plain, str(tmp_path / "i.yml")))
    (warning,) = deployment.warnings
    assert (warning.severity, warning.code) == ("warning", "no-sites")
    assert warning.message.startswith(
        "the family over sites is empty: the inventory defines no sites (set madeus_sites in "
        "the variables of all)"
    )
    assert not [i for i in deployment.instances if i.name.startswith("api[")]


def test_extra_variables_override_parameters(tmp_path: Path) -> None:
    from madeus.inventory import InventoryOptions, load_inventory

    module = load_text(PLACED, "placed.mad")
    assert module.assembly is not None
    inventory_from_dict(INVENTORY, str(tmp_path / "inv.yml"))
    options = InventoryOptions(extra_vars=("port=42", '{"name": "from-json", "on_": "yes"}'))
    inventory = load_inventory(tmp_path / "inv.yml", options)
    deployment = resolve(module.assembly, inventory)
    assert dict(deployment.instance("by_host").params) == {
        "port": 42,
        "name": "from-json",
        "on_": True,
    }
    bad = load_inventory(tmp_path / "inv.yml", InventoryOptions(extra_vars=("port=many",)))
    with pytest.raises(InventoryError) as caught:
        resolve(module.assembly, bad)
    assert caught.value.diagnostics[0].message == (
        'extra variable port=\'many\' does not fit parameter "port" (int) of instance "patterned"'
    )


ACROSS = """\
component Db {
    places off*, on
    transition start: off -> on
    provide service db at on
}
component Api {
    places off*, on
    transition start: off -> on
    use service db for start
}
assembly across {
    for site in sites {
        db[site] = Db on control in site
        api[site] = Api on compute in site
        connect api[site].db -> db[a].db
    }
    central = Api on core
    connect central.db -> db[b].db
}
"""


def test_connections_may_name_one_family_member_by_its_key(tmp_path: Path) -> None:
    """Edge topologies: a plain instance using a member of a family (`db[b]`), members using
    another site's member (`db[a]`)."""
    module = load_text(ACROSS, "across.mad")
    assert module.assembly is not None
    inventory = inventory_from_dict(INVENTORY, str(tmp_path / "inv.yml"))
    deployment = resolve(module.assembly, inventory)
    assert {(link.user, link.provider) for link in deployment.links} == {
        ("api[a]", "db[a]"),
        ("api[b]", "db[a]"),
        ("central", "db[b]"),
    }
    wrong = load_text(ACROSS.replace("db[b].db", "db[c].db"), "across.mad")
    assert wrong.assembly is not None
    with pytest.raises(InventoryError) as caught:
        resolve(wrong.assembly, inventory)
    assert [(str(d.span), d.message) for d in caught.value.diagnostics] == [
        ("across.mad:18:27", 'no member "db[c]" of family "db" (its members: db[a], db[b])')
    ]


def test_the_builder_takes_host_patterns_too(tmp_path: Path) -> None:
    """`.instance(..., on="control:&a_site")`: a string that is not a plain name is a host
    pattern, as in quotes after `on` (groups and hosts stay names)."""
    from madeus.builder import AssemblyBuilder
    from madeus.model import ComponentType

    module = load_text(SOURCE, "edge.mad")
    agent = next(c for c in module.components if c.name == "Agent")
    assert isinstance(agent, ComponentType)
    inventory = inventory_from_dict(
        {
            "all": {
                "children": {
                    "control": {"hosts": {"ctl-a": None, "ctl-b": None}},
                    "east": {"hosts": {"ctl-a": None, "cmp-a": None}},
                }
            }
        },
        str(tmp_path / "inv.yml"),
    )
    assembly = (
        AssemblyBuilder("b")
        .components(agent)
        .instance("both", "Agent", on="control:&east")
        .instance("group", "Agent", on="control")
        .instance("host", "Agent", on="cmp-a")
        .build()
    )
    placed = {i.name: i.hosts for i in resolve(assembly, inventory).instances}
    assert placed == {"both": ("ctl-a",), "group": ("ctl-a", "ctl-b"), "host": ("cmp-a",)}


def test_a_reconfiguration_places_added_instances_like_the_assembly(tmp_path: Path) -> None:
    """`r.add(..., on=...)` takes a group, a host or a host pattern, matched as for the
    assembly; one that matches no host is a problem at the script's line."""
    from madeus.reconfig import ProgramBuilder, ProgramError, deployed
    from madeus.reconfig.machine import Machine

    module = load_text(SOURCE, "edge.mad")
    assert module.assembly is not None
    inventory = inventory_from_dict(INVENTORY, str(tmp_path / "inv.yml"))
    state = deployed(resolve(module.assembly, inventory))
    program = ProgramBuilder(state).add("extra", "Agent", on="control:!ctl-b").build()
    machine = Machine(state, program)
    machine.advance()  # executes the `add`
    assert machine.hosts("extra") == ("ctl-a",)
    r = ProgramBuilder(state)
    r.add("lost", "Agent", on="nowhere:&control")
    with pytest.raises(ProgramError) as caught:
        r.build()
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == (
        "on='nowhere:&control' matches no host of the inventory: an instance must run somewhere"
    )
    assert diagnostic.span.path == __file__
