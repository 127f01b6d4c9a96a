"""`deploy()`: the library entry point of the engine (the CLI calls it too)."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from madeus import net
from madeus.backends.base import Backend
from madeus.engine.errors import DeployError, JournalError, ResumeError
from madeus.engine.events import RunEnded
from madeus.engine.executor import Executor
from madeus.engine.journal import Journal, JournalState
from madeus.engine.options import RunOptions, run_options
from madeus.engine.program import Program, compile_program
from madeus.engine.runlog import log_stem, make_private_dir, new_run_id, write_private_json
from madeus.engine.runner import EventSink
from madeus.engine.select import is_pattern
from madeus.engine.values import resolve_params
from madeus.errors import Diagnostic, MadeusError, StateError
from madeus.inventory import Inventory
from madeus.model import Assembly
from madeus.plan import Plan, plan_of
from madeus.resolve import Deployment
from madeus.trace import Trace

logger = logging.getLogger(__name__)

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
    options: RunOptions | None = None,
    *,
    inventory: Inventory | str | os.PathLike[str] | None = None,
    on_event: EventSink | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    plan: Plan | None = None,
    backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
    journal: Journal | None = None,
    resume: bool = False,
    assume_done: Collection[str] = (),
    rerun: Collection[str] = (),
    run_id: str | None = None,
    **option_fields: Any,
) -> DeployResult:
    """Deploy `target` (a resolved Deployment, an Assembly, or a `.mad` file).

    - `options` (`RunOptions`), or its fields as keywords (`simulate=True,
      time_scale=0.01`): simulation, `max_parallel` and `scheduling`, `let_running_finish`,
      `keep_going`, `retry_backoff`, `inject_failures`, SSH settings, Ansible's `habits`
      (in check mode nothing changes: give no journal). See `RunOptions`.
    - `on_event`: called with RunStarted, TransitionStarted, TransitionEnded, RunEnded.
    - `run_dir`: where to write per-job logs, `plan.json` and `trace.json` (none if None).
    - `backend`: runs every job instead of the default router.
    - `environ`: where `env("X")` parameters are read (default: os.environ).
    - `journal`: an open journal (`open_journal`): every start and end is recorded, durably.
      Without `resume` the run starts a fresh journal; with `resume=True` it continues the
      recorded one: jobs that ended are skipped (status `skipped`), their data values come
      from the journal; jobs that were running when it stopped run again if their transition
      is idempotent, else ResumeError stops the run before anything starts, unless
      `assume_done` or `rerun` (`"ID"` or `"ID@HOST"`) settle them.

    Raises ParameterError (nothing ran) when an environment variable is unset, ResumeError
    (nothing ran) when a resume needs the operator, DeployError (with the partial trace) when
    transitions fail after their retries, JournalError when the journal cannot be written.
    """
    opts = run_options(options, option_fields)
    if opts.check and journal is not None:
        raise ValueError("a check run records nothing: give it no journal")
    if resume and journal is None:
        raise ValueError("resume=True needs a journal (open_journal)")
    if (assume_done or rerun) and not resume:
        raise ValueError("assume_done and rerun only apply to a resumed run (resume=True)")
    deployment = _deployment(target, inventory)
    from madeus.verify import hostless

    nowhere = hostless(deployment)
    if nowhere:  # its transitions would never run, and what waits for them never start
        raise MadeusError(nowhere)
    compiled = net.compile(deployment)
    if plan is None:
        plan = plan_of(compiled)
    if logger.isEnabledFor(logging.INFO):  # counting the jobs costs a pass over the plan
        logger.info(
            "%s: %d transitions, %d jobs, predicted makespan %.3f s",
            deployment.name,
            len(plan.transitions),
            sum(len(t.hosts) for t in plan.transitions),
            plan.predicted_makespan,
        )
    mode = opts.mode
    scale = opts.scale
    params = resolve_params(deployment, os.environ if environ is None else environ)
    program = compile_program(compiled, plan)
    directory = Path(run_dir) if run_dir is not None else None
    select_jobs(program, opts.inject_failures, "--inject-failure")
    resumed = ResumePlan()
    if resume:
        assert journal is not None
        state = journal.state()
        resumed = plan_resume(
            program,
            state,
            assume_done=select_jobs(program, assume_done, "--assume-done", state),
            rerun=select_jobs(program, rerun, "--rerun", state),
            simulated=mode is not None,
        )
    router = opts.router(deployment.inventory, directory)
    parts = None
    if backend is None:
        from madeus.agents.split import CONTROLLER, wanted

        parts = wanted(
            program, deployment.inventory, agents=opts.agents, simulated=mode is not None
        )
    run_id = run_id or (directory.name if directory is not None else new_run_id())
    relay = keys = None
    try:
        if parts is not None and mode != "local":
            from madeus.agents.keys import forward_keys

            keys = await forward_keys(router.backend("ssh"), parts, opts.habits)
        if backend is None:
            await router.ready(
                (program.transitions[program.job_trans[j]].action, program.hosts[h])
                for j, h in enumerate(program.job_host)
                if parts is None or parts.owner[program.job_trans[j]] == CONTROLLER
            )
        executor = Executor(
            deployment.name,
            program,
            backend if backend is not None else router,
            inventory=deployment.inventory,
            params=params,
            options=opts,
            on_event=on_event,
            run_dir=directory,
            predicted_makespan=plan.predicted_makespan * scale,
            journal=journal,
            skip=resumed.skip,
            outputs=resumed.outputs,
            data=resumed.data,
        )
        if parts is not None:
            from madeus.agents.relay import Relay

            relay = Relay(
                executor,
                parts,
                options=opts,
                params=params,
                inventory=deployment.inventory,
                run_id=run_id,
                ssh=None if mode == "local" else router.backend("ssh"),
                keys_forwarded=keys is not None and keys.keys,
                skip=resumed.skip,
                outputs=resumed.outputs,
                data=resumed.data,
            )
            await relay.open()
        if directory is not None:
            make_private_dir(directory)
            write_private_json(directory / "plan.json", plan.to_json())
        if journal is not None:
            journal.begin_run(run_id, resume=resume, run_dir=directory)
            for tid, host in resumed.assumed:
                journal.record_end(tid, host, "ok", assumed=True, at=0.0, flush=False)
            journal.flush()
        record = None
        if journal is not None:
            from madeus.state import write_deployed

            def record() -> None:
                write_deployed(journal, deployment)

        trace = await _run(
            executor, on_event, directory, journal, record, relay.run if relay else None
        )
    finally:
        if relay is not None:
            await relay.aclose()
        await router.aclose()
        if keys is not None:
            await keys.aclose()
    if executor.journal_error is not None:
        raise executor.journal_error
    if executor.failures:
        raise DeployError(tuple(executor.failures), trace)
    return DeployResult(trace, plan, directory, scale)


async def _run(
    executor: Executor,
    on_event: EventSink | None,
    directory: Path | None,
    journal: Journal | None,
    record: Callable[[], None] | None = None,
    until: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> Trace:
    """Run; whatever happens (success, failure, cancellation), write the trace of what ran,
    close the run in the journal, `record` the state it left, and send RunEnded. `until`:
    what other parties run (site agents), awaited with the run."""
    status: Literal["ok", "failed", "interrupted"] = "interrupted"
    try:
        await executor.run(until)
        failed = executor.failures or executor.journal_error is not None
        status = "failed" if failed else "ok"
    finally:
        trace = executor.trace()
        if journal is not None and executor.journal_error is None:
            try:
                journal.end_run(status, at=executor.now())
                if record is not None:
                    record()
            except JournalError as exc:
                executor.journal_error = exc
            except StateError as exc:
                executor.journal_error = JournalError(exc.diagnostics)
        if directory is not None:
            trace.write(directory / "trace.json", mode=0o600)
        if on_event is not None:
            on_event(RunEnded(trace, status, directory))
    return trace


# --- resuming ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What a resumed run does with the journal: the jobs it skips (ended before, or assumed
    done), the outputs and data values that come with them, and the jobs it runs again."""

    skip: frozenset[int] = frozenset()
    outputs: Mapping[int, str] | None = None  # transition index -> its first host's output
    data: Mapping[tuple[str, str], str] | None = None  # (instance, port) -> value
    assumed: tuple[tuple[str, str], ...] = ()  # (id, host) settled by assume_done
    rerun: tuple[tuple[str, str], ...] = ()  # (id, host) that were running and run again


def select_jobs(
    program: Program,
    selectors: Collection[str],
    option: str,
    state: JournalState | None = None,
) -> frozenset[int]:
    """Job indices named by selectors: `ID` (every host of the transition) or `ID@HOST`,
    either part a shell-style pattern (`keystone.*`, `*@compute-1`); with a journal `state`,
    also `cancelled`: every job the last run left cut off (running, cancelled, or whose
    connection was lost). MadeusError for a selector that names nothing."""
    if not selectors:
        return frozenset()
    index = {tid: i for i, tid in enumerate(program.ids)}
    jobs: set[int] = set()
    for selector in selectors:
        if selector == "cancelled" and state is not None:
            jobs.update(
                j
                for j, i in enumerate(program.job_trans)
                if (program.ids[i], _host(program, j)) in state.running
            )
            continue
        tid, at, host = selector.partition("@")
        if is_pattern(tid):
            matched = [i for i, name in enumerate(program.ids) if fnmatch.fnmatchcase(name, tid)]
        else:
            matched = [index[tid]] if tid in index else []
        if not matched:
            raise MadeusError(f'{option} {selector}: no transition "{tid}" in the plan')
        chosen = [
            j
            for i in matched
            for j in range(program.job_base[i], program.job_base[i + 1])
            if not at or fnmatch.fnmatchcase(_host(program, j), host)
        ]
        if not chosen:
            hosts = ", ".join(
                dict.fromkeys(
                    _host(program, j)
                    for i in matched
                    for j in range(program.job_base[i], program.job_base[i + 1])
                )
            )
            what = (
                f'transition "{tid}" does not'
                if len(matched) == 1 and not is_pattern(tid)
                else f'the transitions matching "{tid}" do not'
            )
            raise MadeusError(
                f'{option} {selector}: {what} run on host "{host}" (hosts: {hosts or "none"})'
            )
        jobs.update(chosen)
    return frozenset(jobs)


def plan_resume(
    program: Program,
    state: JournalState,
    *,
    assume_done: Collection[int] = frozenset(),
    rerun: Collection[int] = frozenset(),
    simulated: bool = False,
) -> ResumePlan:
    """Decide what a resumed run does with each job the journal knows; ResumeError (one
    diagnostic per job) when a job was cut off when the run stopped (running, cancelled, its
    connection lost), is not safe to rerun (`Transition.safe_to_rerun`), and neither
    `assume_done` nor `rerun` names it. A `simulated` run did nothing real: what it cut off
    simply runs again."""
    skip: set[int] = set()
    assumed: list[tuple[str, str]] = []
    again: list[tuple[str, str]] = []
    problems: list[Diagnostic] = []
    outputs: dict[int, str] = {}
    for j, i in enumerate(program.job_trans):
        key = (program.ids[i], _host(program, j))
        if j in rerun:
            if key in state.running:
                again.append(key)
            continue
        if key in state.ended:
            skip.add(j)
            record = state.jobs.get(key)
            if j == program.job_base[i] and record is not None and record.output is not None:
                outputs[i] = record.output
        elif j in assume_done:
            skip.add(j)
            assumed.append(key)
        elif key in state.running:
            if simulated or program.transitions[i].safe_to_rerun:
                again.append(key)
            else:
                problems.append(_unsettled(program, i, key, state))
    if problems:
        raise ResumeError(problems)
    data: dict[tuple[str, str], str] = {}
    for port, value in state.data.items():
        instance, _, name = port.rpartition(".")
        data[(instance, name)] = value
    return ResumePlan(frozenset(skip), outputs, data, tuple(assumed), tuple(again))


def _unsettled(program: Program, i: int, key: tuple[str, str], state: JournalState) -> Diagnostic:
    tid, host = key
    record = state.jobs.get(key)
    run = state.run(record.run) if record is not None else None
    when = f"when run {run.id} stopped" if run is not None else "when its run stopped"
    logs = ""
    if run is not None and run.run_dir:
        stem = Path(run.run_dir) / log_stem(tid, host)
        found = [f"{stem}{ext}" for ext in (".out", ".err") if Path(f"{stem}{ext}").exists()]
        logs = f" (logs: {', '.join(found)})" if found else f" (no output in {run.run_dir}/)"
    cut = {"cancelled": "was cancelled", "lost": "lost its connection"}.get(
        record.status if record is not None else "", "was running"
    )
    return Diagnostic(
        "resume-unsettled",
        f'transition "{tid}" {cut} on host "{host}" {when} and is not declared idempotent: '
        f"check what it did{logs}, then resume with --assume-done {tid}@{host} if it completed, "
        f"or --rerun {tid}@{host} to run it again (--rerun cancelled: every such transition)",
        program.transitions[i].span,
    )


def _host(program: Program, j: int) -> str:
    return program.hosts[program.job_host[j]].name


def deploy_sync(target: Target, options: RunOptions | None = None, **keywords: Any) -> DeployResult:
    """`deploy` for synchronous callers (runs its own event loop)."""
    return asyncio.run(deploy(target, options, **keywords))


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
