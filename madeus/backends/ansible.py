"""The Ansible backend: playbooks, roles and task files, run as `ansible-playbook` runs them.

The jobs of one transition that the engine starts together (`Job.batch`: one job per host of
the instance) are one play over all their hosts, so that `run_once`, `delegate_to`, `serial`,
handlers and facts behave as under `ansible-playbook` running that play. Each host's job ends
with its own outcome, timed from its first task's start to its last result.

Plays are run by a long-lived worker (`madeus/ansible_worker.py`, driven through
`ansible_pool.Pool`): Ansible is imported and the inventory loaded once per run, and each play
is a `fork` of the worker running Ansible's own playbook command line class, which keeps what
plays leave for later ones (facts, `group_by` groups, `add_host` hosts), as one
`ansible-playbook` running the plays one after another would. The worker runs in the
operator's current directory (relative paths in the inventory or in `ansible.cfg` mean what
they mean to Ansible) and reads the operator's Ansible configuration, but for the settings
below.

Nothing it is given is written to disk or shows in `ps`. The inventory is the operator's own
sources (a run without one: an anonymous in-memory file, `memfd_create`, as `-i /dev/fd/N`);
the operator's private options (`-e`, vault password) and madeus's extra variables
(parameters and data values, secrets included) travel on the worker's standard input. The
generated play of `role` and `tasks` actions (names only) goes to the log directory as
`<job>.play.yml`. The worker gets `PATH`, `HOME`, the user and locale variables,
`SSH_AUTH_SOCK`, the operator's own `ANSIBLE_*` variables, and the settings madeus needs:

    ANSIBLE_STDOUT_CALLBACK=madeus_events   results as JSON lines (see
                                            ansible_plugins/callback/madeus_events.py)
    ANSIBLE_HOST_KEY_CHECKING, ANSIBLE_SSH_ARGS   ControlPersist, and the known_hosts file
                                            madeus chose (or none, with the insecure option)
    ANSIBLE_ROLES_PATH                      the `.mad` file's directory and its roles/ first
    ANSIBLE_PIPELINING=True, ANSIBLE_GATHERING=explicit,
    ANSIBLE_RETRY_FILES_ENABLED=False       unless the operator set them

and each play runs with as many forks as it has hosts (no queue inside Ansible), and
`MADEUS_JOB=<token>` in its environment.

The three forms of `AnsibleAction`:
- `playbook FILE`: the playbook as written (relative to the `.mad` file's directory);
- `role R`: a generated play applying `roles: [R]`;
- `role R tasks T`: a generated play with `import_role: {name: R, tasks_from: T}`;
- `tasks FILE`: a generated play with `import_tasks: FILE`.

Imports are static, as site.yml's `roles:` are: a dynamic include costs Ansible a step per host.

Extra variables are the job's values (parameters and data ports; `host.*` values are not
passed, Ansible has the host's own variables), typed as the parameters are declared, strings
that Ansible could evaluate (`{{ ... }}`) tagged `!unsafe`. `Job.env` is passed as the
variable `madeus_env`, which generated plays use as their `environment`.

Cancellation (when every job of the play has been cancelled): the play's process group gets
SIGTERM then SIGKILL; Ansible's workers (each in a session of its own), their local processes
and the module processes on the remote hosts (no terminal: closing the SSH channel does not
stop them) carry `MADEUS_JOB=<token>` in their environment and are killed by it, here and,
through a `raw` task, on the hosts. The clean-up runs to its end whatever further
cancellations arrive.
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
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from madeus.backends.ansible_pool import Pool
from madeus.backends.base import Job, Outcome
from madeus.backends.connection import known_hosts_file
from madeus.backends.process import OutputSink, despite_cancellation, kill_marked_processes
from madeus.errors import BackendError, MadeusError
from madeus.inventory import Inventory
from madeus.model import AnsibleAction, read_typed

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


class AnsibleBackend:
    """Runs `AnsibleAction` jobs: the jobs of one transition that start together (the
    engine's `Job.batch`) are one play over their hosts, run by a long-lived worker
    (`ansible_pool.Pool`).

    `runs` counts the plays run (benchmarks and tests)."""

    def __init__(
        self,
        inventory: Inventory | None = None,
        *,
        forks: int | None = None,
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
        self.forks = forks  # None: as many as the play has hosts (no queue inside Ansible)
        self.gather_facts = gather_facts
        self.insecure = insecure_no_host_key_check
        self.known_hosts_path = known_hosts_file(self.inventory, known_hosts)
        self.control_persist = control_persist
        self.kill_grace = kill_grace  # seconds between SIGTERM and SIGKILL on cancellation
        self.habits = habits
        self._pools: dict[Path, Pool] = {}
        self.runs = 0
        self._gangs: dict[tuple[str, int, tuple[str, ...]], _Gang] = {}
        self._local_inventory: int | None = None  # memfd of the inventory of a run without one
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
        hosts = job.batch if job.host.name in job.batch else (job.host.name,)
        key = (job.id, job.attempt, tuple(hosts))
        gang = self._gangs.get(key)
        if gang is None:
            gang = self._gangs[key] = _Gang(set(hosts))
        if not isinstance(action, AnsibleAction):
            kind = type(action).__name__ if action is not None else "no action"
            prepared: _Prepared | Outcome = _failed(
                job, f"the Ansible backend cannot run {kind} (transition {job.id})"
            )
        else:
            try:
                prepared = self._prepare(job, action)
            except MadeusError as exc:  # a placeholder that does not resolve
                prepared = _failed(job, str(exc))
        if isinstance(prepared, Outcome):
            gang.expected.discard(job.host.name)
        else:
            gang.jobs[job.host.name] = (job, prepared)
        if gang.complete():
            del self._gangs[key]
            if gang.jobs:
                gang.task = asyncio.get_running_loop().create_task(self._execute(gang))
        if isinstance(prepared, Outcome):
            return prepared
        return await gang.wait(job.host.name)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
        if self._local_inventory is not None:
            os.close(self._local_inventory)
            self._local_inventory = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- preparing a play ----------------------------------------------------------------

    def _prepare(self, job: Job, action: AnsibleAction) -> _Prepared | Outcome:
        """What the job's host contributes to the play: the playbook (or the generated play's
        text) and the values, typed as declared."""
        workdir = job.workdir.absolute()
        values, skipped = extra_vars(job.values, job.types)
        if skipped:
            logger.debug("%s: values not passed to Ansible (not identifiers): %s", job.id, skipped)
        values["madeus_env"] = dict(job.env)
        made = action_play(action, job.render, workdir, name=job.id, gather_facts=self.gather_facts)
        if isinstance(made, Path):
            if not made.is_file():
                return _failed(job, f"playbook {made} does not exist")
            return _Prepared(workdir, values, playbook=made)
        if action.form == "tasks":
            tasks = Path(made["tasks"][0]["ansible.builtin.import_tasks"])
            if not tasks.is_file():
                return _failed(job, f"task file {tasks} does not exist")
        return _Prepared(workdir, values, text=yaml.safe_dump([made], sort_keys=False))

    def _play_file(self, job: Job, text: str, suffix: str = ".play.yml") -> Path:
        if job.stdout_path is not None:  # beside the job's logs, for the operator to read
            path = job.stdout_path.with_suffix(suffix).absolute()
        else:  # no log directory (library use): a private one of ours, removed by aclose
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="madeus-ansible-"))
            path = self._tmp / f"{job.id}@{job.host.name}.{secrets.token_hex(4)}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return path

    # --- the worker ----------------------------------------------------------------------

    async def _pool(self, workdir: Path) -> Pool:
        """The worker for plays whose roles are found from `workdir` (the `.mad` file's
        directory): one per run in practice."""
        pool = self._pools.get(workdir)
        if pool is None:
            args, fds = self._inventory_args()
            argv = [sys.executable, "-m", "madeus.ansible_worker", *args]
            if self.habits is not None:
                argv += self.habits.ansible_args()
            env = self._environment(workdir)
            private = json.dumps(self.inventory.options.private()).encode()
            pool = self._pools[workdir] = Pool(argv, env, private, pass_fds=fds)
        await pool.start()
        return pool

    def _inventory_args(self) -> tuple[list[str], tuple[int, ...]]:
        """How the worker gets the inventory: the operator's own sources, with the options
        needed to read them again (vault, extra variables), so that Ansible sees exactly what
        it would see from `ansible-playbook -i ...`; without an inventory, the local host
        alone, as an in-memory file."""
        inv = self.inventory
        if not inv.local:
            sources = [a for s in inv.sources for a in ("-i", s)]
            return [*sources, *inv.options.args()], ()
        if self._local_inventory is None:
            self._local_inventory = _memfd("madeus-inventory", LOCAL_INVENTORY)
        fd = self._local_inventory
        return ["-i", f"/dev/fd/{fd}", *inv.options.args()], (fd,)

    def _environment(self, workdir: Path) -> dict[str, str]:
        environ = os.environ
        env = {k: environ[k] for k in _PASSED_ENV if k in environ}
        env.update((k, v) for k, v in environ.items() if k.startswith(("ANSIBLE_", "LC_")))
        env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), *filter(None, [environ.get("PATH")])]
        )
        env.setdefault("PYTHONWARNINGS", "ignore")  # Python's, not Ansible's: noise in logs
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
            }
        )
        env.setdefault("ANSIBLE_PIPELINING", "True")
        env.setdefault("ANSIBLE_GATHERING", "implicit" if self.gather_facts else "explicit")
        env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
        env.setdefault("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
        return env

    # --- running -------------------------------------------------------------------------

    async def _execute(self, gang: _Gang) -> None:
        """The gang's play; jobs whose values or play differ (a `{host.*}` placeholder in a
        role's name) make plays of their own, run at the same time."""
        groups: dict[str, list[tuple[Job, _Prepared]]] = {}
        for job, prepared in gang.jobs.values():
            groups.setdefault(prepared.key(), []).append((job, prepared))
        async with asyncio.TaskGroup() as tg:
            for members in groups.values():
                tg.create_task(self._play(gang, members))

    async def _play(self, gang: _Gang, members: list[tuple[Job, _Prepared]]) -> None:
        jobs = [job for job, _ in members]
        first, prepared = members[0]
        check = self.habits is not None and self.habits.check
        events = {job.host.name: _Events(job, check=check) for job in jobs}
        printed = OutputSink(None, first.secrets, keep_all=False)
        token = secrets.token_hex(16)
        stats: dict[str, list[str]] = {}

        def sink(event: dict[str, Any]) -> None:
            kind = event.get("e")
            if kind == "output":
                text = str(event.get("text") or "").encode()
                printed.write(text)
                for each in events.values():
                    each.printed(text)
            elif kind == "stats":
                stats.update({k: list(v) for k, v in event.items() if isinstance(v, list)})
            elif kind in ("task", "batch"):
                for each in events.values():
                    each.event(event)
            else:
                target = events.get(str(event.get("host", "")))
                if target is not None:
                    target.event(event)

        try:
            pool = await self._pool(prepared.workdir)
            playbook = prepared.playbook
            if playbook is None:
                playbook = self._play_file(first, prepared.text)
            values = {**prepared.values, "madeus_env": {**prepared.env, "MADEUS_JOB": token}}
            hosts = [job.host.name for job in jobs]
            request = {
                "playbook": str(playbook),
                "hosts": hosts,
                "extra_vars": typed_yaml(values),
                "token": token,
                "forks": self.forks or len(jobs),
            }
            logger.info("%s: ansible-playbook --limit %s %s", first.id, ",".join(hosts), playbook)
            self.runs += 1
            try:
                code = await pool.play(request, sink, grace=self.kill_grace)
            except asyncio.CancelledError:
                await despite_cancellation(self._stop_leftovers(pool, jobs, token))
                raise
        except OSError as exc:  # the play file, the worker's start
            for job in jobs:
                message = f"cannot prepare the Ansible run for {job.id}: {exc}"
                gang.done(job.host.name, _failed(job, message))
            return
        except Exception as exc:  # the attempt fails with it (attempt_job says how)
            gang.fail([job.host.name for job in jobs], exc)
            return
        finally:
            printed.close()
            for each in events.values():
                each.close()
        tail = printed.tail(STDERR_TAIL_LINES)
        for job in jobs:
            gang.done(job.host.name, events[job.host.name].outcome(code, tail, stats))

    async def _stop_leftovers(self, pool: Pool, jobs: list[Job], token: str) -> None:
        """What stopping the play's process leaves running: Ansible's workers (each in a
        session of its own) with their local processes, and the module processes on the
        remote hosts. All carry `MADEUS_JOB=<token>` in their environment."""
        try:
            await asyncio.to_thread(kill_marked_processes, token, self.kill_grace)
            remote = [job.host.name for job in jobs if not job.host.local]
            if not remote:
                return
            play = [
                {
                    "name": "stop what a cancelled play left running",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [{"ansible.builtin.raw": remote_kill_script(token, self.kill_grace)}],
                }
            ]
            path = self._play_file(jobs[0], yaml.safe_dump(play, sort_keys=False), ".stop.yml")
            said = OutputSink(None, jobs[0].secrets, keep_all=True)
            failed: list[str] = []

            def sink(event: dict[str, Any]) -> None:
                if event.get("e") == "output":
                    said.write(str(event.get("text") or "").encode())
                elif event.get("e") in ("failed", "unreachable"):
                    failed.append(str(event.get("host")))

            request = {"playbook": str(path), "hosts": remote, "token": secrets.token_hex(16)}
            async with asyncio.timeout(self.kill_grace + 30):
                code = await pool.play({**request, "forks": len(remote)}, sink, grace=1)
            if code != 0:
                logger.warning(
                    "%s: stopping remote tasks on %s failed: %s",
                    jobs[0].id,
                    ", ".join(failed) or ", ".join(remote),
                    said.text().strip()[-500:],
                )
        except Exception as exc:  # keep the CancelledError the one that propagates
            logger.warning("%s: cleaning up after cancellation failed: %s", jobs[0].id, exc)


@dataclass(frozen=True, slots=True)
class _Prepared:
    workdir: Path  # where roles are found: the `.mad` file's directory
    values: dict[str, Any]  # extra variables, `madeus_env` (the job's env) among them
    playbook: Path | None = None  # the playbook form
    text: str = ""  # the generated play of the other forms

    @property
    def env(self) -> dict[str, str]:
        return dict(self.values.get("madeus_env") or {})

    def key(self) -> str:
        """Jobs with the same key run as one play."""
        return json.dumps(
            [str(self.workdir), str(self.playbook), self.text, self.values],
            sort_keys=True,
            default=str,
        )


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


async def _ended(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(BaseException):
        await task


class _Gang:
    """The jobs of one transition that started together, waiting for their play: it starts
    when all have joined, and is stopped when all have been cancelled."""

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.jobs: dict[str, tuple[Job, _Prepared]] = {}
        self.results: dict[str, asyncio.Future[Outcome]] = {}
        self.task: asyncio.Task[None] | None = None
        self.waiting = 0

    def complete(self) -> bool:
        return self.task is None and set(self.jobs) >= self.expected

    def _future(self, host: str) -> asyncio.Future[Outcome]:
        found = self.results.get(host)
        if found is None:
            found = self.results[host] = asyncio.get_running_loop().create_future()
        return found

    def done(self, host: str, outcome: Outcome) -> None:
        found = self._future(host)
        if not found.done():
            found.set_result(outcome)

    def fail(self, hosts: list[str], exc: BaseException) -> None:
        for host in hosts:
            found = self._future(host)
            if not found.done():
                found.set_exception(exc)

    async def wait(self, host: str) -> Outcome:
        result = self._future(host)
        self.waiting += 1
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            self.waiting -= 1
            task = self.task
            if self.waiting == 0 and task is not None and not task.done():
                task.cancel()
                await despite_cancellation(_ended(task))
            raise
        finally:
            if result.done() and not result.cancelled():
                result.exception()  # retrieved, whoever waits


@dataclass
class _Events:
    """One host's part of a play: a readable line per event goes to the job's stdout log
    (secrets redacted); failures, changes, output and times are kept for the outcome."""

    job: Job
    check: bool = False  # --check: "changed" means "would change"
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # task, message, detail
    changes: list[str] = field(default_factory=list)  # what changed (or would), with diffs
    last_stdout: str = ""
    unreachable: bool = False  # the host became unreachable during the run
    # When the host's part started, if later than the play (a `serial` batch after the
    # first), and when it ended, if before the play did (a batch before the last, a failure):
    # monotonic clock. Otherwise the job's own start and end are the host's.
    started: float | None = None
    ended: float | None = None
    matched: bool = False  # a play of the playbook ran on the host
    _batches: int = 0  # batches started so far (a play without `serial` is one batch)
    _last: float | None = None  # its last result
    _diff: str = ""
    _log: OutputSink | None = None
    _err: OutputSink | None = None

    def event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("e", ""))
        task = str(event.get("task") or "")
        at = event.get("t")
        if kind == "batch":
            self._batches += 1
            if self.job.host.name in (event.get("hosts") or ()):
                if not self.matched and self._batches > 1 and isinstance(at, float):
                    self.started = at  # its batch began after others had run
                self.matched = True
                self.ended = None
            elif self.matched and self.ended is None:
                self.ended = at if isinstance(at, float) else None  # its batch is over
        elif kind == "task":
            self._say(f"TASK [{task}]")
        elif kind == "diff":  # `--diff`: before the result it belongs to
            self._diff = str(event.get("diff") or "").rstrip()
            self._say(self._diff)
        elif kind in ("ok", "changed", "skipped", "failed", "unreachable"):
            self._last = at if isinstance(at, float) else None
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
                self.ended = self._last  # out of the play from now on
                self._say("\n".join(filter(None, [f"{task}: {message}", detail])), err=True)

    def printed(self, data: bytes) -> None:
        """What Ansible printed (warnings, errors): to the job's stderr log."""
        if self._err is None:
            self._err = OutputSink(self.job.stderr_path, self.job.secrets, keep_all=False)
        self._err.write(data)

    def _say(self, text: str, *, err: bool = False) -> None:
        job = self.job
        if self._log is None:
            self._log = OutputSink(job.stdout_path, job.secrets, keep_all=False)
        self._log.write((text + "\n").encode())
        if err:
            self.printed((text + "\n").encode())

    def close(self) -> None:
        for sink in (self._log, self._err):
            if sink is not None:
                sink.close()

    def outcome(self, code: int, printed: str, stats: Mapping[str, list[str]]) -> Outcome:
        """The host's outcome from the play's exit status and final statistics."""
        job = self.job
        host = job.host.name
        failed = host in stats.get("failures", ()) or host in stats.get("unreachable", ())
        if code == 0 and not self.matched:
            return _failed(
                job,
                f"the playbook of {job.id} ran nothing on {host}: check its `hosts:` "
                "patterns against the host's name and groups",
            )
        if self.matched and (code == 0 or (stats and not failed)):
            said = "\n".join(self.changes) if self.check else ""
            if self.check and not said:
                said = "no change"
            return Outcome(
                ok=True,
                exit_status=0,
                output=job.redact(self.last_stdout.strip()),
                message=job.redact(said),
                started=self.started,
                ended=self.ended,
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
                started=self.started,
                ended=self.ended,
            )
        # No task failed: Ansible stopped before (a syntax error, a role not found...). Its
        # own error line says why.
        reason = next(
            (
                m.group(1).strip()
                for line in printed.splitlines()
                if (m := re.match(r"^(?:\[ERROR\]:|ERROR!)\s*(.+)", line)) is not None
            ),
            f"exit status {code}" if code > 0 else f"killed by signal {-code}",
        )
        return Outcome(
            ok=False,
            exit_status=code,
            stderr_tail=job.redact(printed),
            message=job.redact(f"ansible-playbook failed on {host}: {reason}"),
        )


def action_play(
    action: AnsibleAction,
    render: Callable[[str], str],
    workdir: Path,
    *,
    name: str,
    gather_facts: bool = False,
) -> Path | dict[str, Any]:
    """What an Ansible action runs: its playbook's path, or the play generated for it (the
    module docstring). `render` fills the placeholders; relative paths are from `workdir`."""
    if action.form == "playbook":
        assert action.playbook is not None
        return _resolve(render(action.playbook), workdir)
    play: dict[str, Any] = {
        "name": name,
        "hosts": "all",
        "gather_facts": gather_facts,
        "environment": "{{ madeus_env }}",
    }
    if action.role is not None and action.tasks is None:
        play["roles"] = [render(action.role)]
    elif action.role is not None:
        role, tasks_from = render(action.role), render(action.tasks or "")
        imported = {"name": role, "tasks_from": tasks_from}
        play["tasks"] = [
            {"name": f"{role} : {tasks_from}", "ansible.builtin.import_role": imported}
        ]
    else:
        assert action.tasks is not None
        tasks = _resolve(render(action.tasks), workdir)
        play["tasks"] = [{"ansible.builtin.import_tasks": str(tasks)}]
    return play


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


def extra_vars(
    values: Mapping[str, str], types: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The job's values Ansible gets as extra variables, typed as declared (`int`, `float`,
    `bool`; text otherwise): not `host.*` (Ansible has the host's variables itself), and only
    names Ansible accepts as variables."""
    passed: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in values.items():
        if name.startswith("host."):
            continue
        if _IDENTIFIER.match(name):
            passed[name] = typed(value, (types or {}).get(name, "str"))
        else:
            skipped.append(name)
    return passed, skipped


def typed(text: str, kind: str) -> Any:
    """A value as its declared type (values were checked against it when resolved; one that
    still does not read as it, a data port shadowing a parameter's name, stays text)."""
    try:
        return read_typed(text, kind)
    except ValueError:
        return text


class _Quoted(yaml.SafeDumper):
    pass


class _Unsafe(str):
    __slots__ = ()


_Quoted.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
)
_Quoted.add_representer(
    _Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value), style='"')
)


def typed_yaml(values: Mapping[str, Any]) -> str:
    """YAML for `-e` (one flow mapping), types kept: every string double-quoted (`"10.10"`
    stays text), and those holding a brace tagged `!unsafe`, so that Ansible never evaluates
    `{{ ... }}` in a value (a parameter holding `{{ lookup('pipe', ...) }}` would run). Only
    those: ansible-core 2.19 reads a tagged scalar's type again from its text (`!unsafe
    "10.10"` becomes 10.1), which a string with a brace never changes."""

    def wrap(value: Any) -> Any:
        if isinstance(value, str):
            return _Unsafe(value) if "{" in value else value
        if isinstance(value, Mapping):
            return {str(k): wrap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [wrap(v) for v in value]
        return value

    text: str = yaml.dump(
        wrap(dict(values)),
        Dumper=_Quoted,
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
