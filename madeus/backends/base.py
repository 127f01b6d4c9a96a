"""The contract between the engine and the things that run actions.

The engine hands a backend one `Job` (one transition on one host) at a time, possibly many
concurrently, and awaits an `Outcome`. A backend never decides scheduling; it runs, streams the
action's output to the job's log files, and reports. Cancellation (`CancelledError` raised into
`run`) must stop the action for real (kill the process, close the channel) and then re-raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from madeus.inventory import Host
from madeus.model import Action
from madeus.shell import shell_script
from madeus.template import render

if TYPE_CHECKING:
    from madeus.backends.router import BackendConfig


@dataclass(frozen=True, slots=True)
class Job:
    id: str  # transition id, `instance.transition`
    instance: str
    transition: str
    behaviour: str
    action: Action | None
    host: Host
    # Every value an action may refer to as `{name}`: parameters, data use ports, and
    # `host.name`, `host.address`, `host.vars.KEY`. Already resolved (env() read).
    values: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Values that must never appear in logs, traces or messages.
    secrets: frozenset[str] = frozenset()
    duration: float = 0.0  # declared, seconds
    attempt: int = 1
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    workdir: Path = Path(".")  # relative paths in actions are relative to the .mad file
    env: Mapping[str, str] = field(default_factory=dict, compare=False)
    # The declared types of parameters that are not text (`int`, `float`, `bool`), by name:
    # backends that take typed values (Ansible's extra variables) convert `values` with them.
    types: Mapping[str, str] = field(default_factory=dict, compare=False)
    # The hosts of this transition whose jobs the engine started with this one (this job's
    # host among them), for backends that run them together (Ansible: one play); empty when
    # the job runs alone (a retry).
    batch: tuple[str, ...] = ()

    def render(self, text: str) -> str:
        """Substitute `{name}` placeholders as they are (paths, names: never for a shell)."""
        return render(text, self.values)

    def shell_script(self, command: str) -> str:
        """The script that runs shell `command` through `SHELL_ARGV` (on its standard input):
        `env` exported, values assigned to variables, placeholders as references to them."""
        return shell_script(command, self.values, self.env)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "******")
        return text


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    exit_status: int | None = None
    output: str = ""  # standard output, stripped (feeds `provide data ... = output of T`)
    stderr_tail: str = ""  # last lines of standard error, redacted
    message: str = ""  # a plain-words reason when not ok
    # Not ok, and nobody knows whether the action did its work: the connection to the host
    # was lost while it ran. A resume treats it like a cancelled action, not a failed one.
    uncertain: bool = False
    # When the action really started and ended on the host (`time.monotonic()`), if the
    # backend knows better than the engine: a play's hosts start and end at their own times.
    started: float | None = field(default=None, compare=False)
    ended: float | None = field(default=None, compare=False)


class Backend(Protocol):
    """Runs jobs. Implementations: local, python, simulate, ssh, ansible (and a router).
    What a backend may do beyond that is one of the capabilities below, each a protocol of its
    own that the engine and the router test with `isinstance`."""

    async def run(self, job: Job) -> Outcome: ...

    async def aclose(self) -> None: ...


# --- capabilities the engine asks its backend for (the router has them) ---------------------


@runtime_checkable
class Instant(Protocol):
    def instant(self, action: Action | None, duration: float) -> bool:
        """True when a job would succeed at once without running anything: the engine then
        completes it synchronously (no task, no log files)."""
        ...


@runtime_checkable
class Capacity(Protocol):
    def capacity(self, action: Action | None, host: Host) -> int | None:
        """How many such jobs can run at once on `host` without waiting in a queue the
        engine cannot see; None when there is no such limit."""
        ...


# --- capabilities the router asks the backends it builds for ----------------------------------


@runtime_checkable
class HostCapacity(Protocol):
    def host_capacity(self, host: Host) -> int:
        """Jobs at once on `host` without waiting for a resource of the backend's own (SSH:
        the sessions of one connection)."""
        ...


@runtime_checkable
class Connects(Protocol):
    async def connect(self, hosts: Iterable[Host]) -> list[str]:
        """Open the connections to `hosts` before the run: one message per host that cannot
        be reached."""
        ...


@runtime_checkable
class Configurable(Protocol):
    """A backend class built from the run's configuration rather than from keywords."""

    @classmethod
    def from_config(cls, config: BackendConfig) -> Backend: ...
