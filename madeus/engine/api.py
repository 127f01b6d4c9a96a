"""`deploy()`: the library entry point of the engine (the CLI calls it too)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from madeus.backends.base import Backend
from madeus.backends.router import BackendConfig, Router, SimulateMode
from madeus.engine.errors import DeployError
from madeus.engine.events import RunEnded
from madeus.engine.executor import EventSink, Executor
from madeus.engine.limits import Scheduling
from madeus.engine.program import compile_program
from madeus.engine.runlog import make_private_dir, write_private_json
from madeus.engine.values import resolve_params
from madeus.inventory import Inventory
from madeus.model import Assembly
from madeus.plan import Plan, build_plan
from madeus.resolve import Deployment
from madeus.trace import Trace

Target = Deployment | Assembly | str | os.PathLike[str]


@dataclass(frozen=True, slots=True, repr=False)
class DeployResult:
    trace: Trace
    plan: Plan
    run_dir: Path | None
    time_scale: float = 1.0  # the scale of simulated durations (1.0 for real runs)

    def __repr__(self) -> str:
        # The plan's repr is as long as the deployment (see Trace.__repr__ for why it matters).
        return (
            f"DeployResult(trace={self.trace!r}, plan=<{len(self.plan.transitions)} "
            f"transitions>, run_dir={self.run_dir!r}, time_scale={self.time_scale!r})"
        )

    @property
    def makespan(self) -> float:
        return self.trace.makespan

    @property
    def predicted_makespan(self) -> float:
        """The plan's makespan in the run's time (scaled when simulating)."""
        return self.plan.predicted_makespan * self.time_scale


async def deploy(
    target: Target,
    *,
    inventory: Inventory | str | os.PathLike[str] | None = None,
    simulate: bool | SimulateMode = False,
    time_scale: float = 1.0,
    max_parallel: int | None = None,
    scheduling: Scheduling = "critical-path",
    let_running_finish: bool = False,
    on_event: EventSink | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    plan: Plan | None = None,
    backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
    known_hosts: str | None = None,
    insecure_no_host_key_check: bool = False,
) -> DeployResult:
    """Deploy `target` (a resolved Deployment, an Assembly, or a `.mad` file).

    - `simulate`: True or "local" replaces every action by a sleep of its declared duration
      times `time_scale`; "remote" sleeps on the real hosts (over SSH).
    - `max_parallel`: at most this many jobs (transition x host) at once; hosts may set their
      own limit with the inventory variable `madeus_max_parallel`. When a limit binds,
      `scheduling="critical-path"` starts the job with the longest remaining path first;
      "fifo" (in order of readiness) is a diagnostic aid.
    - `on_event`: called with RunStarted, TransitionStarted, TransitionEnded, RunEnded.
    - `run_dir`: where to write per-job logs, `plan.json` and `trace.json` (none if None).
    - `backend`: runs every job instead of the default router.
    - `environ`: where `env("X")` parameters are read (default: os.environ).
    - `known_hosts`: the SSH known_hosts file (default: the one beside the inventory, else
      ~/.ssh/known_hosts); `insecure_no_host_key_check=True` accepts any host key.

    Raises ParameterError (nothing ran) when an environment variable is unset, DeployError
    (with the partial trace) when a transition fails after its retries.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    if time_scale < 0:
        raise ValueError("time_scale must not be negative")
    deployment = _deployment(target, inventory)
    if plan is None:
        plan = build_plan(deployment)
    mode: SimulateMode | None = "local" if simulate is True else (simulate or None)
    scale = time_scale if mode is not None else 1.0
    params = resolve_params(deployment, os.environ if environ is None else environ)
    program = compile_program(deployment, plan)
    directory = Path(run_dir) if run_dir is not None else None
    router = Router(
        BackendConfig(
            deployment.inventory,
            mode,
            time_scale,
            directory,
            known_hosts=known_hosts,
            insecure_no_host_key_check=insecure_no_host_key_check,
        )
    )
    try:
        if backend is None:
            # Build every backend the jobs need now: a missing one fails before anything runs.
            router.prepare(
                (program.transitions[program.job_trans[j]].action, program.hosts[h])
                for j, h in enumerate(program.job_host)
            )
        executor = Executor(
            deployment.name,
            program,
            backend if backend is not None else router,
            inventory=deployment.inventory,
            params=params,
            max_parallel=max_parallel,
            scheduling=scheduling,
            let_running_finish=let_running_finish,
            on_event=on_event,
            run_dir=directory,
            predicted_makespan=plan.predicted_makespan * scale,
        )
        if directory is not None:
            make_private_dir(directory)
            write_private_json(directory / "plan.json", plan.to_json())
        trace = await _run(executor, on_event, directory)
    finally:
        await router.aclose()
    if executor.failures:
        raise DeployError(tuple(executor.failures), trace)
    return DeployResult(trace, plan, directory, scale)


async def _run(executor: Executor, on_event: EventSink | None, directory: Path | None) -> Trace:
    """Run; whatever happens (success, failure, cancellation), write the trace of what ran and
    send RunEnded."""
    status: Literal["ok", "failed", "interrupted"] = "interrupted"
    try:
        await executor.run()
        status = "failed" if executor.failures else "ok"
    finally:
        trace = executor.trace()
        if directory is not None:
            trace.write(directory / "trace.json", mode=0o600)
        if on_event is not None:
            on_event(RunEnded(trace, status, directory))
    return trace


def deploy_sync(target: Target, **options: Any) -> DeployResult:
    """`deploy` for synchronous callers (runs its own event loop)."""
    return asyncio.run(deploy(target, **options))


def _deployment(target: Target, inventory: Inventory | str | os.PathLike[str] | None) -> Deployment:
    if isinstance(target, Deployment):
        return target
    from madeus.inventory import load_inventory
    from madeus.resolve import resolve

    inv = (
        inventory
        if isinstance(inventory, Inventory) or inventory is None
        else (load_inventory(os.fspath(inventory)))
    )
    if isinstance(target, Assembly):
        return resolve(target, inv)
    from madeus.errors import Diagnostic, MadeusError
    from madeus.frontend import load_file

    module = load_file(os.fspath(target))
    if module.assembly is None:
        raise MadeusError([Diagnostic("no-assembly", f"{os.fspath(target)} defines no assembly")])
    return resolve(module.assembly, inv)
