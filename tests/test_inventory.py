"""Inventories: Ansible's YAML format plus Madeus's `sites` and `network_constraints`."""

from __future__ import annotations

from pathlib import Path

import pytest

from madeus.errors import InventoryError, render_all
from madeus.inventory import Inventory, inventory_from_dict, load_inventory

INVENTORY = """\
all:
  vars: {ntp: pool.example}
  children:
    control:
      hosts:
        control-1: {ansible_host: 192.0.2.10, ansible_user: admin, role: primary}
      vars: {madeus_max_parallel: 2}
    compute:
      hosts:
        compute-1: {ansible_port: 2222, ansible_ssh_private_key_file: /k}
        compute-2: {ansible_connection: local}
      vars: {role: worker}
sites:
  lyon: [control]
  nantes: [compute-1, compute-2]
network_constraints: {default_delay: 25ms}
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def test_hosts_and_connection_variables(inventory: Inventory) -> None:
    control = inventory.hosts["control-1"]
    assert (control.address, control.port, control.user) == ("192.0.2.10", 22, "admin")
    compute = inventory.hosts["compute-1"]
    assert (compute.address, compute.port, compute.key_file) == ("compute-1", 2222, "/k")
    assert inventory.hosts["compute-2"].connection == "local"
    assert compute.connection == "ssh"


def test_groups_children_and_all(inventory: Inventory) -> None:
    assert inventory.hosts_of("compute") == ("compute-1", "compute-2")
    assert inventory.hosts_of("all") == ("control-1", "compute-1", "compute-2")
    assert inventory.hosts_of("compute-2") == ("compute-2",)
    with pytest.raises(KeyError):
        inventory.hosts_of("storage")


def test_variables_merge_outer_group_first_then_host(inventory: Inventory) -> None:
    assert inventory.host_vars("control-1") == {
        "ntp": "pool.example",
        "madeus_max_parallel": 2,
        "role": "primary",
    }
    assert inventory.host_vars("compute-1") == {"ntp": "pool.example", "role": "worker"}


def test_sites_and_network_constraints(inventory: Inventory) -> None:
    assert dict(inventory.sites) == {"lyon": ("control-1",), "nantes": ("compute-1", "compute-2")}
    assert inventory.site_of("compute-2") == "nantes"
    assert inventory.network_constraints == {"default_delay": "25ms"}


def test_all_holds_every_host_even_when_not_written() -> None:
    inv = inventory_from_dict(
        {"control": {"hosts": {"c1": None}}, "compute": {"hosts": {"n1": {}}}}
    )
    assert inv.hosts_of("all") == ("c1", "n1")
    inv = inventory_from_dict({"all": {"hosts": {"e1": None}}, "control": {"hosts": {"c1": None}}})
    assert inv.hosts_of("all") == ("e1", "c1")


def test_local_default_resolves_every_name_to_localhost() -> None:
    inv = Inventory.local_default()
    assert inv.has_target("anything")
    assert inv.hosts_of("control") == ("localhost",)
    assert dict(inv.sites) == {"local": ("localhost",)}
    assert inv.hosts["localhost"].connection == "local"


def test_errors_are_diagnostics(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [oops\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(bad)
    assert render_all(caught.value.diagnostics).startswith(
        f"{bad}:3:1: error: inventory is not valid YAML"
    )
    with pytest.raises(InventoryError) as caught:
        inventory_from_dict(
            {"g": {"hosts": {"h": {"ansible_port": "x"}}}, "sites": {"s": ["nope"]}}
        )
    assert [d.message for d in caught.value.diagnostics] == [
        'ansible_port of host "h" is not a number',
        'site "s" names unknown group or host "nope"',
    ]
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "missing.yml")
    assert caught.value.diagnostics[0].message == "cannot read inventory: No such file or directory"
