"""assemblies/kolla/kolla.mad runs the tasks that `kolla-ansible pull` and `kolla-ansible deploy`
run for its services, each once, with the same variables.

Kolla-Ansible's side is its own site.yml with its own `multinode` inventory, listed by the real
`ansible-playbook --list-tasks`; the assembly's side is the plays its transitions run (what the
Ansible backend generates, or the playbooks they name), listed the same way. `--list-tasks`
cannot see into a dynamic include (`include_tasks: "{{ kolla_action }}.yml"`), so both sides
are first copied with each include made a static import (the same file, the same variables),
keeping only what the action and the enabled services let run: an include or a play whose
condition is false for `kolla_action` or for a service's `enable_*` flag is dropped, any other
condition is kept (the task may run). Both sides get exactly the same treatment.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml
from kolla_helpers import kolla_collections, kolla_share

from madeus.backends.ansible import action_play
from madeus.frontend.load import load_file
from madeus.model import AnsibleAction

ASSEMBLY = Path(__file__).parent.parent / "assemblies" / "kolla"
# The services of the assembly, by their `enable_*` flag in Kolla's globals.
ENABLED = {
    "glance", "keystone", "loadbalancer", "mariadb", "memcached", "neutron", "nova",
    "openvswitch", "placement", "rabbitmq",
}  # fmt: skip
# Groups that only the roles' handlers make (`group_by`), for mariadb.yml's and rabbitmq.yml's
# rolling restarts: empty when pulling, as no pull task notifies a handler (checked below).
HANDLER_GROUPS = {
    "mariadb_restart",
    "mariadb_start",
    "mariadb_bootstrap_restart",
    "rabbitmq_restart",
}
_JINJA = jinja2.Environment()
_JINJA.filters["bool"] = lambda value: value in (True, "yes", "true", "True", 1)


def _verdict(condition: Any, action: str, services: set[str]) -> bool | None:
    """False when `condition` is surely false for this action and these services, True when
    surely true, None when it depends on anything else (the host, the inventory...)."""
    if isinstance(condition, bool):
        return condition
    try:
        names = jinja2.meta.find_undeclared_variables(_JINJA.parse("{{ " + str(condition) + " }}"))
    except jinja2.TemplateError:  # Ansible's own filters and tests: depends on more
        return None
    values: dict[str, Any] = {}
    for name in names:
        flag = name.removeprefix("enable_")
        if name == "kolla_action":
            values[name] = action
        elif name.startswith("enable_") and flag in services:
            values[name] = "yes" if flag in ENABLED else "no"
        else:
            return None
    return bool(_JINJA.compile_expression(str(condition))(**values))


def _runs(item: Any, action: str, services: set[str]) -> bool:
    when = item.get("when", []) if isinstance(item, dict) else []
    return all(
        _verdict(c, action, services) is not False for c in ([when], when)[isinstance(when, list)]
    )


def _static_tasks(
    tasks: list[Any], action: str, services: set[str], origin: str | None = None
) -> list[Any]:
    """Tasks with each dynamic include made a static import, those that cannot run dropped;
    tagged with their `origin` (a role's task file), which the tasks they import inherit."""
    kept = []
    for task in tasks:
        if not isinstance(task, dict) or not _runs(task, action, services):
            continue
        task = dict(task)
        if origin is not None:
            tags = task.get("tags", [])
            task["tags"] = [*([tags] if isinstance(tags, str) else tags), f"in:{origin}"]
        for key in ("block", "rescue", "always"):
            if key in task:
                task[key] = _static_tasks(task[key], action, services)
        for short in ("include_tasks", "include_role"):
            for key in (short, f"ansible.builtin.{short}"):
                if key in task:
                    for looping in ("loop", "loop_control", "with_items", "with_dict"):
                        task.pop(looping, None)  # listed once: its tasks may run per item
                    value = task.pop(key)
                    if short == "include_tasks":
                        task["import_tasks"] = value["file"] if isinstance(value, dict) else value
                    else:
                        task["import_role"] = {
                            k: v for k, v in value.items() if k not in ("apply", "public")
                        }
        kept.append(task)
    return kept


def _static_plays(plays: list[Any], action: str, services: set[str]) -> list[Any]:
    kept = []
    for play in plays:
        if "hosts" in play:
            patterns = play["hosts"] if isinstance(play["hosts"], list) else [play["hosts"]]
            if not all(_pattern_runs(p, action) for p in patterns):
                continue
            play = dict(play)
            for key in ("pre_tasks", "tasks", "post_tasks"):
                if key in play:
                    play[key] = _static_tasks(play[key], action, services)
            if "roles" in play:
                play["roles"] = [r for r in play["roles"] if _runs(r, action, services)]
        kept.append(play)
    return kept


def _pattern_runs(pattern: str, action: str) -> bool:
    """Whether a host pattern of site.yml can match a host, for this action and these services
    (the groups its grouping play makes from them; `--limit` is never used)."""
    if pattern == "all_using_limit_True":
        return False
    if action == "pull" and pattern in HANDLER_GROUPS:
        return False
    if found := re.fullmatch(r"&?kolla_action_(\w+)", pattern):
        return found[1] == action
    flags = re.findall(r"enable_([a-z0-9_]+?)_(True|False)", pattern)
    return all((flag in ENABLED) == (value == "True") for flag, value in flags)


def static_tree(share: Path, target: Path, action: str) -> Path:
    """Kolla-Ansible's `ansible/` and the assembly's playbooks, copied to `target` with every
    playbook and role task file made static for `action`."""
    shutil.copytree(share / "ansible", target / "ansible")
    shutil.copytree(ASSEMBLY / "playbooks", target / "kolla" / "playbooks")
    groups = yaml.safe_load((share / "ansible" / "site.yml").read_text())
    items = next(p for p in groups if p.get("name") == "Group hosts based on configuration")
    listed = " ".join(items["tasks"][1]["with_items"])
    services = set(re.findall(r"enable_([a-z0-9_]+?)_\{\{", listed))
    assert services | {"loadbalancer"} >= ENABLED
    for path in _yaml_files(target):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, list):
            continue
        if any(isinstance(p, dict) and ("hosts" in p or "import_playbook" in p) for p in data):
            data = _static_plays(data, action, services)
        else:
            origin = f"{path.parent.parent.name}/{path.name}"
            data = _static_tasks(data, action, services, origin)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def _yaml_files(target: Path) -> Iterator[Path]:
    yield from (target / "ansible").glob("*.yml")
    yield from (target / "ansible" / "roles").glob("*/tasks/*.yml")
    yield from (target / "kolla" / "playbooks").glob("*.yml")


def list_tasks(playbook: Path, tree: Path, action: str) -> list[str]:
    """`ansible-playbook --list-tasks`: each task as `role : name [files]`, every play
    together, `files` being the role task files it comes from, through every import."""
    ansible = tree / "ansible"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_ROLES_PATH=str(ansible / "roles"),
        ANSIBLE_LIBRARY=str(ansible / "library"),
        ANSIBLE_ACTION_PLUGINS=str(ansible / "action_plugins"),
        ANSIBLE_FILTER_PLUGINS=str(ansible / "filter_plugins"),
        ANSIBLE_MODULE_UTILS=str(ansible / "module_utils"),
        ANSIBLE_COLLECTIONS_PATH=str(kolla_collections()),
    )
    command = Path(sys.executable).parent / "ansible-playbook"
    done = subprocess.run(
        [str(command), "--list-tasks", "-i", str(ansible / "inventory" / "multinode"),
         "-e", f"kolla_action={action}", str(playbook)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    tasks = []
    for line in lines:
        if line.startswith("      "):
            name, _, tags = line.partition("\tTAGS: ")
            files = sorted(t for t in tags.strip("[]").split(", ") if t.startswith("in:"))
            tasks.append(f"{name.strip()} [{', '.join(files)}]")
    assert tasks, done.stdout
    return tasks


def assembly_playbook(tree: Path, pulls: bool) -> tuple[Path, list[AnsibleAction]]:
    """One playbook with the plays of the assembly's pull transitions, or of the others."""
    module = load_file(ASSEMBLY / "kolla.mad")
    types = {c.name: c for c in module.components}
    plays: list[dict[str, Any]] = []
    actions = []
    assert module.assembly is not None
    for instance in module.assembly.instances:
        for transition in types[instance.type].transitions:
            action = transition.action
            if not isinstance(action, AnsibleAction) or transition.name.startswith("pull") != pulls:
                continue
            actions.append(action)
            made = action_play(
                action,
                lambda text: text.replace("{kolla}", str(tree)),
                tree / "kolla",
                name=f"{instance.name}.{transition.name}",
            )
            plays.append({"import_playbook": str(made)} if isinstance(made, Path) else made)
    path = tree / ("pulls.yml" if pulls else "deploys.yml")
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path, actions


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    share = kolla_share()
    return {a: static_tree(share, tmp_path_factory.mktemp(a), a) for a in ("deploy", "pull")}


def test_the_assembly_deploys_the_tasks_of_kolla_ansible_deploy_each_once(
    trees: dict[str, Path],
) -> None:
    tree = trees["deploy"]
    kolla = collections.Counter(list_tasks(tree / "ansible" / "site.yml", tree, "deploy"))
    playbook, _ = assembly_playbook(tree, pulls=False)
    ours = collections.Counter(list_tasks(playbook, tree, "deploy"))
    assert ours - kolla == collections.Counter(), "run by the assembly, not by kolla-ansible"
    assert kolla - ours == collections.Counter(), "run by kolla-ansible, not by the assembly"
    # Not a vacuous match: every service's role is there, and handlers' restarts with them.
    roles = {task.split(" : ")[0] for task in ours if " : " in task}
    assert all("[in:" in task for task in ours if " : " in task)
    assert {"common", "loadbalancer", "mariadb", "rabbitmq", "nova", "nova-cell"} <= roles
    restart = "mariadb : Restart MariaDB container [in:mariadb/restart_services.yml]"
    assert ours[restart] == kolla[restart] == 3  # the restart, start and bootstrap plays
    assert sum(ours.values()) > 300
    guide = (ASSEMBLY.parent.parent / "docs" / "openstack.md").read_text()
    assert f"{sum(ours.values())} of them, none missing" in " ".join(guide.split())


def test_the_assembly_pulls_what_kolla_ansible_pull_pulls_each_once(
    trees: dict[str, Path],
) -> None:
    # The assembly runs pull.yml itself, kolla-ansible through the role's main.yml: compare
    # them without the main.yml files they went through.
    def pulled(tasks: list[str]) -> collections.Counter[str]:
        mains = re.compile(r"(, )?in:[\w-]+/main\.yml")
        return collections.Counter(mains.sub("", t).replace("[, ", "[") for t in tasks)

    kolla = pulled(list_tasks(trees["pull"] / "ansible" / "site.yml", trees["pull"], "pull"))
    playbook, _ = assembly_playbook(trees["deploy"], pulls=True)
    ours = pulled(list_tasks(playbook, trees["deploy"], "pull"))
    assert ours - kolla == collections.Counter()
    # What `kolla-ansible pull` runs beyond the images: what site.yml runs before any action
    # (facts, grouping, MariaDB's shard groups), which the assembly runs once, when deploying.
    assert sorted(kolla - ours) == [
        "Gather facts []",
        "Group hosts based on Kolla action []",
        "Group hosts based on enabled services []",
        "Group hosts to determine when using --limit []",
        "mariadb : Group MariaDB hosts based on shards []",
    ]
    files = {f for task in ours for f in re.findall(r"in:([\w-]+/pull\.yml)", task)}
    assert len(files) == 12  # the pull.yml of each of its roles
    roles = trees["pull"] / "ansible" / "roles"
    assert not any("notify" in (roles / f.replace("/", "/tasks/")).read_text() for f in files)


def test_the_playbooks_of_the_assembly_are_those_of_site_yml() -> None:
    """The plays the assembly keeps beside itself are site.yml's, restricted to its services;
    the plays it generates (`roles: [R]`) are site.yml's plays of those roles, which set no
    variables."""
    ansible = kolla_share() / "ansible"
    site = yaml.safe_load((ansible / "site.yml").read_text())
    by_name = {p["name"]: p for p in site if "name" in p}
    mine = {
        p.name: yaml.safe_load(p.read_text())[0] for p in (ASSEMBLY / "playbooks").glob("*.yml")
    }
    assert mine["site-groups.yml"] == by_name["Group hosts based on configuration"]
    loadbalancer = by_name["Apply role loadbalancer"]
    block = loadbalancer["tasks"][0]
    kept = [t for t in block["block"] if t["include_role"]["name"] in ENABLED | {"nova-cell"}]
    assert mine["loadbalancer.yml"] == {**loadbalancer, "tasks": [{**block, "block": kept}]}
    rabbitmq = yaml.safe_load((ansible / "rabbitmq.yml").read_text())[0]
    task = rabbitmq["tasks"][0]
    pull = {**task, "import_role": {**task["import_role"], "tasks_from": "pull"}}
    assert mine["rabbitmq-pull.yml"] == {
        **rabbitmq,
        "name": "Pull rabbitmq images",
        "tasks": [pull],
    }
    assert set(task["vars"]) >= {"role_rabbitmq_groups", "role_rabbitmq_cluster_cookie"}

    module = load_file(ASSEMBLY / "kolla.mad")
    generated = {
        t.action.role
        for c in module.components
        for t in c.transitions
        if isinstance(t.action, AnsibleAction) and t.action.role and t.action.tasks is None
    }
    assert generated == {
        "common",
        "memcached",
        "keystone",
        "glance",
        "placement",
        "openvswitch",
        "neutron",
    }
    for role in generated:
        play = next(p for p in site if any(r.get("role") == role for r in p.get("roles", [])))
        entry = next(r for r in play["roles"] if r.get("role") == role)
        assert set(entry) <= {"role", "tags", "when"} and "vars" not in play, play["name"]
