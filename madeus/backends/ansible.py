"""The Ansible backend: playbooks, roles and task files, run with ansible-runner.

One job (one transition on one host) is one `ansible-playbook` run, limited to that host, in a
fresh private data directory `<run dir>/ansible/<transition id>@<host>/`:

    inventory/hosts.yml   the inventory's hosts with their connection variables, their
                          (merged) group and host variables and their group memberships, so
                          `hosts: control`, `groups['mariadb']` and `hostvars[...]` work as
                          with the real inventory; the run is limited to the job's host
                          (`--limit`). `inventory_scope="host"` writes the job's host alone.
    ansible.cfg           pipelining, ControlPersist, host key checking, gathering
    project/main.yml      the generated play, for `role` and `tasks` actions
    artifacts/            ansible-runner's record of the run (stdout, command)

The three forms of `AnsibleAction`:
- `playbook FILE`: the playbook as written (relative to the `.mad` file's directory);
- `role R`: a generated play applying `roles: [R]`;
- `role R tasks T`: a generated play with `include_role: {name: R, tasks_from: T}`;
- `tasks FILE`: a generated play with `include_tasks: FILE`.

Extra variables are the job's values (parameters and data ports; `host.*` values are not
passed, Ansible has the host's own variables). They go through a 0600 file removed after the
run, never the command line (`ps` would show them). `Job.env` is passed as the variable
`madeus_env`, which generated plays use as their `environment`.

`ansible-playbook` is taken from the directory of the running Python (the same environment
as this package) and runs in a thread of its own, off the event loop. Cancellation sets the
flag ansible-runner's `cancel_callback` reads (ansible-runner then kills ansible-playbook's
process group); we wait for the runner to stop, then re-raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from madeus.backends.base import Job, Outcome
from madeus.errors import BackendError, MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import AnsibleAction

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
# How often ansible-runner's pexpect loop wakes up to ask `cancel_callback` (its default, 5 s,
# would make cancellation that slow). The loop runs in the runner's thread, not ours.
CANCEL_CHECK_INTERVAL = 0.1
_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONNECTION_VARS = (
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "ansible_connection",
)


def ansible_playbook_path() -> Path | None:
    """`ansible-playbook` beside the running interpreter (the same environment), if any."""
    found = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    return Path(found) if found is not None else None


class AnsibleBackend:
    """Runs `AnsibleAction` jobs with ansible-runner, one run per job (transition x host).

    `run_dir`: where private data directories go (`<run_dir>/ansible/...`). When None, the
    directory of the job's log files is used (the engine's run directory), else a temporary
    directory removed by `aclose`.
    """

    def __init__(
        self,
        inventory: Inventory | None = None,
        *,
        run_dir: Path | None = None,
        forks: int = 10,
        gather_facts: bool = False,
        known_hosts: str | Path | None = None,
        insecure_no_host_key_check: bool = False,
        control_persist: float = 60,
        kill_grace: float = 3,
        inventory_scope: Literal["all", "host"] = "all",
    ) -> None:
        executable = ansible_playbook_path()
        if executable is None:
            raise BackendError(
                f"ansible-playbook not found in {Path(sys.executable).parent}: install "
                "ansible-core in the environment that runs madeus"
            )
        self.executable = executable
        self.inventory = inventory if inventory is not None else Inventory.local_default()
        self.run_dir = run_dir
        self.forks = forks
        self.gather_facts = gather_facts
        self.insecure = insecure_no_host_key_check
        self.known_hosts_path = _choose_known_hosts(self.inventory, known_hosts)
        self.control_persist = control_persist
        self.kill_grace = kill_grace  # seconds between SIGTERM and SIGKILL on cancellation
        self.inventory_scope = inventory_scope
        self._full_inventory: dict[str, Any] | None = None  # the same for every job: built once
        self.runs = 0  # ansible-playbook runs started (for benchmarks and tests)
        self._tmp: Path | None = None
        if self.insecure:
            logger.warning(
                "SSH host key checking is disabled for Ansible (insecure_no_host_key_check): "
                "connections can be intercepted"
            )

    @classmethod
    def from_config(cls, config: Any) -> AnsibleBackend:
        """Built by the router from its `BackendConfig`; optional fields are read if present."""
        return cls(
            getattr(config, "inventory", None),
            run_dir=getattr(config, "run_dir", None),
            known_hosts=getattr(config, "known_hosts", None),
            insecure_no_host_key_check=bool(getattr(config, "insecure_no_host_key_check", False)),
        )

    # --- the Backend protocol ------------------------------------------------------------

    async def run(self, job: Job) -> Outcome:
        action = job.action
        if not isinstance(action, AnsibleAction):
            kind = type(action).__name__ if action is not None else "no action"
            return _failed(job, f"the Ansible backend cannot run {kind} (transition {job.id})")
        try:
            setup = self._prepare(job, action)
        except MadeusError as exc:  # a placeholder that does not resolve
            return _failed(job, str(exc))
        except OSError as exc:
            return _failed(job, f"cannot prepare the Ansible run for {job.id}: {exc}")
        if isinstance(setup, Outcome):
            return setup
        try:
            return await self._run_prepared(job, setup)
        finally:
            with contextlib.suppress(OSError):
                setup.vars_file.unlink()  # the values may hold secrets

    async def aclose(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- preparing a run -----------------------------------------------------------------

    def _base_dir(self, job: Job) -> Path:
        if self.run_dir is not None:
            return self.run_dir
        if job.stdout_path is not None:
            return job.stdout_path.parent
        if self._tmp is None:
            import tempfile

            self._tmp = Path(tempfile.mkdtemp(prefix="madeus-ansible-"))
        return self._tmp

    def _prepare(self, job: Job, action: AnsibleAction) -> _Setup | Outcome:
        host = job.host
        stem = f"{job.id}@{host.name}".replace("/", "_")
        if job.attempt > 1:
            stem += f".attempt{job.attempt}"
        # Absolute: ansible-runner runs ansible-playbook from the project directory.
        pdd = (self._base_dir(job) / "ansible" / stem).absolute()
        if pdd.exists():  # a fresh directory per run
            shutil.rmtree(pdd)
        (pdd / "inventory").mkdir(mode=0o700, parents=True)
        pdd.chmod(0o700)

        workdir = job.workdir.resolve()
        if action.form == "playbook":
            assert action.playbook is not None
            playbook = _resolve(job.render(action.playbook), workdir)
            if not playbook.is_file():
                return _failed(job, f"playbook {playbook} does not exist")
        else:
            playbook = pdd / "project" / "main.yml"
            playbook.parent.mkdir(mode=0o700)
            play = self._generated_play(job, action, workdir)
            if isinstance(play, Outcome):
                return play
            playbook.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")

        inventory_file = pdd / "inventory" / "hosts.yml"
        inventory_file.write_text(
            yaml.safe_dump(self._inventory_for(host), sort_keys=False), encoding="utf-8"
        )
        roles = [str(workdir), str(workdir / "roles")]
        if os.environ.get("ANSIBLE_ROLES_PATH"):
            roles.extend(p for p in os.environ["ANSIBLE_ROLES_PATH"].split(os.pathsep) if p)
        config = pdd / "ansible.cfg"
        config.write_text(self._ansible_cfg(roles), encoding="utf-8")

        values, skipped = extra_vars(job.values)
        if skipped:
            logger.debug("%s: values not passed to Ansible (not identifiers): %s", job.id, skipped)
        token = secrets.token_hex(16)
        # Generated plays use `madeus_env` as their `environment`, so every task process on
        # the host carries the token and can be found again on cancellation.
        values["madeus_env"] = {**job.env, "MADEUS_JOB": token}
        vars_file = pdd / "extravars.yml"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(unsafe_yaml(values))

        env_path = os.pathsep.join(
            [str(self.executable.parent), *filter(None, [os.environ.get("PATH")])]
        )
        envvars = {
            "PATH": env_path,
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_ROLES_PATH": os.pathsep.join(roles),
            # ansible-runner turns host key checking off unless the variable is set.
            "ANSIBLE_HOST_KEY_CHECKING": "False" if self.insecure else "True",
            "ANSIBLE_NOCOLOR": "1",  # the logs are plain text
            "ANSIBLE_FORCE_COLOR": "0",
            # Nothing else here: pipelining, gathering... are in ansible.cfg, which the
            # operator's own ANSIBLE_* variables override (ANSIBLE_GATHERING=smart with a fact
            # cache, for Kolla-Ansible: docs/openstack.md).
            # Inherited by ansible-playbook, its workers and local tasks (see _stop_leftovers).
            "MADEUS_JOB": token,
        }
        # ansible-runner drops the `settings` argument when env/settings is missing (2.4), so
        # the settings go in the file. Nothing secret in it.
        (pdd / "env").mkdir(mode=0o700)
        (pdd / "env" / "settings").write_text(
            json.dumps({"pexpect_timeout": CANCEL_CHECK_INTERVAL, "suppress_ansible_output": True}),
            encoding="utf-8",
        )
        return _Setup(pdd, playbook, inventory_file, vars_file, envvars, token)

    def _generated_play(
        self, job: Job, action: AnsibleAction, workdir: Path
    ) -> dict[str, Any] | Outcome:
        play: dict[str, Any] = {
            "name": f"{job.id} on {job.host.name}",
            "hosts": "all",
            "gather_facts": self.gather_facts,
            "environment": "{{ madeus_env }}",
        }
        if action.role is not None:
            role = job.render(action.role)
            if action.tasks is None:
                play["roles"] = [role]
            else:
                tasks_from = job.render(action.tasks)
                play["tasks"] = [
                    {
                        "name": f"{role} : {tasks_from}",
                        "ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from},
                    }
                ]
        else:
            assert action.tasks is not None
            tasks = _resolve(job.render(action.tasks), workdir)
            if not tasks.is_file():
                return _failed(job, f"task file {tasks} does not exist")
            play["tasks"] = [{"ansible.builtin.include_tasks": str(tasks)}]
        return play

    def _inventory_for(self, host: Host) -> dict[str, Any]:
        """The inventory Ansible gets: every host of ours (`inventory_scope="all"`, the run
        being limited to the job's host) or the job's host alone (`"host"`), each with what
        Ansible needs to reach it and its group and host variables merged (precedence already
        applied); groups list their members, so `groups['x']` and `hosts: x` work."""
        known = host.name in self.inventory.hosts and not self.inventory.local
        if self.inventory_scope == "all" and known:
            if self._full_inventory is None:
                self._full_inventory = self._inventory_of(list(self.inventory.hosts.values()))
            return self._full_inventory
        return self._inventory_of([host])

    def _inventory_of(self, hosts: list[Host]) -> dict[str, Any]:
        names = {h.name for h in hosts}
        groups: dict[str, Any] = {}
        if not self.inventory.local:
            for group in self.inventory.groups:
                if group in ("all", "ungrouped"):
                    continue
                members = [n for n in self.inventory.hosts_of(group) if n in names]
                if members:
                    groups[group] = {"hosts": dict.fromkeys(members)}
        return {
            "all": {
                "hosts": {h.name: self._host_vars(h) for h in hosts},
                "children": groups,
            }
        }

    def _host_vars(self, host: Host) -> dict[str, Any]:
        merged: dict[str, Any] = (
            self.inventory.host_vars(host.name) if host.name in self.inventory.hosts else {}
        )
        hostvars: dict[str, Any] = dict(merged)
        if host.connection == "local":
            hostvars["ansible_connection"] = "local"
            # The controller's own Python, which has what Ansible's modules need.
            hostvars.setdefault("ansible_python_interpreter", "{{ ansible_playbook_python }}")
        else:
            hostvars["ansible_host"] = host.address
            port = host.port
            if port == 22 and "ansible_port" in merged:  # set on a group
                port = int(merged["ansible_port"])
            hostvars["ansible_port"] = port
            user = host.user or merged.get("ansible_user")
            if user is not None:
                hostvars["ansible_user"] = str(user)
            key = host.key_file or merged.get("ansible_ssh_private_key_file")
            if key is not None:
                hostvars["ansible_ssh_private_key_file"] = self._key_path(str(key))
        return hostvars

    def _key_path(self, key: str) -> str:
        path = Path(key).expanduser()
        if not path.is_absolute():  # ansible would resolve it from its cwd, our project dir
            beside = Path(self.inventory.path).parent / path if self.inventory.path else None
            path = beside if beside is not None and beside.exists() else path.absolute()
        return str(path)

    def _ansible_cfg(self, roles: list[str]) -> str:
        ssh_args = [
            "-o ControlMaster=auto",
            f"-o ControlPersist={self.control_persist:g}s",
        ]
        if self.insecure:
            ssh_args += ["-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null"]
        else:
            ssh_args += [
                "-o StrictHostKeyChecking=yes",
                f"-o UserKnownHostsFile={_cfg_quote(str(self.known_hosts_path))}",
            ]
        return "\n".join(
            [
                "# Written by madeus for one run; see docs/remote.md.",
                "[defaults]",
                f"forks = {self.forks}",
                f"gathering = {'implicit' if self.gather_facts else 'explicit'}",
                f"host_key_checking = {not self.insecure}",
                "retry_files_enabled = False",
                "nocolor = True",
                "interpreter_python = auto_silent",
                f"roles_path = {os.pathsep.join(roles)}",
                "",
                "[ssh_connection]",
                "pipelining = True",
                f"ssh_args = {' '.join(ssh_args)}",
                "",
            ]
        )

    # --- running -------------------------------------------------------------------------

    async def _run_prepared(self, job: Job, setup: _Setup) -> Outcome:
        collector = _Events(job)
        cancelled = threading.Event()
        self.runs += 1
        done = _start_thread(
            f"ansible {job.id}@{job.host.name}",
            lambda: _run_runner(job, setup, self.forks, collector, cancelled),
        )
        try:
            status, rc = await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled.set()
            # ansible-runner notices within CANCEL_CHECK_INTERVAL and SIGKILLs
            # ansible-playbook's process group; wait for that, then for the cleanup.
            with contextlib.suppress(Exception):
                await asyncio.shield(done)
            await self._stop_leftovers(job, setup)
            raise
        except Exception as exc:
            return _failed(job, f"ansible-runner failed for {job.id} on {job.host.name}: {exc}")
        return collector.outcome(status, rc)

    async def _stop_leftovers(self, job: Job, setup: _Setup) -> None:
        """What killing ansible-playbook's process group leaves running: its workers (Ansible
        puts each in a session of its own) with their local processes, and the module
        processes on the remote host (no terminal: closing the SSH channel does not stop
        them). All carry `MADEUS_JOB=<token>` in their environment; kill those."""
        try:
            await asyncio.to_thread(kill_marked_processes, setup.token, self.kill_grace)
            if job.host.connection != "local":
                await self._remote_kill(job, setup)
        except Exception as exc:  # keep the CancelledError the one that propagates
            logger.warning("%s: cleaning up after cancellation failed: %s", job.id, exc)

    async def _remote_kill(self, job: Job, setup: _Setup) -> None:
        ansible = self.executable.parent / "ansible"
        script = remote_kill_script(setup.token, self.kill_grace)
        env = {**os.environ, **setup.envvars}
        env.pop("MADEUS_JOB", None)  # this cleanup run must not carry the token itself
        proc = await asyncio.create_subprocess_exec(
            str(ansible),
            job.host.name,
            "-i",
            str(setup.inventory),
            "-m",
            "ansible.builtin.raw",
            "-a",
            script,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=setup.pdd,
            env=env,
        )
        try:
            async with asyncio.timeout(self.kill_grace + 30):
                output, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            logger.warning(
                "%s: stopping remote tasks on %s failed: %s",
                job.id,
                job.host.name,
                output.decode("utf-8", "replace").strip()[-500:],
            )


def _start_thread(name: str, work: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run `work` in a thread of its own (not the default executor, whose size would silently
    cap how many Ansible transitions run at once); its result arrives in the future."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def deliver(result: _T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # delivered to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, error)

    # daemon: never keeps the interpreter alive on its own (we always wait for it anyway).
    threading.Thread(target=body, name=name, daemon=True).start()
    return done


def _run_runner(
    job: Job, setup: _Setup, forks: int, collector: _Events, cancelled: threading.Event
) -> tuple[str, int | None]:
    import ansible_runner

    try:
        runner = ansible_runner.run(
            private_data_dir=str(setup.pdd),
            playbook=str(setup.playbook),
            inventory=str(setup.inventory),
            extravars=str(setup.vars_file),
            envvars=setup.envvars,
            limit=job.host.name,
            forks=forks,
            quiet=True,
            suppress_env_files=True,
            event_handler=collector.handle,
            cancel_callback=cancelled.is_set,
        )
        return str(runner.status), runner.rc
    finally:
        collector.close()


def kill_marked_processes(token: str, grace: float) -> list[int]:
    """On this machine: SIGTERM the processes whose environment holds `MADEUS_JOB=<token>`,
    then SIGKILL those left after `grace` seconds. An ssh ControlPersist master is spared:
    other jobs share it. Returns the PIDs signalled."""
    needle = f"MADEUS_JOB={token}".encode()

    def marked() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:  # gone, or not ours
                continue
            if needle + b"\0" in environ + b"\0" and not cmdline.startswith(b"ssh: "):
                found.append(int(entry.name))
        return found

    signalled = marked()
    for pid in signalled:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = marked()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # processes give no notice of their end to non-parents
        left = marked()
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return signalled


def remote_kill_script(token: str, grace: float) -> str:
    """The same as `kill_marked_processes`, as a POSIX shell script for the remote host (run
    with Ansible's `raw` module: no Python needed). `grep -l` over every /proc/*/environ is one
    process whatever the number of processes."""
    steps = max(1, int(grace / 0.1))
    return (
        f"t=MADEUS_JOB={token}; "
        'm() { grep -lsF "$t" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }; '
        'p=$(m); [ -z "$p" ] && exit 0; kill -TERM $p 2>/dev/null; i=0; '
        f'while [ $i -lt {steps} ]; do p=$(m); [ -z "$p" ] && exit 0; sleep 0.1; '
        "i=$((i+1)); done; kill -KILL $p 2>/dev/null; exit 0"
    )


@dataclass(frozen=True, slots=True)
class _Setup:
    pdd: Path
    playbook: Path
    inventory: Path
    vars_file: Path
    envvars: dict[str, str]
    token: str  # MADEUS_JOB: marks every process of this run, here and on the host


@dataclass
class _Events:
    """Collects what a run says, in the runner's thread: every event's stdout goes to the
    job's log file as it arrives; failures are kept for the outcome."""

    job: Job
    lines: list[str] = field(default_factory=list)  # the last lines of output
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # task, message, detail
    last_stdout: str = ""
    processed: set[str] | None = None  # hosts in the final stats, when they came
    _out: int | None = None
    _err: int | None = None

    def handle(self, event: dict[str, Any]) -> bool:
        text = event.get("stdout") or ""
        if text:
            self._write("out", text + "\n")
            self.lines = (self.lines + text.splitlines())[-STDERR_TAIL_LINES * 2 :]
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res") or {}
            message = str(
                res.get("msg")
                or res.get("reason")  # include_role of a missing role, among others
                or ("unreachable" if "unreachable" in kind else "")
            )
            if isinstance(res.get("rc"), int) and res["rc"] != 0:
                message += f" (exit status {res['rc']})"
            detail = "\n".join(
                str(res[k]).rstrip() for k in ("stderr", "module_stderr") if res.get(k)
            )
            task = str(data.get("task") or "")
            self.failures.append((task, message, detail))
            self._write("err", "\n".join(filter(None, [f"{task}: {message}", detail])) + "\n")
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            if isinstance(res.get("stdout"), str):
                self.last_stdout = res["stdout"]
        elif kind == "playbook_on_stats":
            self.processed = set(data.get("processed") or {})
        return False  # the job's log has it; do not also write job_events/*.json

    def _write(self, which: str, text: str) -> None:
        path = self.job.stdout_path if which == "out" else self.job.stderr_path
        if path is None:
            return
        fd = self._out if which == "out" else self._err
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if which == "out":
                self._out = fd
            else:
                self._err = fd
        os.write(fd, self.job.redact(text).encode())

    def close(self) -> None:
        for fd in {self._out, self._err} - {None}:
            assert fd is not None
            os.close(fd)
        self._out = self._err = None

    def outcome(self, status: str, rc: int | None) -> Outcome:
        job = self.job
        host = job.host.name
        if status == "successful" and rc == 0:
            if self.processed is not None and host not in self.processed:
                return _failed(
                    job,
                    f"the playbook of {job.id} ran nothing on {host}: check its `hosts:` "
                    "patterns against the host's name and groups",
                )
            return Outcome(ok=True, exit_status=0, output=self.last_stdout.strip())
        if self.failures:
            task, message, detail = self.failures[-1]
            first = message.strip().splitlines()[0] if message.strip() else "failed"
            tail = "\n".join(filter(None, [message.strip(), detail]))
            return Outcome(
                ok=False,
                exit_status=rc,
                stderr_tail=job.redact(_tail(tail)),
                message=job.redact(f'task "{task}" failed on {host}: {first}'),
            )
        # No task failed: Ansible stopped before (a syntax error, a role not found...). Its
        # own error line says why.
        reason = next(
            (
                m.group(1)
                for line in self.lines
                if (m := re.match(r"^(?:\[ERROR\]:|ERROR!)\s*(.+)", line)) is not None
            ),
            f"exit status {rc}",
        )
        return Outcome(
            ok=False,
            exit_status=rc,
            stderr_tail=job.redact(_tail("\n".join(self.lines))),
            message=job.redact(f"ansible-playbook failed on {host}: {reason}"),
        )


def extra_vars(values: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The job's values Ansible gets as extra variables: not `host.*` (Ansible has the host's
    variables itself), and only names Ansible accepts as variables."""
    passed: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in values.items():
        if name.startswith("host."):
            continue
        if _IDENTIFIER.match(name):
            passed[name] = value
        else:
            skipped.append(name)
    return passed, skipped


class _Unsafe(str):
    __slots__ = ()


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(
    _Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value))
)


def unsafe_yaml(values: Mapping[str, Any]) -> str:
    """YAML for `-e @file`, every string tagged `!unsafe`: Ansible would otherwise evaluate
    `{{ ... }}` in a value (a parameter holding `{{ lookup('pipe', ...) }}` would run)."""

    def wrap(value: Any) -> Any:
        if isinstance(value, str):
            return _Unsafe(value)
        if isinstance(value, Mapping):
            return {str(k): wrap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [wrap(v) for v in value]
        return value

    return yaml.dump(wrap(dict(values)), Dumper=_UnsafeDumper, sort_keys=False)


def _choose_known_hosts(inventory: Inventory, explicit: str | Path | None) -> Path:
    """Same rule as the SSH backend: explicit, else beside the inventory, else ~/.ssh."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if inventory.path:
        beside = Path(inventory.path).parent / "known_hosts"
        if beside.is_file():
            return beside
    return Path("~/.ssh/known_hosts").expanduser()


def _resolve(path: str, workdir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else workdir / p


def _cfg_quote(path: str) -> str:
    # ssh_args is split like a shell command line by Ansible.
    return '"' + path.replace('"', '\\"') + '"' if " " in path else path


def _tail(text: str) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-STDERR_TAIL_LINES:])


def _failed(job: Job, message: str) -> Outcome:
    return Outcome(ok=False, message=job.redact(message))
