"""Inventories: Ansible is the oracle.

For every inventory of the corpus (each form `ansible-inventory` accepts, and Kolla-Ansible's own
`multinode` and `all-in-one`, taken from the kolla-ansible package), `madeus inventory --list`
(rendered from madeus's model: the hosts of each group, the variables of each host) must equal
what `ansible-inventory --list` prints for the same sources and options. Then madeus's own
additions: connection settings as Ansible would use them (templated, legacy names, vault),
sites, errors at their position.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kolla_helpers import kolla_share

from madeus.cli import main
from madeus.errors import InventoryError, render_all
from madeus.inventory import Inventory, InventoryOptions, inventory_from_dict, load_inventory

VAULT_PASSWORD = "madeus-test-vault"


@dataclass
class Case:
    files: dict[str, str]
    sources: list[str]  # relative to the case's directory (a comma list as it is)
    args: list[str] = field(default_factory=list)  # further ansible-inventory options
    env: dict[str, str] = field(default_factory=dict)


INI = """\
solo.example.com

[web]
web[01:03].example.com ansible_port=2222
www ansible_host=192.0.2.8

[db]
db-[a:c] role=replica
db-a role=primary

[db:vars]
engine=mariadb
port=3306

[backend:children]
db
cache

[cache]

[all:vars]
ntp=pool.example
"""

CORPUS: dict[str, Case] = {
    "ini": Case({"hosts.ini": INI}, ["hosts.ini"]),
    "ini-ranges-with-steps": Case(
        {"hosts": "[nodes]\nnode[01:10:3] ansible_user=admin\nx[a:d:2]\n"}, ["hosts"]
    ),
    "ini-host-in-several-groups": Case(
        {"hosts": "[a]\nh1 va=1 shared=a\n[b]\nh1 vb=2 shared=b\n[a:vars]\nga=1\n[b:vars]\ngb=2\n"},
        ["hosts"],
    ),
    "ini-group-priority": Case(
        {
            "hosts": "[low]\nh1\n[high]\nh1\n[low:vars]\nx=low\nansible_group_priority=10\n"
            "[high:vars]\nx=high\n"
        },
        ["hosts"],
    ),
    "ini-child-group-wins": Case(
        {
            "hosts": "[parent:children]\nchild\n[child]\nh1\n[parent:vars]\nx=parent\ny=p\n"
            "[child:vars]\nx=child\n"
        },
        ["hosts"],
    ),
    "ini-host-port-over-group-port": Case(
        {"hosts": "[g]\nh1 ansible_port=22\nh2\n[g:vars]\nansible_port=2222\n"}, ["hosts"]
    ),
    "ini-empty-and-ungrouped": Case(
        {"hosts": "lonely\n[empty]\n[full]\nh1\n[emptykids:children]\nempty\n"}, ["hosts"]
    ),
    "yaml": Case(
        {
            "inventory.yml": """\
all:
  vars: {ntp: pool.example}
  children:
    control:
      hosts:
        control-1: {ansible_host: 192.0.2.10, ansible_user: admin, role: primary}
      vars: {madeus_max_parallel: 2}
    compute:
      hosts:
        compute-[1:3]: {ansible_port: 2222}
      vars: {role: worker}
"""
        },
        ["inventory.yml"],
    ),
    "yaml-same-host-several-groups": Case(
        {
            "inventory.yml": """\
all:
  children:
    a:
      hosts: {h1: {x: a, only_a: 1}}
      vars: {ga: 1}
    b:
      hosts: {h1: {x: b, only_b: 2}}
      vars: {gb: 2}
"""
        },
        ["inventory.yml"],
    ),
    "yaml-top-level-groups": Case(
        {
            "inventory.yml": """\
web:
  hosts: {w1: {}}
  vars: {tier: web}
all:
  vars: {tier: default}
  hosts: {e1: {}}
db:
  hosts: {d1: {}}
"""
        },
        ["inventory.yml"],
    ),
    "json": Case(
        {
            "inventory.json": json.dumps(
                {"all": {"children": {"g": {"hosts": {"h1": {"x": 1}}, "vars": {"y": [1, 2]}}}}}
            )
        },
        ["inventory.json"],
    ),
    "directory": Case(
        {
            "inv/01-base.ini": "[web]\nw1\nw2\n",
            "inv/02-more.yml": "all:\n  children:\n    web:\n      hosts: {w3: {}}\n"
            "    db:\n      hosts: {d1: {x: 1}}\n",
        },
        ["inv"],
    ),
    "group-and-host-vars-files": Case(
        {
            "hosts": "[web]\nw1\nw2\n",
            "group_vars/all.yml": "ansible_user: deploy\ncommon: 1\n",
            "group_vars/web.yml": "ansible_port: 2222\nrole: web\n",
            "host_vars/w2.yml": "ansible_port: 22\nrole: special\n",
        },
        ["hosts"],
    ),
    "group-vars-directories": Case(
        {
            "hosts": "[web]\nw1\n",
            "group_vars/web/main.yml": "a: 1\n",
            "group_vars/web/other.yml": "b: 2\n",
            "host_vars/w1/x.yml": "c: 3\n",
        },
        ["hosts"],
    ),
    "two-sources": Case(
        {
            "one.ini": "[a]\nh1 x=1\n",
            "two.yml": "all:\n  children:\n    b:\n      hosts: {h1: {y: 2}, h2: {}}\n",
        },
        ["one.ini", "two.yml"],
    ),
    "host-list": Case({}, ["h1,h2.example.com,h3,"]),
    "ansible-inventory-variable": Case(
        {"env.ini": "[g]\nfrom-env\n"}, [], env={"ANSIBLE_INVENTORY": "{dir}/env.ini"}
    ),
    "constructed-plugin": Case(
        {
            "inv/01-hosts.yml": "all:\n  hosts:\n    a1: {os: debian, tier: web}\n"
            "    a2: {os: alma, tier: db}\n",
            "inv/02-constructed.yml": "plugin: ansible.builtin.constructed\nstrict: false\n"
            "keyed_groups:\n  - key: os\n    prefix: os\ngroups:\n"
            "  webservers: tier == 'web'\n",
        },
        ["inv"],
    ),
    "connection-local-and-legacy-names": Case(
        {
            "hosts": "[local]\nme\n[local:vars]\nansible_connection=local\n"
            "[old]\nold1 ansible_ssh_host=192.0.2.9 ansible_ssh_port=2200 ansible_ssh_user=root\n"
        },
        ["hosts"],
    ),
    "templated-host": Case(
        {
            "inventory.yml": "all:\n  vars: {domain: example.org}\n  hosts:\n"
            "    web1: {ansible_host: '{{ inventory_hostname }}.{{ domain }}'}\n"
        },
        ["inventory.yml"],
    ),
    "extra-vars": Case(
        {"hosts": "[g]\nh1 x=inventory\n", "extra.yml": "from_file: yes\n"},
        ["hosts"],
        args=["-e", "x=override", "-e", '{"json_var": [1, 2]}', "-e", "@extra.yml"],
    ),
    "inline-vault": Case(
        {"vault-pass": VAULT_PASSWORD, "inventory.yml": "{vault_inventory}"},
        ["inventory.yml"],
        args=["--vault-password-file", "vault-pass"],
    ),
    "vaulted-group-vars-file": Case(
        {"hosts": "[g]\nh1\n", "vault-pass": VAULT_PASSWORD, "group_vars/g.yml": "{vault_file}"},
        ["hosts"],
        args=["--vault-id", "dev@vault-pass"],
    ),
    "kolla-multinode": Case({}, ["{kolla}/multinode"]),
    "kolla-all-in-one": Case({}, ["{kolla}/all-in-one"]),
}


@pytest.fixture(scope="session")
def kolla_inventories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kolla-Ansible's own example inventories and top-level playbooks (kolla_helpers)."""
    target = tmp_path_factory.mktemp("kolla")
    ansible = kolla_share() / "ansible"
    for name in ("multinode", "all-in-one"):
        shutil.copy(ansible / "inventory" / name, target / name)
    # The top-level playbooks (site.yml and those it imports), not the roles.
    shutil.copytree(ansible, target / "playbooks", ignore=lambda d, names: [
        n for n in names if not (n.endswith(".yml") and Path(d) == ansible)
    ])  # fmt: skip
    return target


def vault(text: str, tmp_path: Path) -> str:
    """`text` encrypted with ansible-vault (the real one) under the test password."""
    password = tmp_path / "vault-pass-for-encrypting"
    password.write_text(VAULT_PASSWORD)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt_string" if "\n" not in text else "encrypt",
            "--vault-password-file",
            str(password),
            *(["--encrypt-vault-id", "default"] if "\n" not in text else ["--output", "-"]),
            *([text] if "\n" not in text else ["-"]),
        ],
        input=text if "\n" in text else None,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return done.stdout


def materialise(case: Case, directory: Path, kolla: Path) -> tuple[list[str], dict[str, str]]:
    for name, content in case.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "{vault_inventory}":
            secret = vault("s3cret-in-the-inventory", directory).replace("\n", "\n      ")
            content = f"all:\n  hosts:\n    h1:\n      db_password: {secret}\n      plain: 1\n"
        elif content == "{vault_file}":
            content = vault("password: s3cret-in-group-vars\nuser: admin\n", directory)
        path.write_text(content)
    sources = [s.replace("{kolla}", str(kolla)) for s in case.sources]
    env = {k: v.replace("{dir}", str(directory)) for k, v in case.env.items()}
    return sources, env


def ansible_inventory(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), *args, "--list"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listing: dict[str, object] = json.loads(done.stdout)
    return listing


def madeus_inventory(
    args: list[str], cwd: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    old = os.getcwd()
    saved = {k: os.environ.get(k) for k in env}
    os.chdir(cwd)
    os.environ.update(env)
    try:
        code = main(["inventory", *args, "--list"])
    finally:
        os.chdir(old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = capsys.readouterr()
    assert code == 0, err
    listing: dict[str, object] = json.loads(out)
    return listing


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("name", list(CORPUS))
def test_madeus_sees_what_ansible_inventory_sees(
    name: str, tmp_path: Path, kolla_inventories: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CORPUS[name]
    sources, env = materialise(case, tmp_path, kolla_inventories)
    args = [*(a for s in sources for a in ("-i", s)), *case.args]
    expected = ansible_inventory(args, tmp_path, env)
    seen = madeus_inventory(args, tmp_path, env, capsys)
    seen.pop("_madeus")
    assert seen == expected
    # Ansible did read hosts (an empty inventory on both sides would prove nothing).
    assert any("hosts" in group for key, group in expected.items() if key != "_meta")


def load(tmp_path: Path, name: str, **files: str) -> Inventory:
    for rel, content in files.items():
        path = tmp_path / rel.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return load_inventory(tmp_path / name)


def test_connection_settings_are_those_ansible_would_use(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        "hosts",
        hosts="[web]\nw1 ansible_host='{{ inventory_hostname }}.{{ domain }}'\n"
        "w2 ansible_port=22\n[web:vars]\nansible_port=2222\ndomain=example.org\n"
        "[local]\nme\n[local:vars]\nansible_connection=local\n"
        "[old]\nold1 ansible_ssh_host=192.0.2.9 ansible_ssh_port=2200 ansible_ssh_user=root "
        "ansible_host=ignored ansible_ssh_private_key_file=keys/id\n"
        "[up]\nb1 ansible_become=true ansible_become_user=postgres\n",
    )
    w1, w2, me, old = (inv.hosts[n] for n in ("w1", "w2", "me", "old1"))
    assert (w1.address, w1.port) == ("w1.example.org", 2222)  # templated; the group's port
    assert (w2.address, w2.port) == ("w2", 22)  # the host's port over its group's
    assert me.connection == "local" and me.local
    assert (old.address, old.port, old.user) == ("192.0.2.9", 2200, "root")  # legacy names
    assert old.key_file == str(Path.cwd() / "keys" / "id")  # as ssh reads it: from here
    assert inv.hosts["b1"].become == {"ansible_become": True, "ansible_become_user": "postgres"}


def test_vaulted_variables_are_decrypted_for_use_and_hidden_in_listings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pass").write_text(VAULT_PASSWORD)
    secret = vault("s3cret-value", tmp_path).replace("\n", "\n      ")
    (tmp_path / "inv.yml").write_text(f"all:\n  hosts:\n    h1:\n      db_password: {secret}\n")
    options = InventoryOptions(vault_password_files=(str(tmp_path / "pass"),))
    inv = load_inventory(tmp_path / "inv.yml", options)
    assert inv.hosts["h1"].vaulted == {"db_password": "s3cret-value"}
    assert "s3cret-value" not in json.dumps(dict(inv.hosts["h1"].vars))
    without = load_inventory(tmp_path / "inv.yml")  # not asked to decrypt: still loads
    assert without.hosts["h1"].vaulted == {}


def test_sites_and_network_constraints_are_variables_of_all(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        "inventory.yml",
        **{
            "inventory.yml": """\
all:
  vars:
    madeus_sites: {lyon: [control], nantes: [compute-1, compute-2]}
    madeus_network_constraints: {default_delay: 25ms}
  children:
    control: {hosts: {control-1: {}}}
    compute: {hosts: {compute-1: {}, compute-2: {}}}
"""
        },
    )
    assert dict(inv.sites) == {"lyon": ("control-1",), "nantes": ("compute-1", "compute-2")}
    assert inv.site_of("compute-2") == "nantes"
    assert inv.network_constraints == {"default_delay": "25ms"}


def test_sites_as_top_level_keys_and_in_a_side_file(tmp_path: Path) -> None:
    """The earlier form, `sites:` and `network_constraints:` at the top of a YAML inventory
    (Ansible skips them), still reads; so does a side file holding only them, as a second -i."""
    hosts = "all:\n  children:\n    control: {hosts: {c1: {}}}\n    compute: {hosts: {n1: {}}}\n"
    (tmp_path / "old.yml").write_text(
        hosts + "sites: {s1: [control], s2: [n1]}\nnetwork_constraints: {default_delay: 10ms}\n"
    )
    inv = load_inventory(tmp_path / "old.yml")
    assert dict(inv.sites) == {"s1": ("c1",), "s2": ("n1",)}
    assert inv.network_constraints == {"default_delay": "10ms"}
    assert inv.groups["sites"].members == ()  # to Ansible, an empty group (and a warning)
    (tmp_path / "hosts.yml").write_text(hosts)
    (tmp_path / "sites.yml").write_text("sites: {edge: [compute]}\n")
    inv = load_inventory([str(tmp_path / "hosts.yml"), str(tmp_path / "sites.yml")])
    assert dict(inv.sites) == {"edge": ("n1",)}
    (tmp_path / "both.yml").write_text(
        "all:\n  vars:\n    madeus_sites: {a: [control]}\n" + hosts[5:] + "sites: {b: [n1]}\n"
    )
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "both.yml")
    assert [d.message for d in caught.value.diagnostics] == [
        "`sites` is given twice: here, and as the variable `madeus_sites` of all"
    ]


def test_group_members_follow_ansible(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        "hosts",
        hosts="top\n[p:children]\nc\n[p]\nhp\n[c]\nhc1\nhc2\n[empty]\n",
    )
    assert inv.hosts_of("p") == ("hp", "hc1", "hc2")
    assert inv.hosts_of("all") == ("top", "hp", "hc1", "hc2")
    assert inv.hosts_of("ungrouped") == ("top",)
    assert inv.hosts_of("empty") == ()
    assert inv.has_target("empty")
    assert inv.hosts_of("hc2") == ("hc2",)
    with pytest.raises(KeyError):
        inv.hosts_of("storage")


def test_local_default_resolves_every_name_to_localhost() -> None:
    inv = Inventory.local_default()
    assert inv.has_target("anything")
    assert inv.hosts_of("control") == ("localhost",)
    assert dict(inv.sites) == {"local": ("localhost",)}
    assert inv.hosts["localhost"].connection == "local"


def test_inventory_from_dict_writes_and_loads(tmp_path: Path) -> None:
    inv = inventory_from_dict(
        {"all": {"children": {"g": {"hosts": {"h1": {"x": 1}}}}}}, str(tmp_path / "i.yml")
    )
    assert inv.hosts_of("g") == ("h1",)
    assert inv.sources == (str(tmp_path / "i.yml"),)


def test_errors_point_at_the_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    a: {x: 1\n  children: []\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(bad)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.span.path, diagnostic.span.line, diagnostic.span.col) == (str(bad), 4, 11)
    assert diagnostic.message.startswith("cannot read inventory: YAML parsing failed: ")
    # INI: ansible-core quotes the line it could not parse; madeus finds it in the file.
    for text, line, col, said in (
        ("[web]\nweb1\n[web:vars]\n  not a var\n", 4, 3, "Expected key=value, got: not a var"),
        ("[web]\nweb1 ansible_port\n", 2, 6, "host variable assignment, got: ansible_port"),
        ("[web]\nweb1\n\n[web:oops]\n", 4, 1, "Section [web:oops] has unknown type: oops"),
    ):
        ini = tmp_path / "hosts.ini"
        ini.write_text(text)
        with pytest.raises(InventoryError) as caught:
            load_inventory(ini)
        (diagnostic,) = caught.value.diagnostics
        assert (diagnostic.span.path, diagnostic.span.line, diagnostic.span.col) == (
            str(ini),
            line,
            col,
        ), text
        assert diagnostic.message.endswith(said)
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "missing.yml")
    assert render_all(caught.value.diagnostics) == (
        f"{tmp_path / 'missing.yml'}: error: cannot read inventory: no such file or directory"
    )
    sites = tmp_path / "sites.yml"
    sites.write_text("all:\n  vars:\n    madeus_sites: {s: [nope]}\n  hosts: {h: {}}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(sites)
    assert [d.message for d in caught.value.diagnostics] == [
        'site "s" names unknown group or host "nope"'
    ]


def test_inventory_verb_host_and_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hosts").write_text(INI)
    args = ["-i", str(tmp_path / "hosts")]
    ansible = Path(sys.executable).parent / "ansible-inventory"
    for extra in (["--host", "web02.example.com"], ["--graph"]):
        expected = subprocess.run(
            [str(ansible), *args, *extra],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ).stdout
        assert main(["inventory", *args, *extra]) == 0
        out = capsys.readouterr().out
        if extra[0] == "--host":
            assert json.loads(out) == json.loads(expected)
        else:
            assert out == expected


# --- the OpenStack assembly on Kolla-Ansible's own inventory --------------------------------


def kolla_plays(playbooks: Path, name: str = "site.yml") -> list[dict[str, object]]:
    """The plays of a Kolla-Ansible playbook, its imports followed."""
    import yaml

    found: list[dict[str, object]] = []
    for play in yaml.safe_load((playbooks / name).read_text()):
        if "import_playbook" in play:
            found += kolla_plays(playbooks, play["import_playbook"])
        else:
            found.append(play)
    return found


def kolla_pattern(
    plays: list[dict[str, object]], action: object, playbooks: Path, base: Path
) -> str:
    """The host pattern of the plays Kolla-Ansible runs `action` in (a role's play in site.yml,
    or every play of a playbook, Kolla's or one beside the assembly): their `hosts:`, without
    the `&enable_X_True` groups Kolla makes at run time."""
    from madeus.model import AnsibleAction

    assert isinstance(action, AnsibleAction)
    if action.form == "playbook":
        assert action.playbook is not None
        path = Path(action.playbook.replace("{kolla}/ansible", "{playbooks}"))
        path = Path(str(path).replace("{playbooks}", str(playbooks)))
        path = base / path.name if str(path.parent) == "playbooks" else path
        found = [p["hosts"] for p in kolla_plays(path.parent, path.name)]
    else:
        found = [p["hosts"] for p in plays if p.get("name") == f"Apply role {action.role}"]
        assert len(found) == 1
    names = [h for hosts in found for h in ([hosts] if isinstance(hosts, str) else hosts)]  # type: ignore[union-attr]
    return ":".join(dict.fromkeys(h for h in names if not h.startswith("&")))


@pytest.mark.parametrize(
    ("assembly_file", "step"),
    [("openstack/openstack.mad", None), ("kolla/kolla.mad", "deploy")],
)
def test_openstack_lands_where_kolla_ansible_would_put_each_service(
    kolla_inventories: Path, assembly_file: str, step: str | None
) -> None:
    """An OpenStack assembly planned with Kolla-Ansible's own `multinode`: every instance runs
    on the hosts Ansible (`ansible PATTERN --list-hosts`) gives for the plays of Kolla-Ansible
    that its transition runs (the first one, or its `deploy`)."""
    from madeus import load_file, resolve

    path = Path(__file__).resolve().parent.parent / "assemblies" / assembly_file
    assembly = load_file(path).assembly
    assert assembly is not None
    multinode = kolla_inventories / "multinode"
    deployment = resolve(assembly, load_inventory(multinode))
    playbooks = kolla_inventories / "playbooks"
    plays = kolla_plays(playbooks)
    ansible = Path(sys.executable).parent / "ansible"
    compared = {}
    for instance in deployment.instances:
        transitions = instance.component.transitions
        chosen = transitions[0] if step is None else next(t for t in transitions if t.name == step)
        pattern = kolla_pattern(plays, chosen.action, playbooks, path.parent / "playbooks")
        listed = subprocess.run(
            [str(ansible), "-i", str(multinode), pattern, "--list-hosts"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ).stdout.splitlines()[1:]  # "  hosts (N):", then one host per line
        # Sorted: Ansible orders `all`'s hosts by walking sets of groups (hashed by address),
        # differently in each process.
        compared[instance.name] = (sorted(instance.hosts), sorted(h.strip() for h in listed))
    assert {name: seen for name, (seen, _) in compared.items()} == {
        name: kolla for name, (_, kolla) in compared.items()
    }
    # Not one group for all: Kolla spreads the services over its groups.
    balancer = "haproxy" if "haproxy" in compared else "loadbalancer"
    assert compared[balancer][1] == ["network01", "network02"]
    assert compared["mariadb"][1] == ["control01", "control02", "control03"]
    assert "compute01" in compared["neutron"][1]


def test_kolla_groups_are_those_of_kolla_ansible(kolla_inventories: Path) -> None:
    """The service groups shipped with the OpenStack assembly (kolla-groups.yml, and the same
    in its example inventory) have the children Kolla-Ansible's `multinode` gives them."""
    root = Path(__file__).resolve().parent.parent / "assemblies" / "openstack"
    kolla = load_inventory(kolla_inventories / "multinode")
    shipped = load_inventory([str(root / "kolla-groups.yml")])
    example = load_inventory(root / "inventory.yml")
    service_groups = [g for g in shipped.groups if g not in ("all", "ungrouped")]
    assert len(service_groups) >= 25
    for group in service_groups:
        assert shipped.groups[group].children == kolla.groups[group].children, group
        assert example.groups[group].children == kolla.groups[group].children, group
