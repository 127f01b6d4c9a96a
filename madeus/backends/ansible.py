"""The Ansible backend: playbooks, roles and task files, run by `ansible-playbook` itself.

One job (one transition on one host) is one `ansible-playbook` run, limited to the job's host,
in a process started like every local process of madeus (`process.run_process`: a session of
its own, output streamed to the job's logs, killed for real on cancellation). It runs in the
operator's current directory, as `ansible-playbook` typed there would (relative paths in the
inventory or in `ansible.cfg` mean what they mean to Ansible), and reads the operator's Ansible
configuration, but for the settings below.

Nothing it is given is written to disk or shows in `ps`. The inventory (hosts, their groups and
merged variables, passwords included) is an anonymous in-memory file (`memfd_create`) handed to
the process as `-i /dev/fd/N`; the extra variables (parameters and data values, secrets
included) go on its standard input, which `ansible_cli.py` (the process: `python -m
madeus.ansible_cli playbook ...`, Ansible's own command line) hands to Ansible in
memory. The generated play of `role` and `tasks` actions (names only) goes to the job's log
directory as `<job>.play.yml`. No run directory, no artifacts, no
copy of the environment: the process gets `PATH`, `HOME`, the user and locale variables,
`SSH_AUTH_SOCK`, the operator's own `ANSIBLE_*` variables, and the settings madeus needs:

    ANSIBLE_STDOUT_CALLBACK=madeus_events   results as JSON lines on a pipe (see
                                            ansible_plugins/callback/madeus_events.py)
    ANSIBLE_HOST_KEY_CHECKING, ANSIBLE_SSH_ARGS   ControlPersist, and the known_hosts file
                                            madeus chose (or none, with the insecure option)
    ANSIBLE_ROLES_PATH                      the `.mad` file's directory and its roles/ first
    ANSIBLE_PIPELINING=True, ANSIBLE_GATHERING=explicit, ANSIBLE_FORKS,
    ANSIBLE_RETRY_FILES_ENABLED=False       unless the operator set them
    MADEUS_JOB=<token>                      marks every process of the run, for clean-up

The three forms of `AnsibleAction`:
- `playbook FILE`: the playbook as written (relative to the `.mad` file's directory);
- `role R`: a generated play applying `roles: [R]`;
- `role R tasks T`: a generated play with `include_role: {name: R, tasks_from: T}`;
- `tasks FILE`: a generated play with `include_tasks: FILE`.

Extra variables are the job's values (parameters and data ports; `host.*` values are not
passed, Ansible has the host's own variables), every string tagged `!unsafe` so that Ansible
never evaluates `{{ ... }}` in a value. `Job.env` is passed as the variable `madeus_env`, which
generated plays use as their `environment`.

Cancellation: the process group gets SIGTERM then SIGKILL; Ansible's workers (each in a session
of its own), their local processes and the module processes on the remote host (no terminal:
closing the SSH channel does not stop them) carry `MADEUS_JOB=<token>` in their environment and
are killed by it, here and, through `ansible -m raw`, on the host. The clean-up runs to its end
whatever further cancellations arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from madeus.backends.base import Job, Outcome
from madeus.backends.connection import known_hosts_file
from madeus.backends.process import OutputSink, despite_cancellation, run_process
from madeus.errors import BackendError, MadeusError
from madeus.inventory import Inventory
from madeus.model import AnsibleAction

if TYPE_CHECKING:
    from madeus.backends.router import BackendConfig, Habits

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
PLUGINS = Path(__file__).parent / "ansible_plugins"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The inventory of a run without one: this machine, with the controller's own Python (which has
# what Ansible's modules need).
LOCAL_INVENTORY = b"""all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""
# What an Ansible run gets of the operator's environment, besides ANSIBLE_*.
_PASSED_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TMPDIR", "SSH_AUTH_SOCK", "TZ")


def ansible_cli(command: str) -> list[str]:
    """The argv prefix that runs Ansible's `command` line (playbook, adhoc) with extra
    variables from standard input (see ansible_cli.py), in this interpreter."""
    return [sys.executable, "-m", "madeus.ansible_cli", command]


class AnsibleBackend:
    """Runs `AnsibleAction` jobs, one `ansible-playbook` run per job (transition x host).

    `runs` counts the processes started (benchmarks and tests)."""

    def __init__(
        self,
        inventory: Inventory | None = None,
        *,
        forks: int = 10,
        gather_facts: bool = False,
        known_hosts: str | Path | None = None,
        insecure_no_host_key_check: bool = False,
        control_persist: float = 60,
        kill_grace: float = 3,
        habits: Habits | None = None,
    ) -> None:
        if importlib.util.find_spec("ansible") is None:
            raise BackendError(
                f"ansible-core is not installed in the environment that runs madeus "
                f"({sys.executable})"
            )
        self.inventory = inventory if inventory is not None else Inventory.local_default()
        self.forks = forks
        self.gather_facts = gather_facts
        self.insecure = insecure_no_host_key_check
        self.known_hosts_path = known_hosts_file(self.inventory, known_hosts)
        self.control_persist = control_persist
        self.kill_grace = kill_grace  # seconds between SIGTERM and SIGKILL on cancellation
        self.habits = habits
        self.runs = 0
        self._inventory_text: bytes | None = None  # the same for every job: built once
        self._tmp: Path | None = None
        if self.insecure:
            logger.warning(
                "SSH host key checking is disabled for Ansible (insecure_no_host_key_check): "
                "connections can be intercepted"
            )

    @classmethod
    def from_config(cls, config: BackendConfig) -> AnsibleBackend:
        return cls(
            config.inventory,
            known_hosts=config.known_hosts,
            insecure_no_host_key_check=config.insecure_no_host_key_check,
            habits=config.habits,
        )

    # --- the Backend protocol ------------------------------------------------------------

    async def run(self, job: Job) -> Outcome:
        action = job.action
        if not isinstance(action, AnsibleAction):
            kind = type(action).__name__ if action is not None else "no action"
            return _failed(job, f"the Ansible backend cannot run {kind} (transition {job.id})")
        try:
            playbook = self._playbook(job, action)
            if isinstance(playbook, Outcome):
                return playbook
            token = secrets.token_hex(16)
            values, skipped = extra_vars(job.values)
            if skipped:
                logger.debug(
                    "%s: values not passed to Ansible (not identifiers): %s", job.id, skipped
                )
            # Generated plays use `madeus_env` as their `environment`, so every task process
            # on the host carries the token and can be found again on cancellation.
            values["madeus_env"] = {**job.env, "MADEUS_JOB": token}
            run = _Run(
                job,
                playbook,
                self._stdin(unsafe_yaml(values)),
                self._environment(job, token),
                token,
            )
        except MadeusError as exc:  # a placeholder that does not resolve
            return _failed(job, str(exc))
        except OSError as exc:
            return _failed(job, f"cannot prepare the Ansible run for {job.id}: {exc}")
        return await self._execute(run)

    async def aclose(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- preparing a run -----------------------------------------------------------------

    def _playbook(self, job: Job, action: AnsibleAction) -> Path | Outcome:
        workdir = job.workdir.absolute()
        if action.form == "playbook":
            assert action.playbook is not None
            playbook = _resolve(job.render(action.playbook), workdir)
            if not playbook.is_file():
                return _failed(job, f"playbook {playbook} does not exist")
            return playbook
        play: dict[str, Any] = {
            "name": f"{job.id} on {job.host.name}",
            "hosts": "all",
            "gather_facts": self.gather_facts,
            "environment": "{{ madeus_env }}",
        }
        if action.role is not None and action.tasks is None:
            play["roles"] = [job.render(action.role)]
        elif action.role is not None:
            role, tasks_from = job.render(action.role), job.render(action.tasks or "")
            include = {"name": role, "tasks_from": tasks_from}
            play["tasks"] = [
                {"name": f"{role} : {tasks_from}", "ansible.builtin.include_role": include}
            ]
        else:
            assert action.tasks is not None
            tasks = _resolve(job.render(action.tasks), workdir)
            if not tasks.is_file():
                return _failed(job, f"task file {tasks} does not exist")
            play["tasks"] = [{"ansible.builtin.include_tasks": str(tasks)}]
        text = yaml.safe_dump([play], sort_keys=False)
        if job.stdout_path is not None:  # beside the job's logs, for the operator to read
            path = job.stdout_path.with_suffix(".play.yml").absolute()
        else:  # no log directory (library use): a private one of ours, removed by aclose
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="madeus-ansible-"))
            path = self._tmp / f"{job.id}@{job.host.name}.{secrets.token_hex(4)}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return path

    def _inventory_args(self) -> tuple[list[str], list[int]]:
        """How ansible-playbook gets the inventory: the operator's own sources, with the
        options needed to read them again (vault, extra variables), so that Ansible sees
        exactly what it would see from `ansible-playbook -i ...`; without an inventory, the
        local host alone, as an in-memory file. The file descriptors to pass, to close
        after."""
        inv = self.inventory
        if not inv.local:
            sources = [a for s in inv.sources for a in ("-i", s)]
            return [*sources, *inv.options.args()], []
        fd = _memfd("madeus-inventory", LOCAL_INVENTORY)
        return ["-i", f"/dev/fd/{fd}", *inv.options.args()], [fd]

    def _stdin(self, extra_vars: str | None = None) -> bytes:
        """What `madeus.ansible_cli` reads on standard input: the operator's `-e` and vault
        password, and madeus's values (never on the command line)."""
        return json.dumps({**self.inventory.options.private(), "extra_vars": extra_vars}).encode()

    def _environment(self, job: Job, token: str) -> dict[str, str]:
        environ = os.environ
        env = {k: environ[k] for k in _PASSED_ENV if k in environ}
        env.update((k, v) for k, v in environ.items() if k.startswith(("ANSIBLE_", "LC_")))
        env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), *filter(None, [environ.get("PATH")])]
        )
        env.setdefault("PYTHONWARNINGS", "ignore")  # Python's, not Ansible's: noise in logs
        workdir = job.workdir.absolute()
        roles = [str(workdir), str(workdir / "roles")]
        if environ.get("ANSIBLE_ROLES_PATH"):
            roles.append(environ["ANSIBLE_ROLES_PATH"])
        callbacks = [str(PLUGINS / "callback")]
        if environ.get("ANSIBLE_CALLBACK_PLUGINS"):
            callbacks.append(environ["ANSIBLE_CALLBACK_PLUGINS"])
        ssh_args = ["-o ControlMaster=auto", f"-o ControlPersist={self.control_persist:g}s"]
        if self.insecure:
            ssh_args += ["-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null"]
        else:
            known = _quote_ssh_arg(str(self.known_hosts_path))
            ssh_args += ["-o StrictHostKeyChecking=yes", f"-o UserKnownHostsFile={known}"]
        env.update(
            {
                "ANSIBLE_STDOUT_CALLBACK": "madeus_events",
                "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(callbacks),
                "ANSIBLE_ROLES_PATH": os.pathsep.join(roles),
                "ANSIBLE_HOST_KEY_CHECKING": "False" if self.insecure else "True",
                "ANSIBLE_SSH_ARGS": " ".join(ssh_args),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "MADEUS_JOB": token,
            }
        )
        env.setdefault("ANSIBLE_PIPELINING", "True")
        env.setdefault("ANSIBLE_GATHERING", "implicit" if self.gather_facts else "explicit")
        env.setdefault("ANSIBLE_FORKS", str(self.forks))
        env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
        env.setdefault("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
        return env

    # --- running -------------------------------------------------------------------------

    async def _execute(self, run: _Run) -> Outcome:
        job = run.job
        events = _Events(job, check=self.habits is not None and self.habits.check)
        out = OutputSink(job.stdout_path, job.secrets, keep_all=False)
        err = OutputSink(job.stderr_path, job.secrets, keep_all=False)
        inventory, inventory_fds = self._inventory_args()
        read_end, write_end = os.pipe()
        argv = [
            *ansible_cli("playbook"),
            *inventory,
            *(self.habits.ansible_args() if self.habits is not None else []),
            "--limit",
            job.host.name,
            str(run.playbook),
        ]
        env = {**run.env, "MADEUS_EVENTS_FD": str(write_end)}
        writer_open = True

        def close_writer() -> None:  # ours: the end of the events is the child's closing it
            nonlocal writer_open
            if writer_open:
                writer_open = False
                os.close(write_end)

        self.runs += 1
        logger.info("%s: ansible-playbook %s", job.id, shlex.join(argv[len(ansible_cli("")) :]))
        try:
            code = await run_process(
                argv,
                input=run.stdin,
                out=out,
                err=err,
                env=env,
                grace=self.kill_grace,
                pass_fds=(*inventory_fds, write_end),
                pipes=[(read_end, events)],
                after_start=close_writer,
            )
        except asyncio.CancelledError:
            await despite_cancellation(self._stop_leftovers(run, inventory, inventory_fds))
            raise
        finally:
            close_writer()
            out.close()
            err.close()
            events.close()
            for fd in inventory_fds:
                os.close(fd)
        return events.outcome(code, err.tail(STDERR_TAIL_LINES))

    async def _stop_leftovers(
        self, run: _Run, inventory: list[str], inventory_fds: list[int]
    ) -> None:
        """What killing ansible-playbook's process group leaves running: its workers (Ansible
        puts each in a session of its own) with their local processes, and the module
        processes on the remote host. All carry `MADEUS_JOB=<token>` in their environment."""
        job = run.job
        try:
            await asyncio.to_thread(kill_marked_processes, run.token, self.kill_grace)
            if job.host.local:
                return
            env = {k: v for k, v in run.env.items() if k not in ("MADEUS_JOB",)}
            env["ANSIBLE_STDOUT_CALLBACK"] = "minimal"
            argv = [
                *ansible_cli("adhoc"),
                job.host.name,
                *inventory,
                "-m",
                "ansible.builtin.raw",
                "-a",
                remote_kill_script(run.token, self.kill_grace),
            ]
            said = OutputSink(None, job.secrets, keep_all=True)
            async with asyncio.timeout(self.kill_grace + 30):
                code = await run_process(
                    argv,
                    input=self._stdin(),
                    out=said,
                    err=said,
                    env=env,
                    pass_fds=inventory_fds,
                )
            if code != 0:
                logger.warning(
                    "%s: stopping remote tasks on %s failed: %s",
                    job.id,
                    job.host.name,
                    said.text().strip()[-500:],
                )
        except Exception as exc:  # keep the CancelledError the one that propagates
            logger.warning("%s: cleaning up after cancellation failed: %s", job.id, exc)


@dataclass(frozen=True, slots=True)
class _Run:
    job: Job
    playbook: Path
    stdin: bytes  # for madeus.ansible_cli: extra variables, vault password
    env: dict[str, str]
    token: str  # MADEUS_JOB: marks every process of this run, here and on the host


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data`, readable at /dev/fd/N by a child that
    inherits it: never on any filesystem. Mode 0600, so that Ansible's `script` inventory
    plugin does not take it for an executable."""
    fd = os.memfd_create(name, 0)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class _Events:
    """Reads the JSON lines of the `madeus_events` callback: a readable line per result goes
    to the job's stdout log (secrets redacted); failures are kept for the outcome."""

    job: Job
    check: bool = False  # --check: "changed" means "would change"
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # task, message, detail
    changes: list[str] = field(default_factory=list)  # what changed (or would), with diffs
    last_stdout: str = ""
    processed: set[str] | None = None  # hosts in the final stats, when they came
    unreachable: bool = False  # the host became unreachable during the run
    _pending: bytes = b""
    _diff: str = ""
    _log: OutputSink | None = None

    def write(self, data: bytes) -> None:
        data = self._pending + data
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            if line.strip():
                self._event(line)

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = str(event.get("e", ""))
        task = str(event.get("task") or "")
        if kind == "task":
            self._say(f"TASK [{task}]")
        elif kind == "diff":  # `--diff`: before the result it belongs to
            self._diff = str(event.get("diff") or "").rstrip()
            self._say(self._diff)
        elif kind == "stats":
            self.processed = set(event.get("processed") or ())
        elif kind in ("ok", "changed", "skipped", "failed", "unreachable"):
            host = str(event.get("host", ""))
            message = str(event.get("msg") or event.get("reason") or "")
            ignored = " (ignored)" if event.get("ignored") else ""
            said = "would change" if self.check and kind == "changed" else kind
            self._say(f"{said}: [{host}]{ignored}" + (f" {message}" if message else ""))
            if kind == "changed":
                diff, self._diff = self._diff, ""
                self.changes.append("\n".join(filter(None, [f"{said}: {task}", diff])))
            if kind in ("ok", "changed") and isinstance(event.get("stdout"), str):
                self.last_stdout = event["stdout"]
            if kind == "unreachable":
                self.unreachable = True
            if kind in ("failed", "unreachable") and not event.get("ignored"):
                if not message:
                    message = "unreachable" if kind == "unreachable" else "failed"
                if isinstance(event.get("rc"), int) and event["rc"] != 0:
                    message += f" (exit status {event['rc']})"
                detail = "\n".join(
                    str(event[k]).rstrip() for k in ("stderr", "module_stderr") if event.get(k)
                )
                self.failures.append((task, message, detail))
                self._say("\n".join(filter(None, [f"{task}: {message}", detail])), err=True)

    def _say(self, text: str, *, err: bool = False) -> None:
        job = self.job
        if self._log is None:
            self._log = OutputSink(job.stdout_path, job.secrets, keep_all=False)
        self._log.write((text + "\n").encode())
        if err and job.stderr_path is not None:
            sink = OutputSink(job.stderr_path, job.secrets, keep_all=False)
            sink.write((text + "\n").encode())
            sink.close()

    def close(self) -> None:
        if self._pending.strip():
            self._event(self._pending)
        self._pending = b""
        if self._log is not None:
            self._log.close()

    def outcome(self, code: int, stderr_tail: str) -> Outcome:
        job = self.job
        host = job.host.name
        if code == 0:
            if self.processed is not None and host not in self.processed:
                return _failed(
                    job,
                    f"the playbook of {job.id} ran nothing on {host}: check its `hosts:` "
                    "patterns against the host's name and groups",
                )
            said = "\n".join(self.changes) if self.check else ""
            if self.check and not said:
                said = "no change"
            return Outcome(
                ok=True,
                exit_status=0,
                output=job.redact(self.last_stdout.strip()),
                message=job.redact(said),
            )
        if self.failures:
            task, message, detail = self.failures[-1]
            first = message.strip().splitlines()[0] if message.strip() else "failed"
            tail = "\n".join(filter(None, [message.strip(), detail]))
            return Outcome(
                ok=False,
                exit_status=code,
                stderr_tail=job.redact(_tail(tail)),
                message=job.redact(f'task "{task}" failed on {host}: {first}'),
                # Unreachable in the middle of the play: what the task did is unknown.
                uncertain=self.unreachable,
            )
        # No task failed: Ansible stopped before (a syntax error, a role not found...). Its
        # own error line says why.
        reason = next(
            (
                m.group(1).strip()
                for line in stderr_tail.splitlines()
                if (m := re.match(r"^(?:\[ERROR\]:|ERROR!)\s*(.+)", line)) is not None
            ),
            f"exit status {code}" if code > 0 else f"killed by signal {-code}",
        )
        return Outcome(
            ok=False,
            exit_status=code,
            stderr_tail=stderr_tail,
            message=job.redact(f"ansible-playbook failed on {host}: {reason}"),
        )


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
    """YAML for `-e` (one flow mapping), every string tagged `!unsafe`: Ansible would
    otherwise evaluate `{{ ... }}` in a value (a parameter holding `{{ lookup('pipe', ...) }}`
    would run)."""

    def wrap(value: Any) -> Any:
        if isinstance(value, str):
            return _Unsafe(value)
        if isinstance(value, Mapping):
            return {str(k): wrap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [wrap(v) for v in value]
        return value

    text: str = yaml.dump(
        wrap(dict(values)),
        Dumper=_UnsafeDumper,
        sort_keys=False,
        default_flow_style=True,
        width=float("inf"),
    )
    return text


def _resolve(path: str, workdir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else workdir / p


def _quote_ssh_arg(path: str) -> str:
    # ssh_args is split like a shell command line by Ansible.
    return '"' + path.replace('"', '\\"') + '"' if " " in path else path


def _tail(text: str) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-STDERR_TAIL_LINES:])


def _failed(job: Job, message: str) -> Outcome:
    return Outcome(ok=False, message=job.redact(message))
