"""The Ansible backend: real ansible-runner runs against a loopback sshd host and the local
host (tests/sshd_helpers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from sshd_helpers import Sshd, running_sshd, sshd_available

from madeus.backends.ansible import AnsibleBackend, extra_vars, kill_marked_processes
from madeus.backends.base import Job, Outcome
from madeus.errors import BackendError
from madeus.inventory import Inventory
from madeus.model import AnsibleAction

needs_sshd = pytest.mark.skipif(not sshd_available(), reason="needs root and /usr/sbin/sshd")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not sshd_available():
        pytest.skip("needs root and /usr/sbin/sshd")
    with running_sshd(tmp_path_factory.mktemp("ansible-ssh"), hosts=("node-1", "node-2")) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A `.mad` file's directory: a playbook, a role with two task files, a bare task file."""
    root = tmp_path / "project"
    (root / "roles" / "motd" / "tasks").mkdir(parents=True)
    (root / "roles" / "motd" / "tasks" / "main.yml").write_text(
        "- ansible.builtin.copy: {content: \"main {{ greeting }}\\n\", dest: '{{ dest }}'}\n"
    )
    (root / "roles" / "motd" / "tasks" / "configure.yml").write_text(
        "- ansible.builtin.copy: {content: \"configure {{ greeting }}\\n\", dest: '{{ dest }}'}\n"
    )
    (root / "site.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: nodes
              tasks:
                - ansible.builtin.copy: {content: "playbook {{ greeting }}\\n", dest: "{{ dest }}"}
            """
        )
    )
    (root / "write.yml").write_text(
        "- ansible.builtin.copy: {content: \"tasks {{ greeting }}\\n\", dest: '{{ dest }}'}\n"
    )
    return root


def make_job(
    host_inventory: Inventory, host: str, project: Path, action: AnsibleAction, **kw: Any
) -> Job:
    logs = project.parent / "run"
    logs.mkdir(exist_ok=True)
    return Job(
        id="web.configure",
        instance="web",
        transition="configure",
        behaviour="deploy",
        action=action,
        host=host_inventory.hosts[host],
        stdout_path=logs / f"web.configure@{host}.out",
        stderr_path=logs / f"web.configure@{host}.err",
        workdir=project,
        **kw,
    )


def run_job(backend: AnsibleBackend, job: Job) -> Outcome:
    async def scenario() -> Outcome:
        try:
            return await backend.run(job)
        finally:
            await backend.aclose()

    return asyncio.run(scenario())


FORMS = {
    "playbook": (AnsibleAction(playbook="site.yml"), "playbook"),
    "role": (AnsibleAction(role="motd"), "main"),
    "role-tasks": (AnsibleAction(role="motd", tasks="configure"), "configure"),
    "tasks": (AnsibleAction(tasks="write.yml"), "tasks"),
}


@needs_sshd
@pytest.mark.parametrize("form", FORMS)
def test_each_form_runs_over_ssh_with_extra_vars(
    sshd: Sshd, project: Path, tmp_path: Path, form: str
) -> None:
    action, word = FORMS[form]
    dest = tmp_path / "out.txt"
    greeting = "hello $(touch /tmp/never) {{ not templated }}"
    inventory = sshd.inventory()
    values = {"greeting": greeting, "dest": str(dest), "host.name": "node-1"}
    job = make_job(inventory, "node-1", project, action, values=values)
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome.ok, outcome
    assert dest.read_text() == f"{word} {greeting}\n"
    log = (project.parent / "run" / "web.configure@node-1.out").read_text()
    assert "PLAY RECAP" in log


@needs_sshd
def test_private_data_dir_layout(sshd: Sshd, project: Path, tmp_path: Path) -> None:
    inventory = sshd.inventory()
    dest = tmp_path / "out.txt"
    job = make_job(
        inventory,
        "node-1",
        project,
        AnsibleAction(role="motd", tasks="configure"),
        values={"greeting": "hi", "dest": str(dest), "host.address": "x"},
    )
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome.ok, outcome
    pdd = tmp_path / "rd" / "ansible" / "web.configure@node-1"
    assert pdd.is_dir()
    assert not (pdd / "extravars.yml").exists()  # values may be secret: removed after
    hosts = yaml.safe_load((pdd / "inventory" / "hosts.yml").read_text())
    connection = {
        "ansible_host": "127.0.0.1",
        "ansible_port": sshd.port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(sshd.client_key),
    }
    assert hosts == {
        "all": {
            "hosts": {"node-1": connection, "node-2": connection},
            "children": {"nodes": {"hosts": {"node-1": None, "node-2": None}}},
        }
    }
    cfg = (pdd / "ansible.cfg").read_text()
    assert "pipelining = True" in cfg
    assert "ControlPersist=60s" in cfg
    assert f"UserKnownHostsFile={sshd.known_hosts}" in cfg
    assert "gathering = explicit" in cfg
    play = yaml.safe_load((pdd / "project" / "main.yml").read_text())
    assert play[0]["gather_facts"] is False
    assert play[0]["tasks"][0]["ansible.builtin.include_role"] == {
        "name": "motd",
        "tasks_from": "configure",
    }


@needs_sshd
def test_the_run_sees_the_whole_inventory_but_acts_on_the_jobs_host(
    sshd: Sshd, project: Path, tmp_path: Path
) -> None:
    """Kolla-Ansible's roles read other hosts' groups and variables (`groups['mariadb']`)."""
    (project / "peers.yml").write_text(
        "- hosts: nodes\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n"
        "        content: \"{{ groups['nodes'] | join(',') }} "
        "{{ hostvars['node-2'].ansible_port }}\"\n"
        '        dest: "{{ dest }}-{{ inventory_hostname }}"\n'
    )
    inventory = sshd.inventory()
    dest = tmp_path / "peers"
    job = make_job(
        inventory,
        "node-1",
        project,
        AnsibleAction(playbook="peers.yml"),
        values={"dest": str(dest)},
    )
    assert run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job).ok
    assert Path(f"{dest}-node-1").read_text() == f"node-1,node-2 {sshd.port}"
    assert not Path(f"{dest}-node-2").exists()


@needs_sshd
def test_host_scope_writes_the_jobs_host_alone(sshd: Sshd, project: Path, tmp_path: Path) -> None:
    inventory = sshd.inventory()
    (project / "ok.yml").write_text("- ansible.builtin.ping:\n")
    job = make_job(inventory, "node-2", project, AnsibleAction(tasks="ok.yml"))
    backend = AnsibleBackend(inventory, run_dir=tmp_path / "rd", inventory_scope="host")
    assert run_job(backend, job).ok
    hosts_file = tmp_path / "rd" / "ansible" / "web.configure@node-2" / "inventory" / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    assert list(hosts["all"]["hosts"]) == ["node-2"]
    assert hosts["all"]["children"] == {"nodes": {"hosts": {"node-2": None}}}


def test_forms_run_on_the_local_host(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    for form, (action, word) in FORMS.items():
        if form == "playbook":
            action = AnsibleAction(playbook="local.yml")
            (project / "local.yml").write_text(
                "- hosts: all\n  tasks:\n"
                '    - ansible.builtin.copy: {content: "playbook {{ greeting }}\\n", '
                "dest: '{{ dest }}'}\n"
            )
        dest = tmp_path / f"{form}.txt"
        job = make_job(
            inventory, "localhost", project, action, values={"greeting": "x", "dest": str(dest)}
        )
        outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
        assert outcome.ok, (form, outcome)
        assert dest.read_text() == f"{word} x\n"


def test_failing_task_reports_its_message(project: Path, tmp_path: Path) -> None:
    (project / "fail.yml").write_text(
        "- name: check the schema\n"
        "  ansible.builtin.command: sh -c 'echo schema missing >&2; exit 2'\n"
    )
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="fail.yml"))
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome == Outcome(
        ok=False,
        exit_status=2,
        stderr_tail="non-zero return code (exit status 2)\nschema missing",
        message=(
            'task "check the schema" failed on localhost: non-zero return code (exit status 2)'
        ),
    )
    err = (project.parent / "run" / "web.configure@localhost.err").read_text()
    assert "schema missing" in err


def test_failure_messages_are_redacted(project: Path, tmp_path: Path) -> None:
    (project / "leak.yml").write_text(
        "- name: leak\n  ansible.builtin.fail: {msg: 'password is {{ password }}'}\n"
    )
    inventory = Inventory.local_default()
    job = make_job(
        inventory,
        "localhost",
        project,
        AnsibleAction(tasks="leak.yml"),
        values={"password": "hunter2-secret"},
        secrets=frozenset({"hunter2-secret"}),
    )
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome.message == 'task "leak" failed on localhost: password is ******'
    assert outcome.stderr_tail == "password is ******"
    for log in (project.parent / "run").iterdir():
        assert "hunter2" not in log.read_text()


def test_missing_role_is_a_plain_failure(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(role="nope", tasks="x"))
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome.ok is False
    assert outcome.exit_status == 2
    assert outcome.message.startswith(
        """task "nope : x" failed on localhost: the role 'nope' was not found in """
    )


def test_playbook_level_errors_are_reported_in_plain_words(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(role="nope"))
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome.ok is False
    assert outcome.exit_status == 1
    assert outcome.message.startswith(
        "ansible-playbook failed on localhost: the role 'nope' was not found in "
    )
    assert "Origin:" in outcome.stderr_tail


def test_playbook_that_matches_no_host_fails(project: Path, tmp_path: Path) -> None:
    (project / "elsewhere.yml").write_text("- hosts: databases\n  tasks: [{ping: }]\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(playbook="elsewhere.yml"))
    outcome = run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job)
    assert outcome == Outcome(
        ok=False,
        message=(
            "the playbook of web.configure ran nothing on localhost: check its `hosts:` "
            "patterns against the host's name and groups"
        ),
    )


def test_missing_playbook_fails_before_running(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(playbook="absent.yml"))
    backend = AnsibleBackend(inventory, run_dir=tmp_path / "rd")
    outcome = run_job(backend, job)
    assert outcome == Outcome(ok=False, message=f"playbook {project / 'absent.yml'} does not exist")
    assert backend.runs == 0


def test_ansible_playbook_must_be_beside_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(BackendError) as caught:
        AnsibleBackend(Inventory.local_default(), run_dir=tmp_path)
    assert str(caught.value) == (
        f"ansible-playbook not found in {tmp_path}: install ansible-core in the environment "
        "that runs madeus"
    )


def test_extra_vars_leave_out_host_values_and_non_identifiers() -> None:
    values = {"port": "3306", "host.name": "db-1", "host.vars.zone": "a", "bad-name": "x"}
    assert extra_vars(values) == ({"port": "3306"}, ["bad-name"])


def test_private_data_dir_defaults_to_the_log_directory(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    (project / "ok.yml").write_text("- ansible.builtin.ping:\n")
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="ok.yml"), attempt=2)
    assert run_job(AnsibleBackend(inventory), job).ok
    assert (project.parent / "run" / "ansible" / "web.configure@localhost.attempt2").is_dir()


# --- cancellation -------------------------------------------------------------------------


def unique_sleep() -> str:
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def pgrep(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def processes_with_env(needle: str) -> list[int]:
    """Processes (not ssh ControlPersist masters) whose environment contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            if needle.encode() in environ and not cmdline.startswith(b"ssh: "):
                found.append(int(entry.name))
    return found


def cancel_after_start(backend: AnsibleBackend, job: Job, started: str) -> float:
    """Start the job, wait until `pgrep -f started` finds its process, cancel; return how
    long the cancellation took."""

    async def scenario() -> float:
        task = asyncio.create_task(backend.run(job))
        deadline = time.monotonic() + 60
        while not pgrep(started) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        assert pgrep(started), "the task never started"
        begin = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        elapsed = time.monotonic() - begin
        await backend.aclose()
        return elapsed

    return asyncio.run(scenario())


@needs_sshd
def test_cancellation_stops_a_remote_command(sshd: Sshd, project: Path, tmp_path: Path) -> None:
    seconds = unique_sleep()
    (project / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    inventory = sshd.inventory()
    job = make_job(inventory, "node-1", project, AnsibleAction(tasks="slow.yml"))
    backend = AnsibleBackend(inventory, run_dir=tmp_path / "rd")
    try:
        elapsed = cancel_after_start(backend, job, f"^sleep {seconds}$")
        assert elapsed < 5
        assert pgrep(seconds) == []
        pdd = tmp_path / "rd" / "ansible" / "web.configure@node-1"
        assert processes_with_env(f"ANSIBLE_CONFIG={pdd}/ansible.cfg") == []
    finally:
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


def test_cancellation_stops_a_local_command(project: Path, tmp_path: Path) -> None:
    seconds = unique_sleep()
    (project / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="slow.yml"))
    backend = AnsibleBackend(inventory, run_dir=tmp_path / "rd")
    try:
        elapsed = cancel_after_start(backend, job, f"^sleep {seconds}$")
        assert elapsed < 5
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


def test_cancellation_stops_a_pause(project: Path, tmp_path: Path) -> None:
    """`pause` runs in an Ansible worker on the controller, in a session of its own."""
    (project / "pause.yml").write_text("- ansible.builtin.pause: {seconds: 300}\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="pause.yml"))
    backend = AnsibleBackend(inventory, run_dir=tmp_path / "rd")
    pdd = tmp_path / "rd" / "ansible" / "web.configure@localhost"
    marker = f"ANSIBLE_CONFIG={pdd}/ansible.cfg"

    async def scenario() -> float:
        task = asyncio.create_task(backend.run(job))
        log = project.parent / "run" / "web.configure@localhost.out"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "pause" in log.read_text()):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert processes_with_env(marker), "ansible-playbook is not running"
        begin = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()
        return time.monotonic() - begin

    elapsed = asyncio.run(scenario())
    assert elapsed < 5
    assert processes_with_env(marker) == []


def test_kill_marked_processes_spares_others(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    marked = subprocess.Popen(["sleep", "300"], env={**os.environ, "MADEUS_JOB": token})
    other = subprocess.Popen(["sleep", "300"], env={**os.environ, "MADEUS_JOB": token + "x"})
    try:
        assert kill_marked_processes(token, grace=1) == [marked.pid]
        assert marked.wait(timeout=5) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for proc in (marked, other):
            proc.kill()
            proc.wait()


def test_extravars_file_is_private_while_running(project: Path, tmp_path: Path) -> None:
    (project / "look.yml").write_text(
        "- ansible.builtin.command: stat -c %a {{ playbook_dir }}/../extravars.yml\n"
        "  register: mode\n"
        "- ansible.builtin.copy: {content: '{{ mode.stdout }}', dest: '{{ dest }}'}\n"
    )
    inventory = Inventory.local_default()
    dest = tmp_path / "mode.txt"
    job = make_job(
        inventory, "localhost", project, AnsibleAction(tasks="look.yml"), values={"dest": str(dest)}
    )
    assert run_job(AnsibleBackend(inventory, run_dir=tmp_path / "rd"), job).ok
    assert dest.read_text() == "600"


def test_relative_run_directory(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's run directory is relative (`.madeus/runs/...`): ansible-playbook runs from
    another directory, so every path handed to it must be absolute."""
    monkeypatch.chdir(tmp_path)
    inventory = Inventory.local_default()
    (project / "ok.yml").write_text("- ansible.builtin.ping:\n")
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="ok.yml"))
    job = replace(
        job,
        stdout_path=Path(".madeus/runs/r1/web.configure@localhost.out"),
        stderr_path=Path(".madeus/runs/r1/web.configure@localhost.err"),
        workdir=project.relative_to(tmp_path),
    )
    assert run_job(AnsibleBackend(inventory), job).ok
    assert (tmp_path / ".madeus/runs/r1/ansible/web.configure@localhost/inventory").is_dir()
