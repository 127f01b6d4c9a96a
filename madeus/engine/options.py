"""How a run runs: one frozen object for a deployment, a change, a reconfiguration, a destroy.

The CLI builds it once from the command line (`madeus.cli._common.run_options_of`); `deploy()`
and `reconfigure()` take it and hand it, unchanged, to the job runner and the backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from madeus.backends.router import Habits, Router, SimulateMode, backend_config
from madeus.engine.limits import Scheduling
from madeus.inventory import Inventory

# Exponential backoff between attempts: base x 2^(attempt - 1), capped, with jitter.
DEFAULT_BACKOFF_MAX = 60.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """- `simulate`: True or "local" replaces every action by a sleep of its declared duration
      times `time_scale`; "remote" sleeps on the real hosts (over SSH);
    - `max_parallel`: at most this many jobs (transition x host) at once, besides each host's
      `madeus_max_parallel`; when a limit binds, `scheduling="critical-path"` starts the job
      with the longest remaining path first, "fifo" in order of readiness;
    - `let_running_finish`: after a failure, let running jobs finish instead of cancelling;
    - `keep_going`: after a failure, run everything that does not depend on it;
    - `retry_backoff`: wait base x 2^(attempt - 1) seconds (at most `retry_backoff_max`, with
      jitter) before retrying a failed attempt; 0 retries at once;
    - `inject_failures`: `"ID"` or `"ID@HOST"` (shell patterns): those jobs fail without
      running their action, to rehearse failures and resumes;
    - `known_hosts`, `insecure_no_host_key_check`, `ssh_keepalive_interval`,
      `ssh_keepalive_count_max`: the SSH backend's settings (else the inventory's);
    - `habits`: Ansible's command-line habits (check mode, diff, user, key, become);
    - `agents`: each site's part runs on an agent on one of its hosts (docs/agents.md), also
      when no host of the inventory sets `madeus_agent`."""

    simulate: bool | SimulateMode = False
    time_scale: float = 1.0
    max_parallel: int | None = None
    scheduling: Scheduling = "critical-path"
    let_running_finish: bool = False
    keep_going: bool = False
    retry_backoff: float = 0.0
    retry_backoff_max: float = DEFAULT_BACKOFF_MAX
    inject_failures: tuple[str, ...] = ()
    known_hosts: str | None = None
    insecure_no_host_key_check: bool = False
    ssh_keepalive_interval: float | None = None
    ssh_keepalive_count_max: int | None = None
    habits: Habits | None = None
    agents: bool = False

    def __post_init__(self) -> None:
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        if self.time_scale < 0:
            raise ValueError("time_scale must not be negative")
        if self.retry_backoff < 0 or self.retry_backoff_max < 0:
            raise ValueError("retry_backoff and retry_backoff_max must not be negative")
        if not isinstance(self.inject_failures, tuple):
            object.__setattr__(self, "inject_failures", tuple(self.inject_failures))

    @property
    def mode(self) -> SimulateMode | None:
        """The simulation mode, None for a real run."""
        return "local" if self.simulate is True else (self.simulate or None)

    @property
    def scale(self) -> float:
        """The scale of declared durations in this run: `time_scale` when simulating, else 1."""
        return self.time_scale if self.mode is not None else 1.0

    @property
    def check(self) -> bool:
        return self.habits is not None and self.habits.check

    def router(self, inventory: Inventory, run_dir: Path | None) -> Router:
        """The backends of a run with these options."""
        return Router(
            backend_config(
                inventory,
                self.mode,
                self.time_scale,
                run_dir,
                known_hosts=self.known_hosts,
                insecure_no_host_key_check=self.insecure_no_host_key_check,
                ssh_keepalive_interval=self.ssh_keepalive_interval,
                ssh_keepalive_count_max=self.ssh_keepalive_count_max,
                habits=self.habits,
            )
        )


_NAMES = frozenset(f.name for f in fields(RunOptions))


def run_options(options: RunOptions | None, overrides: Mapping[str, Any]) -> RunOptions:
    """`options` with the library caller's keyword arguments (`deploy(x, simulate=True)`)."""
    unknown = sorted(set(overrides) - _NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    base = options if options is not None else RunOptions()
    return replace(base, **overrides) if overrides else base
