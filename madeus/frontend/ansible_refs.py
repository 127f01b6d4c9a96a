"""Ansible references checked before anything runs: the playbook, role, task file of a role
and bare task file that each Ansible action names must exist.

Paths (`playbook`, `tasks`) are relative to the `.mad` file's directory, as the Ansible backend
reads them. Roles are looked up where the backend's plays find them: the `.mad` file's
directory, its `roles/`, `ANSIBLE_ROLES_PATH`, then the `roles_path` of the ansible.cfg Ansible
would read, or Ansible's default roles path. A role that is nowhere is reported only when a
roles path is configured (`ANSIBLE_ROLES_PATH`, `roles_path` in ansible.cfg) or the `.mad`
file has a `roles/` beside it: without any, the roles are meant to be installed elsewhere
later (Kolla-Ansible's, on the machine that deploys) and nothing can be said. Names holding a
placeholder (`{version}`), collection roles (`namespace.collection.role`) are not checked.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from madeus.errors import Diagnostic, did_you_mean
from madeus.frontend.checks import Locator
from madeus.model import AnsibleAction, ComponentType

_DEFAULT_ROLES_PATH = ("~/.ansible/roles", "/usr/share/ansible/roles", "/etc/ansible/roles")
_YAML = ("", ".yml", ".yaml")


def check_ansible_references(
    components: Iterable[ComponentType], environ: Mapping[str, str] | None = None
) -> list[Diagnostic]:
    """One error per Ansible reference that does not exist (see the module docstring)."""
    env = os.environ if environ is None else environ
    configured = _configured_roles_path(env)
    components = list(components)
    sources: dict[str, str] = {}
    for component in components:
        path = component.span.path
        if component.span.known and path not in sources:
            try:
                sources[path] = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
    locate = Locator(sources)
    found: list[Diagnostic] = []
    for component in components:
        base = Path(component.span.path).parent.absolute() if component.span.known else None
        for transition in component.transitions:
            action = transition.action
            if not isinstance(action, AnsibleAction) or base is None:
                continue
            where = f'transition "{transition.name}" of component "{component.name}"'
            for message, nth, text in _problems(action, base, configured):
                span = locate.in_string(action.span, nth, 0, len(text))
                found.append(Diagnostic("unknown-ansible-reference", f"{where}: {message}", span))
    return found


def _problems(
    action: AnsibleAction, base: Path, configured: list[str] | None
) -> list[tuple[str, int, str]]:
    """(message, index of the string in the action, its text) for each missing reference."""
    if action.playbook is not None:
        if _templated(action.playbook) or _path(action.playbook, base).is_file():
            return []
        return [(f'playbook "{action.playbook}" not found in {base}', 0, action.playbook)]
    if action.role is None:
        assert action.tasks is not None
        if _templated(action.tasks) or _path(action.tasks, base).is_file():
            return []
        return [(f'task file "{action.tasks}" not found in {base}', 0, action.tasks)]
    role = action.role
    if _templated(role) or ("." in role and "/" not in role):
        return []
    search = [base, base / "roles", *(Path(p).expanduser() for p in configured or ())]
    if configured is None:
        search += [Path(p).expanduser() for p in _DEFAULT_ROLES_PATH]
    directory = _role_dir(role, base, search)
    if directory is None:
        if configured is None and not (base / "roles").is_dir():
            return []  # no roles path: the roles are installed elsewhere, later
        known = [d.name for p in search if p.is_dir() for d in p.iterdir() if _is_role(d)]
        looked = ", ".join(str(p) for p in search)
        hint = did_you_mean(role, known)
        return [(f'role "{role}" not found{hint}; looked in {looked}', 0, role)]
    tasks = action.tasks
    if tasks is None or _templated(tasks):
        return []
    if any((directory / "tasks" / f"{tasks}{suffix}").is_file() for suffix in _YAML):
        return []
    files = [p.stem for p in (directory / "tasks").glob("*.y*ml")]
    hint = did_you_mean(tasks, files)
    message = f'role "{role}" has no task file "{tasks}" in {directory / "tasks"}{hint}'
    return [(message, 1, tasks)]


def _configured_roles_path(env: Mapping[str, str]) -> list[str] | None:
    """The roles path the operator configured (ANSIBLE_ROLES_PATH, else the roles_path of the
    ansible.cfg Ansible reads first), or None."""
    if env.get("ANSIBLE_ROLES_PATH"):
        return [p for p in env["ANSIBLE_ROLES_PATH"].split(os.pathsep) if p]
    candidates = [env.get("ANSIBLE_CONFIG", ""), "ansible.cfg", "~/.ansible.cfg"]
    candidates.append("/etc/ansible/ansible.cfg")
    for candidate in candidates:
        path = Path(candidate).expanduser() if candidate else None
        if path is None or not path.is_file():
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            return None
        value = parser.get("defaults", "roles_path", fallback="")
        if not value:
            return None
        return [p for p in value.split(os.pathsep) if p]
    return None


def _role_dir(role: str, base: Path, search: list[Path]) -> Path | None:
    if "/" in role:  # a path to the role
        path = _path(role, base)
        return path if path.is_dir() else None
    for directory in search:
        candidate = directory / role
        if _is_role(candidate):
            return candidate
    return None


def _is_role(path: Path) -> bool:
    return path.is_dir() and any((path / sub).is_dir() for sub in ("tasks", "meta", "handlers"))


def _path(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _templated(text: str) -> bool:
    return "{" in text
