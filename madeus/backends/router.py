"""One backend that hands each job to the backend that can run it.

The choice is a table, so a new backend plugs in by adding a row (or by passing `backends=` /
calling `register`), never by changing the engine:

| action                    | host connection | backend   |
|---------------------------|-----------------|-----------|
| (simulate=local) any      | any             | simulate  |
| (simulate=remote) any     | local / ssh     | local / ssh, running `sleep SECONDS` |
| ShellAction, UploadAction | local           | local     |
| ShellAction, UploadAction | ssh             | ssh       |
| PythonAction              | any             | python    |
| AnsibleAction             | any             | ansible   |
| none                      | any             | none: succeeds at once |

Backends are imported and built on first use: `module:Class` from `BACKENDS`, constructed with
`Class.from_config(config)` when the class has that classmethod, else with the fields of the
`BackendConfig` (`inventory`, `simulate`, `time_scale`, `run_dir`) that its constructor names as
parameters (`SshBackend(inventory)`, `SimulateBackend(time_scale)`, `LocalBackend()`). A backend
that cannot be imported (the SSH backend without asyncssh) raises `BackendError` naming it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from madeus.backends.base import Backend, Configurable, Connects, HostCapacity, Job, Outcome
from madeus.errors import BackendError, Diagnostic, MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import Action, AnsibleAction, PythonAction, ShellAction, UploadAction

SimulateMode = Literal["local", "remote"]
WILDCARD = "*"

# Action class -> kind, the first column of the table.
ACTION_KINDS: dict[type, str] = {
    ShellAction: "shell",
    UploadAction: "upload",
    PythonAction: "python",
    AnsibleAction: "ansible",
}

# (action kind, host connection) -> backend name. WILDCARD matches any connection.
ROUTES: dict[tuple[str, str], str] = {
    ("shell", "local"): "local",
    ("shell", "ssh"): "ssh",
    ("upload", "local"): "local",
    ("upload", "ssh"): "ssh",
    ("python", WILDCARD): "python",
    ("ansible", WILDCARD): "ansible",
    ("simulate", WILDCARD): "simulate",
    ("check", WILDCARD): "check",
    # --simulate=remote: a `sleep` shell job, routed by connection like any shell job.
    ("sleep", "local"): "local",
    ("sleep", "ssh"): "ssh",
}

# Backend name -> where its class lives, imported on first use.
BACKENDS: dict[str, str] = {
    "local": "madeus.backends.local:LocalBackend",
    "python": "madeus.backends.python:PythonBackend",
    "simulate": "madeus.backends.simulate:SimulateBackend",
    "check": "madeus.backends.simulate:CheckBackend",
    "ssh": "madeus.backends.ssh:SshBackend",
    "ansible": "madeus.backends.ansible:AnsibleBackend",
}

_OK = Outcome(ok=True)
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Habits:
    """Ansible's command-line habits, as backends apply them.

    - `check`: nothing changes anywhere: Ansible actions run in check mode (`--check`, and
      `--diff` with `diff`), every other action is printed to the job's log, not run;
    - `remote_user`, `private_key`, `become`: for hosts whose inventory does not say (as with
      `ansible-playbook -u USER --private-key FILE -b`: the inventory's variables win);
    - `verbosity`: Ansible's `-v` count."""

    check: bool = False
    diff: bool = False
    remote_user: str | None = None
    private_key: str | None = None
    become: bool = False
    verbosity: int = 0

    def ansible_args(self) -> list[str]:
        """The same habits as `ansible-playbook` options."""
        args = ["--check"] if self.check else []
        args += ["--diff"] if self.diff else []
        args += ["-u", self.remote_user] if self.remote_user else []
        if self.private_key:
            args += ["--private-key", str(Path(self.private_key).expanduser().absolute())]
        args += ["-b"] if self.become else []
        args += ["-" + "v" * self.verbosity] if self.verbosity else []
        return args


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """What a backend may need to build itself (`from_config`)."""

    inventory: Inventory | None = None
    simulate: SimulateMode | None = None
    time_scale: float = 1.0
    run_dir: Path | None = None  # the run's log directory, if any (Ansible keeps artifacts)
    known_hosts: str | None = None  # None: the file beside the inventory, else ~/.ssh/known_hosts
    insecure_no_host_key_check: bool = False  # an explicit opt-out, never a fallback
    # SSH keepalives (None: the SSH backend's defaults, 5 s and 3): how fast a host that
    # stopped answering is declared lost, interval x count_max seconds.
    ssh_keepalive_interval: float | None = None
    ssh_keepalive_count_max: int | None = None
    habits: Habits = Habits()


def inventory_setting(
    explicit: float | None, inventory: Inventory, name: str, kind: type[float] | type[int]
) -> Any:
    """An explicit value, else the inventory's `all` variable `name` (as `kind`, positive),
    else None: how `madeus_ssh_keepalive_*` reach the backends of every kind of run."""
    if explicit is not None:
        return explicit
    group = inventory.groups.get("all")
    raw = group.vars.get(name) if group is not None else None
    if raw is None:
        return None
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise MadeusError(f"inventory variable {name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise MadeusError(f"inventory variable {name} must be positive, not {raw!r}")
    return value


def backend_config(
    inventory: Inventory,
    simulate: SimulateMode | None,
    time_scale: float,
    run_dir: Path | None,
    *,
    known_hosts: str | None = None,
    insecure_no_host_key_check: bool = False,
    ssh_keepalive_interval: float | None = None,
    ssh_keepalive_count_max: int | None = None,
    habits: Habits | None = None,
) -> BackendConfig:
    """The backends' configuration of a run (a deployment or a reconfiguration): the explicit
    keepalive settings, else the inventory's."""
    return BackendConfig(
        inventory,
        simulate,
        time_scale,
        run_dir,
        known_hosts=known_hosts,
        insecure_no_host_key_check=insecure_no_host_key_check,
        ssh_keepalive_interval=inventory_setting(
            ssh_keepalive_interval, inventory, "madeus_ssh_keepalive_interval", float
        ),
        ssh_keepalive_count_max=inventory_setting(
            ssh_keepalive_count_max, inventory, "madeus_ssh_keepalive_count_max", int
        ),
        habits=habits if habits is not None else Habits(),
    )


class Router:
    def __init__(
        self,
        config: BackendConfig | None = None,
        *,
        backends: Mapping[str, Backend] | None = None,
    ) -> None:
        """`backends` overrides or adds backends by name (tests, custom backends)."""
        self.config = config if config is not None else BackendConfig()
        self._backends: dict[str, Backend] = dict(backends or {})
        self._owned: list[Backend] = []  # built here, so closed here

    def register(self, name: str, backend: Backend) -> None:
        self._backends[name] = backend

    def instant(self, action: Action | None, duration: float) -> bool:
        """True when a job would succeed at once without running anything, so the engine may
        complete it synchronously (no task, no log files)."""
        if self.config.simulate is not None:
            return duration * self.config.time_scale <= 0
        return action is None

    def route(self, action: Action | None, host: Host) -> str | None:
        """The backend name for this action on this host; None when nothing needs to run."""
        if self.config.simulate == "local":
            kind = "simulate"
        elif (
            self.config.habits.check
            and action is not None
            and not isinstance(action, AnsibleAction)
        ):
            kind = "check"  # printed, not run (Ansible actions run in check mode)
        elif self.config.simulate == "remote":
            kind = "sleep"
        elif action is None:
            return None
        else:
            kind = ACTION_KINDS.get(type(action), type(action).__name__)
        name = ROUTES.get((kind, host.connection)) or ROUTES.get((kind, WILDCARD))
        if name is None:
            raise BackendError(
                f'no backend runs {kind} actions on host "{host.name}" '
                f"(connection {host.connection})"
            )
        return name

    def capacity(self, action: Action | None, host: Host) -> int | None:
        """How many such jobs the backend that runs them can run at once on `host` without
        making them wait in a queue of its own (SSH: the sessions of one connection); None
        when it has no such limit. The engine's limiter takes it, so that no job waits where
        the engine cannot see it."""
        name = self.route(action, host)
        if name is None:
            return None
        backend = self.backend(name)
        return backend.host_capacity(host) if isinstance(backend, HostCapacity) else None

    def prepare(self, pairs: Iterable[tuple[Action | None, Host]]) -> None:
        """Build every backend these (action, host) pairs need, before anything runs, so a
        missing backend is reported up front rather than after half a deployment."""
        jobs: dict[str, int] = {}
        for action, host in pairs:
            name = self.route(action, host)
            if name is not None:
                jobs[name] = jobs.get(name, 0) + 1
        for name, count in jobs.items():
            self.backend(name)
            logger.info("the %s backend runs %d jobs", name, count)

    async def ready(self, pairs: Iterable[tuple[Action | None, Host]]) -> None:
        """Build the backends these pairs need and connect to every remote host, before
        anything runs: a missing backend or an unreachable host is a BackendError now, not
        half a run later. What deployments and reconfigurations both do first."""
        pairs = list(pairs)
        self.prepare(pairs)
        unreachable = await self.connect(pairs)
        if unreachable:
            raise BackendError([Diagnostic("unreachable", m) for m in unreachable])

    async def connect(self, pairs: Iterable[tuple[Action | None, Host]]) -> list[str]:
        """Let each backend that keeps connections (one with a `connect(hosts)` method, such
        as SSH) open them to the hosts it will serve, before the run starts. Returns one
        message per host that cannot be reached."""
        hosts: dict[str, dict[str, Host]] = {}
        for action, host in pairs:
            name = self.route(action, host)
            if name is not None:
                hosts.setdefault(name, {})[host.name] = host
        problems: list[str] = []
        for name, served in hosts.items():
            backend = self.backend(name)
            if isinstance(backend, Connects):
                problems.extend(await backend.connect(served.values()))
        return problems

    def backend(self, name: str) -> Backend:
        found = self._backends.get(name)
        if found is None:
            found = self._backends[name] = self._build(name)
            self._owned.append(found)
        return found

    def _build(self, name: str) -> Backend:
        where = BACKENDS.get(name)
        if where is None:
            raise BackendError(f'unknown backend "{name}"')
        module_name, _, class_name = where.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, class_name)
        except (ImportError, AttributeError) as exc:
            raise BackendError(
                f"the {name} backend ({module_name}) is not available: {exc}"
            ) from None
        if isinstance(cls, type) and issubclass(cls, Configurable):
            return cls.from_config(self.config)
        wanted = inspect.signature(cls).parameters
        kwargs = {
            f.name: getattr(self.config, f.name) for f in fields(self.config) if f.name in wanted
        }
        backend: Backend = cls(**kwargs)
        return backend

    async def run(self, job: Job) -> Outcome:
        name = self.route(job.action, job.host)
        if name is None:
            return _OK
        if self.config.simulate == "remote":
            seconds = job.duration * self.config.time_scale
            if seconds <= 0:
                return _OK
            job = replace(job, action=ShellAction(f"sleep {seconds:.6f}"))
        return await self.backend(name).run(job)

    async def aclose(self) -> None:
        owned, self._owned = self._owned, []
        for backend in owned:
            await backend.aclose()
