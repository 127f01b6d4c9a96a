"""The Ansible backend: real ansible-playbook runs against a loopback sshd host and the local
host (tests/sshd_helpers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
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

from madeus.backends.ansible import AnsibleBackend, extra_vars
from madeus.backends.base import Job, Outcome
from madeus.backends.process import kill_marked_processes
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
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.ok, outcome
    assert dest.read_text() == f"{word} {greeting}\n"
    log = (project.parent / "run" / "web.configure@node-1.out").read_text()
    assert "changed: [node-1]" in log


@needs_sshd
def test_what_ansible_is_given_never_lands_on_disk(
    sshd: Sshd, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ansible reads the operator's own inventory (never a copy of it) and gets the extra
    variables (with secrets) in memory: in no file and no process's command line (the sshd
    host is on this machine: `ps` here shows its processes too); the operator's environment
    is not passed on, but for PATH, HOME, locale, SSH_AUTH_SOCK and ANSIBLE_*."""
    inventory_marker = f"inv-{uuid.uuid4().hex}"
    value_marker = f"val-{uuid.uuid4().hex}"
    env_marker = f"env-{uuid.uuid4().hex}"
    monkeypatch.setenv("MADEUS_UNRELATED_SECRET", env_marker)
    monkeypatch.setenv("ANSIBLE_MADEUS_TEST", "passed")
    sshd.extra_host_vars["db_password"] = inventory_marker
    try:
        inventory = sshd.inventory()
    finally:
        del sshd.extra_host_vars["db_password"]
    (project / "look.yml").write_text(
        "- ansible.builtin.shell: env; sleep 1.5\n"
        "  register: seen\n"
        "  delegate_to: localhost\n"
        "- ansible.builtin.copy:\n"
        '    content: "{{ seen.stdout }}\\n{{ db_password | length }} {{ secret | length }}"\n'
        "    dest: '{{ dest }}'\n"
    )
    dest = tmp_path / "seen.txt"
    job = make_job(
        inventory,
        "node-1",
        project,
        AnsibleAction(tasks="look.yml"),
        values={"dest": str(dest), "secret": value_marker},
        secrets=frozenset({value_marker}),
    )
    found: list[str] = []
    own = str(inventory.path)  # the operator's inventory file holds its own password
    started = time.time() - 2  # file times may lag the clock a little
    control = tmp_path / "control.txt"  # the scan does find a file written since then
    control.write_text(value_marker)
    assert files_holding([value_marker], tmp_path, since=started) == [f"{control}: {value_marker}"]
    control.unlink()

    async def scenario() -> Outcome:
        backend = AnsibleBackend(inventory)
        task = asyncio.create_task(backend.run(job))
        while not task.done():  # look for the markers while ansible-playbook runs
            found.extend(
                f
                for f in files_holding(
                    [inventory_marker, value_marker], tmp_path, Path("/tmp"), since=started
                )
                if not f.startswith(f"{own}:")
            )
            listing = subprocess.run(["ps", "axwwo", "args"], capture_output=True, text=True)
            found.extend(
                f"ps: {m}" for m in (inventory_marker, value_marker) if m in listing.stdout
            )
            await asyncio.sleep(0.3)
        try:
            return await task
        finally:
            await backend.aclose()

    outcome = asyncio.run(scenario())
    assert outcome.ok, outcome
    seen = dest.read_text()
    assert seen.endswith(f"\n{len(inventory_marker)} {len(value_marker)}")
    assert env_marker not in seen
    assert "ANSIBLE_MADEUS_TEST=passed" in seen
    assert "ANSIBLE_PIPELINING=True" in seen
    assert f"UserKnownHostsFile={sshd.known_hosts}" in seen
    assert found == []
    assert [
        f
        for f in files_holding(
            [inventory_marker, value_marker], tmp_path, Path("/tmp"), since=started
        )
        if not f.startswith(f"{own}:")
    ] == []
    play = yaml.safe_load((project.parent / "run" / "web.configure@node-1.play.yml").read_text())
    assert play[0]["gather_facts"] is False
    assert play[0]["tasks"][0]["ansible.builtin.import_tasks"] == str(project / "look.yml")


def files_holding(markers: list[str], *roots: Path, since: float = 0.0) -> list[str]:
    """Files under `roots` holding a marker (files may come and go meanwhile). The markers are
    new: only a file written since `since` (a time.time()) can hold one, so only those are
    read."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                with contextlib.suppress(OSError):
                    info = path.lstat()
                    if (
                        stat.S_ISREG(info.st_mode)
                        and info.st_size < 1 << 22
                        and max(info.st_mtime, info.st_ctime) >= since
                    ):
                        data = path.read_bytes()
                        found.extend(f"{path}: {m}" for m in markers if m.encode() in data)
    return found


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
    assert run_job(AnsibleBackend(inventory), job).ok
    assert Path(f"{dest}-node-1").read_text() == f"node-1,node-2 {sshd.port}"
    assert not Path(f"{dest}-node-2").exists()


@needs_sshd
def test_a_relative_inventory_path_still_finds_its_known_hosts(
    sshd: Sshd, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-i inventory.yml` from the inventory's directory: the known_hosts beside it is handed
    to Ansible as an absolute path (a relative one once failed every job with "Host key
    verification failed")."""
    monkeypatch.chdir(sshd.dir)
    from madeus.inventory import inventory_from_dict

    inventory = inventory_from_dict(sshd.inventory_dict(), "inventory.yml")
    (project / "ok.yml").write_text("- ansible.builtin.ping:\n")
    job = make_job(inventory, "node-2", project, AnsibleAction(tasks="ok.yml"))
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.ok, outcome


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
        outcome = run_job(AnsibleBackend(inventory), job)
        assert outcome.ok, (form, outcome)
        assert dest.read_text() == f"{word} x\n"


def test_failing_task_reports_its_message(project: Path, tmp_path: Path) -> None:
    (project / "fail.yml").write_text(
        "- name: check the schema\n"
        "  ansible.builtin.command: sh -c 'echo schema missing >&2; exit 2'\n"
    )
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="fail.yml"))
    outcome = run_job(AnsibleBackend(inventory), job)
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
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.message == 'task "leak" failed on localhost: password is ******'
    assert outcome.stderr_tail == "password is ******"
    for log in (project.parent / "run").iterdir():
        assert "hunter2" not in log.read_text()


def test_missing_role_is_a_plain_failure(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(role="nope", tasks="x"))
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.ok is False
    assert outcome.exit_status == 1  # the play does not load, as under ansible-playbook
    assert outcome.message.startswith(
        "ansible-playbook failed on localhost: the role 'nope' was not found in "
    )


def test_playbook_level_errors_are_reported_in_plain_words(project: Path, tmp_path: Path) -> None:
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(role="nope"))
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.ok is False
    assert outcome.exit_status == 1
    assert outcome.message.startswith(
        "ansible-playbook failed on localhost: the role 'nope' was not found in "
    )
    # Where Ansible says the error is: `Origin:` (2.19), `The offending line` (before).
    assert "Origin:" in outcome.stderr_tail or "The offending line" in outcome.stderr_tail


def test_playbook_that_matches_no_host_fails(project: Path, tmp_path: Path) -> None:
    (project / "elsewhere.yml").write_text("- hosts: databases\n  tasks: [{ping: }]\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(playbook="elsewhere.yml"))
    outcome = run_job(AnsibleBackend(inventory), job)
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
    backend = AnsibleBackend(inventory)
    outcome = run_job(backend, job)
    assert outcome == Outcome(ok=False, message=f"playbook {project / 'absent.yml'} does not exist")
    assert backend.runs == 0


def test_ansible_core_must_be_installed_beside_madeus(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ansible" else real(name, *a)
    )
    with pytest.raises(BackendError) as caught:
        AnsibleBackend(Inventory.local_default())
    assert str(caught.value) == (
        f"ansible-core is not installed in the environment that runs madeus ({sys.executable})"
    )


def test_extra_vars_leave_out_host_values_and_non_identifiers() -> None:
    values = {"port": "3306", "host.name": "db-1", "host.vars.zone": "a", "bad-name": "x"}
    assert extra_vars(values) == ({"port": "3306"}, ["bad-name"])
    assert extra_vars(values, {"port": "int"}) == ({"port": 3306}, ["bad-name"])
    # A data port that shadows a typed parameter's name keeps its text.
    assert extra_vars({"port": "auto"}, {"port": "int"}) == ({"port": "auto"}, [])


HOSTILE = [
    "10.10",
    "0755",
    "false",
    "{{ lookup('pipe', 'touch /tmp/madeus-pwned') }}",
    "$(touch /tmp/madeus-pwned) `id`; \"quoted\" 'single'\nsecond line \\ {% raw %}",
    "\u2028 line separator, \U0001f600 and a tab\t",
]


def test_values_reach_ansible_with_their_declared_types(project: Path, tmp_path: Path) -> None:
    """Text stays text (`"10.10"`, `"0755"`, templates and shell syntax, literally), numbers and
    booleans arrive as such: `when: flag` is false for a false bool."""
    (project / "types.yml").write_text(
        "- ansible.builtin.copy:\n"
        '    content: "{{ [t0, t1, t2, t3, t4, t5] | to_json }}\\n{{ n + 1 }} {{ r * 2 }} '
        '{{ n | type_debug }} {{ r | type_debug }} {{ b | type_debug }}\\n"\n'
        "    dest: '{{ dest }}'\n"
        "- ansible.builtin.file: {path: '{{ dest }}.flag', state: touch}\n"
        "  when: b\n"
    )
    dest = tmp_path / "types.txt"
    values = {f"t{i}": text for i, text in enumerate(HOSTILE)}
    values |= {"n": "41", "r": "1.25", "b": "false", "dest": str(dest)}
    inventory = Inventory.local_default()
    job = make_job(
        inventory,
        "localhost",
        project,
        AnsibleAction(tasks="types.yml"),
        values=values,
        types={"n": "int", "r": "float", "b": "bool"},
    )
    outcome = run_job(AnsibleBackend(inventory), job)
    assert outcome.ok, outcome
    first, second = dest.read_text().splitlines()[:2]
    assert json.loads(first) == HOSTILE
    assert second == "42 2.5 int float bool"
    assert not Path(f"{dest}.flag").exists()
    assert not Path("/tmp/madeus-pwned").exists()


def test_the_hosts_of_a_batch_run_one_play(project: Path, tmp_path: Path) -> None:
    """Three jobs of one transition, started together: one play over the three hosts, where
    `run_once` runs once. One batch: the hosts' parts start and end with the play."""
    inventory = three_local_hosts(tmp_path)
    log = tmp_path / "log"
    (project / "once.yml").write_text(
        '- ansible.builtin.shell: echo "once {{ ansible_play_hosts | length }}" >> {{ log }}\n'
        "  run_once: true\n"
        '- ansible.builtin.shell: echo "each {{ inventory_hostname }}" >> {{ log }}\n'
    )
    hosts = ("h1", "h2", "h3")
    jobs = [
        make_job(
            inventory,
            host,
            project,
            AnsibleAction(tasks="once.yml"),
            values={"log": str(log)},
            batch=hosts,
        )
        for host in hosts
    ]
    backend = AnsibleBackend(inventory)

    async def scenario() -> list[Outcome]:
        try:
            return list(await asyncio.gather(*(backend.run(job) for job in jobs)))
        finally:
            await backend.aclose()

    outcomes = asyncio.run(scenario())
    assert all(o.ok for o in outcomes), outcomes
    assert backend.runs == 1
    assert sorted(log.read_text().splitlines()) == ["each h1", "each h2", "each h3", "once 3"]
    assert [(o.started, o.ended) for o in outcomes] == [(None, None)] * 3


def three_local_hosts(tmp_path: Path) -> Inventory:
    path = tmp_path / "three.yml"
    path.write_text(
        "all:\n"
        "  vars:\n"
        "    ansible_connection: local\n"
        '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "  hosts: {h1: {}, h2: {}, h3: {}}\n"
    )
    from madeus.inventory import load_inventory

    return load_inventory([str(path)])


def test_killing_madeus_leaves_no_ansible_process(tmp_path: Path) -> None:
    """The worker ends when madeus dies (its standard input closes), and kills its plays."""
    seconds = unique_sleep()
    (tmp_path / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    (tmp_path / "slow.mad").write_text(
        "component Slow() {\n"
        "    places a*, b\n"
        '    transition t: a -> b  ansible tasks "slow.yml"  ~1s\n'
        "}\n"
        "assembly slow { s = Slow() }\n"
    )
    madeus = subprocess.Popen(
        [str(Path(sys.executable).parent / "madeus"), "deploy", "slow.mad", "--no-verify"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not pgrep(f"^sleep {seconds}$") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pgrep(f"^sleep {seconds}$"), "the task never started"
        workers = [
            pid
            for pid in pgrep("madeus.ansible_worker")
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1] == str(madeus.pid)
        ]
        assert workers
        madeus.kill()
        madeus.wait()
        deadline = time.monotonic() + 20
        while (pgrep(f"^sleep {seconds}$") or pgrep("madeus.ansible_worker")) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert pgrep(f"^sleep {seconds}$") == []
        assert [pid for pid in pgrep("madeus.ansible_worker") if pid in workers] == []
    finally:
        madeus.kill()
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


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


def cancel_after_start(
    backend: AnsibleBackend, job: Job, started: str, *, twice: bool = False
) -> float:
    """Start the job, wait until `pgrep -f started` finds its process, cancel (`twice`: and
    again while the first cancellation cleans up, as when the run itself is cancelled on top
    of the job); return how long the cancellation took."""

    async def scenario() -> float:
        task = asyncio.create_task(backend.run(job))
        deadline = time.monotonic() + 60
        while not pgrep(started) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        assert pgrep(started), "the task never started"
        begin = time.monotonic()
        task.cancel()
        if twice:
            await asyncio.sleep(0.2)  # the clean-up has begun
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        elapsed = time.monotonic() - begin
        await backend.aclose()
        return elapsed

    return asyncio.run(scenario())


@needs_sshd
def test_cancellation_stops_a_remote_command(
    sshd: Sshd, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"ANSIBLE_MADEUS_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    seconds = unique_sleep()
    (project / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    inventory = sshd.inventory()
    job = make_job(inventory, "node-1", project, AnsibleAction(tasks="slow.yml"))
    backend = AnsibleBackend(inventory)
    try:
        elapsed = cancel_after_start(backend, job, f"^sleep {seconds}$")
        assert elapsed < 5
        assert pgrep(seconds) == []
        assert processes_with_env(marker) == []
    finally:
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


@needs_sshd
def test_a_second_cancellation_does_not_abandon_the_clean_up(
    sshd: Sshd, project: Path, tmp_path: Path
) -> None:
    seconds = unique_sleep()
    (project / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    inventory = sshd.inventory()
    job = make_job(inventory, "node-1", project, AnsibleAction(tasks="slow.yml"))
    try:
        cancel_after_start(AnsibleBackend(inventory), job, f"^sleep {seconds}$", twice=True)
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


def test_cancellation_stops_a_local_command(project: Path, tmp_path: Path) -> None:
    seconds = unique_sleep()
    (project / "slow.yml").write_text(f"- ansible.builtin.command: sleep {seconds}\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="slow.yml"))
    backend = AnsibleBackend(inventory)
    try:
        elapsed = cancel_after_start(backend, job, f"^sleep {seconds}$")
        assert elapsed < 5
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            os.kill(pid, signal.SIGKILL)


def test_cancellation_stops_a_pause(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pause` runs in an Ansible worker on the controller, in a session of its own."""
    (project / "pause.yml").write_text("- ansible.builtin.pause: {seconds: 300}\n")
    inventory = Inventory.local_default()
    job = make_job(inventory, "localhost", project, AnsibleAction(tasks="pause.yml"))
    backend = AnsibleBackend(inventory)
    marker = f"ANSIBLE_MADEUS_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))

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
    assert (tmp_path / ".madeus/runs/r1/web.configure@localhost.play.yml").is_file()
