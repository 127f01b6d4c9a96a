"""`madeus check` reports an Ansible reference that does not exist, at the action's string."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kolla_helpers import kolla_share

from madeus.frontend.ansible_refs import check_ansible_references
from madeus.frontend.load import load_file

COMPONENT = """\
component W(version: str = "1") {
    places a*, b, c, d, e, f, g
    transition t1: a -> b   ansible role "webb"  ~1s
    transition t2: b -> c   ansible role "web" tasks "configur"  ~1s
    transition t3: c -> d   ansible playbook "site.yml"  ~1s
    transition t4: d -> e   ansible tasks "tasks/x.yml"  ~1s
    transition t5: e -> f   ansible role "web-{version}"  ~1s
    transition t6: f -> g   ansible role "kolla.tools.web" tasks "deploy" ~1s
}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "roles" / "web" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "web" / "tasks" / "main.yml").write_text("- ansible.builtin.ping:\n")
    (tmp_path / "roles" / "web" / "tasks" / "configure.yml").write_text("- ansible.builtin.ping:\n")
    (tmp_path / "lib.mad").write_text(COMPONENT)
    (tmp_path / "site.mad").write_text('import "lib.mad"\nassembly s { w = W() }\n')
    return tmp_path


def _check(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "madeus"), "check", str(path), "--no-verify"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=path.parent,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["lib.mad", "site.mad"])
def test_missing_references_are_reported_at_their_string(project: Path, name: str) -> None:
    done = _check(project / name)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f'{project}/lib.mad:3:43: error: transition "t1" of component "W": role "webb" not found '
        f'(did you mean "web"?); looked in {project}, {project}/roles, '
        + ", ".join(
            str(Path(p).expanduser())
            for p in ("~/.ansible/roles", "/usr/share/ansible/roles", "/etc/ansible/roles")
        ),
        f'{project}/lib.mad:4:55: error: transition "t2" of component "W": role "web" has no '
        f'task file "configur" in {project}/roles/web/tasks (did you mean "configure"?)',
        f'{project}/lib.mad:5:47: error: transition "t3" of component "W": playbook "site.yml" '
        f"not found in {project}",
        f'{project}/lib.mad:6:44: error: transition "t4" of component "W": task file '
        f'"tasks/x.yml" not found in {project}',
    ]


def test_references_that_exist_pass(project: Path) -> None:
    (project / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (project / "tasks").mkdir()
    (project / "tasks" / "x.yml").write_text("- ansible.builtin.ping:\n")
    (project / "roles" / "webb" / "meta").mkdir(parents=True)
    (project / "roles" / "web" / "tasks" / "configur.yaml").write_text("[]\n")
    done = _check(project / "site.mad")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{project / 'site.mad'}: ok (1 instance, 6 transitions to deploy)\n"


def test_roles_are_found_on_the_configured_roles_path(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "webb" / "tasks").mkdir(parents=True)
    components = load_file(project / "lib.mad").components
    assert not any(
        "webb" in d.message
        for d in check_ansible_references(components, {"ANSIBLE_ROLES_PATH": str(elsewhere)})
    )
    assert any("webb" in d.message for d in check_ansible_references(components, {}))


def test_without_any_roles_path_unknown_roles_are_not_judged(tmp_path: Path) -> None:
    """Kolla-Ansible's roles are installed on the machine that deploys: a `.mad` file with no
    roles/ beside it and no roles path configured says nothing about them."""
    (tmp_path / "lib.mad").write_text(COMPONENT)
    components = load_file(tmp_path / "lib.mad").components
    found = [d.message for d in check_ansible_references(components, {})]
    assert not any('role "' in message for message in found), found
    assert len(found) == 2  # the playbook and the task file: paths beside the .mad file


@pytest.fixture(scope="module")
def kolla_roles() -> Path:
    """The roles of the Kolla-Ansible release docs/openstack.md names."""
    return kolla_share() / "ansible" / "roles"


def test_the_openstack_assembly_names_roles_and_task_files_of_its_kolla_release(
    kolla_roles: Path, tmp_path: Path
) -> None:
    """Every role and task file the OpenStack assemblies name, in every behaviour, exists in
    Kolla-Ansible's release; a name that does not is caught."""
    assembly = Path(__file__).parent.parent / "assemblies" / "openstack"
    components = load_file(assembly / "openstack.mad").components
    assert check_ansible_references(components, {"ANSIBLE_ROLES_PATH": str(kolla_roles)}) == []
    kolla = load_file(assembly.parent / "kolla" / "kolla.mad").components
    assert check_ansible_references(kolla, {"ANSIBLE_ROLES_PATH": str(kolla_roles)}) == []
    (tmp_path / "components").mkdir()
    for source in (assembly / "components").glob("*.mad"):
        text = source.read_text().replace('tasks "restart_services"', 'tasks "restart-services"')
        (tmp_path / "components" / source.name).write_text(text)
    (tmp_path / "openstack.mad").write_text((assembly / "openstack.mad").read_text())
    shutil.copytree(assembly / "reconfigure", tmp_path / "reconfigure")  # uninstall.yml
    broken = load_file(tmp_path / "openstack.mad").components
    found = check_ansible_references(broken, {"ANSIBLE_ROLES_PATH": str(kolla_roles)})
    assert [d.message.split(" in ")[0] for d in found] == [
        'transition "restart" of component "MariaDB": role "mariadb" has no task file '
        '"restart-services"'
    ]
