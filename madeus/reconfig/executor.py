"""Executing a reconfiguration program: the Concerto state machine driven by real jobs.

`machine.py` decides what may happen; this module runs it. Every transition that fires runs on
each host of its instance, through the same backends as a deployment (`Router`,
`BackendConfig`: local, SSH, Ansible, Python, `--simulate` and `--simulate=remote`) and by the
same job runner (`madeus.engine.runner`: limits, retries, backoff, injected failures,
cancellation, events, journal); it ends when all its hosts are done, and that end is handed to
the machine, which returns every move it enables at once (event-driven: nothing polls; a
safety wait is re-examined exactly when an instance it depends on changes).

On a failure (after the transition's retries) nothing new starts and running jobs are
cancelled, unless `keep_going`: then only what waits for the failed transition stays
undone. `ReconfigError` carries the failures and the partial trace. The trace has the schema
of a deployment's (docs/engine.md) with each event's `behaviour`; a transition run twice by a
program appears twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from madeus.backends.base import Backend
from madeus.engine.errors import Failure, JournalError
from madeus.engine.events import RunEnded
from madeus.engine.options import RunOptions, run_options
from madeus.engine.runlog import make_private_dir
from madeus.engine.runner import Inputs, OnRunner, Runner
from madeus.engine.select import check_selectors
from madeus.engine.values import (
    InstanceValues,
    action_dir,
    data_value,
    host_values,
    resolve_params,
)
from madeus.errors import Diagnostic, MadeusError
from madeus.inventory import Host
from madeus.model import Action, Assembly, OutputOf, ProvidePort
from madeus.reconfig.events import BehaviourDone, EventSink, InstructionDone
from madeus.reconfig.machine import Machine, Move, Problem
from madeus.reconfig.predict import Prediction
from madeus.reconfig.program import Add, Program, Push, Remove
from madeus.reconfig.state import Configuration, Recorder
from madeus.resolve import Deployment, ResolvedInstance
from madeus.trace import Trace


class ReconfigError(MadeusError):
    """The reconfiguration stopped: a transition failed (`failures`), or, for a program that
    was not verified, it blocked or a behaviour looped. `trace` is what ran; `configuration`
    where it left things."""

    def __init__(
        self,
        diagnostics: list[Diagnostic],
        trace: Trace,
        configuration: Configuration,
        failures: tuple[Failure, ...] = (),
    ) -> None:
        super().__init__(diagnostics)
        self.trace = trace
        self.configuration = configuration
        self.failures = failures


@dataclass(frozen=True, slots=True, repr=False)
class ReconfigResult:
    trace: Trace
    configuration: Configuration  # after the program
    prediction: Prediction | None
    run_dir: Path | None
    time_scale: float = 1.0
    problems: tuple[Problem, ...] = field(default=())  # only when the program was not verified

    def __repr__(self) -> str:
        return (
            f"ReconfigResult(trace={self.trace!r}, makespan={self.makespan!r}, "
            f"predicted={self.predicted_makespan!r})"
        )

    @property
    def makespan(self) -> float:
        return self.trace.makespan

    @property
    def predicted_makespan(self) -> float | None:
        if self.prediction is None:
            return None
        return self.prediction.makespan * self.time_scale


class ReconfigExecutor(OnRunner):
    """The scheduler of a reconfiguration: the Concerto machine, on the job runner. Use
    `run()` once, then `trace()`."""

    def __init__(
        self,
        configuration: Configuration,
        program: Program,
        backend: Backend,
        *,
        params: Mapping[str, InstanceValues],
        environ: Mapping[str, str],
        options: RunOptions | None = None,
        on_event: EventSink | None = None,
        run_dir: Path | None = None,
        recorder: Recorder | None = None,
        predicted_makespan: float = 0.0,
        expected: tuple[int, int] = (0, 0),
        actions: Sequence[tuple[str, Action | None, Host]] | None = None,
    ) -> None:
        """`actions`: `_actions(configuration, program)` when the caller has them already."""
        self.configuration = configuration
        self._expected = expected  # (transitions, jobs) predicted, for progress displays
        self.program = program
        self.machine = Machine(configuration, program)
        self._params = dict(params)
        self._environ = environ
        self._emit = on_event
        self._recorder = recorder
        self._predicted = predicted_makespan
        self._inventory = configuration.inventory
        runner = self.runner = Runner(
            configuration.assembly,
            backend,
            configuration.inventory,
            options if options is not None else RunOptions(),
            on_event=on_event,
            run_dir=run_dir,
            journal=recorder.journal if recorder is not None else None,
            job_records=False,
        )
        runner.scheduler = self
        if actions is None:
            actions = _actions(configuration, program)
        for _, action, host in actions:
            runner.declare(action, runner.add_host(host))
        self._slots: list[tuple[str, str]] = []  # slot -> (instance, transition)
        self._outputs: dict[tuple[str, str], str] = {}
        self.data: dict[str, str] = dict(configuration.data)
        self._secret_data: set[str] = set()
        self._recorded: dict[str, tuple[frozenset[str], tuple[frozenset[str], ...]]] = {
            i.name: (i.marking, i.batches) for i in configuration.instances
        }
        self._instances = {i.name: i.type for i in configuration.instances}

    async def run(self) -> None:
        await self.runner.run(
            lambda: self._handle(self.machine.advance()),
            expected=self._expected,
            predicted_makespan=self._predicted,
        )

    # --- the scheduler ---------------------------------------------------------------------

    def ended(self, slot: int) -> None:
        key = self._slots[slot]
        output = self.runner.outputs.get(slot)
        if output is not None:
            # Of the instance: the last batch of a rolling change gives the value.
            self._outputs[(self.machine.whole[key[0]], key[1])] = output
        self._handle(self.machine.end(*key))

    def _handle(self, moves: list[Move]) -> None:
        """Act on the moves the machine applied: report, record, then start what fired (its
        jobs wait for what was recorded before them: the marking that says it may run)."""
        touched: dict[str, None] = {}
        fired: list[tuple[str, str]] = []
        now = self.now()
        for move in moves:
            if move.kind == "fire":
                fired.append((move.instance, move.name))
            elif move.kind == "exec":
                ins = self.program[move.index]
                if self._emit is not None:
                    self.runner.emit(InstructionDone(move.index, str(ins), now))
                if isinstance(ins, Add | Remove):
                    self._instances_changed()
            elif move.kind == "done" and self._emit is not None:
                self.runner.emit(BehaviourDone(move.instance, move.name, move.index, now))
            elif move.kind == "reach":
                self._reached(move.instance, move.name)
            if move.instance:
                touched[move.instance] = None
        for name in touched:
            self._record_marking(name)  # once per instance: the marking is recorded if new
        for instance, name in fired:
            self._launch(instance, name)

    def _launch(self, instance: str, name: str) -> None:
        runner = self.runner
        if runner.stopping:
            return  # a failure (or the journal) stopped the run: nothing new starts
        transition = self.machine.transition(instance, name)
        hosts = [runner.host(h) for h in self.machine.hosts(instance)]
        whole = self.machine.whole[instance]
        slot = runner.add(
            f"{instance}.{name}", instance, transition, hosts, selected_as=f"{whole}.{name}"
        )
        self._slots.append((instance, name))
        runner.ready_queue.append(slot)

    def inputs(self, slot: int) -> Inputs:
        run = self._slots[slot][0]  # the instance, or a batch of it
        instance = self.machine.whole[run]
        return Inputs(
            self._values_of(instance),
            self._used(run),
            action_dir(self.machine.component(instance)),
        )

    # --- values ----------------------------------------------------------------------------

    def _values_of(self, instance: str) -> InstanceValues:
        values = self._params.get(instance)
        if values is None:  # added by the program
            values = _params_of(self.machine, instance, self.configuration, self._environ)
            self._params[instance] = values
        return values

    def _reached(self, run: str, place: str) -> None:
        """A place was reached (by an instance, or a batch of it): (re)compute the data
        provide ports bound to it."""
        instance = self.machine.whole.get(run)
        if instance is None:
            return
        for port in self.machine.component(instance).provides:
            if port.kind == "data" and place in port.places and port.value is not None:
                self._provide(instance, port.name, port.value)

    def _provide(
        self, instance: str, port: str, value: str | OutputOf, seen: frozenset[str] = frozenset()
    ) -> bool:
        """Compute (again) the value of data port `instance.port`; False when it cannot be
        yet (an output not seen, a data value it reads not known)."""
        key = f"{instance}.{port}"
        if isinstance(value, OutputOf):
            output = self._outputs.get((instance, value.transition))
            if output is None:
                return False
            self.data[key] = output
        else:
            hosts = self.machine.hosts(instance)
            runner = self.runner
            facts = (
                host_values(self._inventory, runner.hosts[runner.host(hosts[0])]) if hosts else {}
            )
            try:
                self.data[key], secret = data_value(
                    value, self._values_of(instance), facts, self._used(instance, seen)
                )
            except MadeusError:
                return False
            if secret:
                self._secret_data.add(key)
        if self._recorder is not None and key not in self._secret_data:
            self._recorder.data(key, self.data[key])
            self._buffered()
        return True

    def _used(
        self, instance: str, seen: frozenset[str] = frozenset()
    ) -> dict[str, tuple[str, bool]]:
        """The values of the connected data use ports of `instance` (or of a batch of it: they
        all have the same connections): port -> (value, secret). A value the run does not have
        yet (a secret is never recorded; an added instance's ports were never reached) is
        computed when its provide port is active, from what it reads in turn (`seen`: the
        instances on the way, against a cycle)."""
        machine = self.machine
        run = machine.parts[instance][0] if instance in machine.parts else instance
        found = {}
        for use in machine.component(instance).uses:
            port = use.name
            target = machine.links.get((run, port))
            if use.kind != "data" or target is None:
                continue
            key = f"{target[0]}.{target[1]}"
            if key not in self.data and target[0] not in seen and machine.active(*target):
                provider = machine.component(target[0]).port(target[1])
                assert isinstance(provider, ProvidePort)
                if isinstance(provider.value, str):
                    self._provide(target[0], target[1], provider.value, seen | {instance})
            if key in self.data:
                found[port] = (self.data[key], key in self._secret_data)
        return found

    # --- the journal -------------------------------------------------------------------------

    def _record_marking(self, run: str) -> None:
        instance = self.machine.whole.get(run)
        if self._recorder is None or instance is None:
            return
        marking = self.machine.marking_for_journal(instance)
        batches = self.machine.batches_for_journal(instance)
        if self._recorded.get(instance) != (marking, batches):
            self._recorded[instance] = (marking, batches)
            self._recorder.marking(instance, marking, batches)
            self._buffered()

    def _buffered(self) -> None:
        """A record went to the journal's buffer: the runner's writer takes it."""
        if self.runner.commit is not None:
            self.runner.commit.buffered(1)

    def _instances_changed(self) -> None:
        current = {name: self.machine.component(name).name for name in self.machine.parts}
        if current != self._instances:
            self._instances = current
            if self._recorder is not None:
                self._recorder.instances(current)
                self._buffered()


def _params_of(
    machine: Machine, instance: str, configuration: Configuration, environ: Mapping[str, str]
) -> InstanceValues:
    resolved = ResolvedInstance(
        instance, machine.component(instance), machine.hosts(instance), machine.params_of(instance)
    )
    tiny = Deployment(
        configuration.assembly, (resolved,), (), configuration.inventory, _assembly(configuration)
    )
    return resolve_params(tiny, environ)[instance]


def _assembly(configuration: Configuration) -> Assembly:
    if configuration.deployment is not None:
        return configuration.deployment.assembly
    return Assembly(configuration.assembly)


def _resolve_all(
    configuration: Configuration, environ: Mapping[str, str]
) -> dict[str, InstanceValues]:
    """Every instance's parameters, read before anything runs (an unset `env("X")` stops the
    run with ParameterError, as for a deployment)."""
    resolved = tuple(
        ResolvedInstance(i.name, i.component, i.hosts, i.params, i.span)
        for i in configuration.instances
    )
    tiny = Deployment(
        configuration.assembly,
        resolved,
        configuration.links,
        configuration.inventory,
        _assembly(configuration),
    )
    return resolve_params(tiny, environ)


async def reconfigure(
    configuration: Configuration,
    program: Program,
    options: RunOptions | None = None,
    *,
    on_event: EventSink | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
    prediction: Prediction | None = None,
    recorder: Recorder | None = None,
    **option_fields: Any,
) -> ReconfigResult:
    """Run `program` from `configuration` (verify it first: `madeus.verify.behaviours`).

    - `options` (`RunOptions`), or its fields as keywords: simulation, limits, keep-going,
      retries' backoff, injected failures, SSH settings, Ansible's habits, as for `deploy`;
      `inject_failures` must name transitions the program may run;
    - `on_event`: called with RunStarted, TransitionStarted / TransitionEnded (with their
      `behaviour`), InstructionDone, BehaviourDone, RunEnded;
    - `run_dir`: per-job logs and `trace.json`; `recorder`: where markings are written (the
      journal, `madeus.reconfig.state.Recorder`);
    - `prediction`: for the predicted makespan in RunStarted and the result.

    Every backend is built and every remote host connected before anything runs (an
    unreachable host is a BackendError then, nothing ran).

    Raises ReconfigError when a transition fails (or an unverified program blocks or loops),
    ParameterError when an `env("X")` parameter is unset (nothing ran).
    """
    opts = run_options(options, option_fields)
    if opts.check and recorder is not None:
        raise ValueError("a check run records nothing: give it no recorder")
    env = os.environ if environ is None else environ
    params = _resolve_all(configuration, env)
    actions = _actions(configuration, program)
    check_selectors(
        opts.inject_failures,
        ((tid, host.name) for tid, _, host in actions),
        "--inject-failure",
        "the program",
    )
    scale = opts.scale
    directory = Path(run_dir) if run_dir is not None else None
    router = opts.router(configuration.inventory, directory)
    predicted = prediction.makespan * scale if prediction is not None else 0.0
    status: Literal["ok", "failed", "interrupted"] = "interrupted"
    executor: ReconfigExecutor | None = None
    try:
        if backend is None:
            await router.ready((action, host) for _, action, host in actions)
        executor = ReconfigExecutor(
            configuration,
            program,
            backend if backend is not None else router,
            params=params,
            environ=env,
            options=opts,
            on_event=on_event,
            run_dir=directory,
            recorder=recorder,
            predicted_makespan=predicted,
            expected=(
                (len(prediction.steps), sum(len(st.hosts) for st in prediction.steps))
                if prediction is not None
                else (0, 0)
            ),
            actions=actions,
        )
        if directory is not None:
            make_private_dir(directory)
        if recorder is not None:
            recorder.begin(directory.name if directory is not None else "reconfigure", directory)
        try:
            await executor.run()
            status = "failed" if executor.failures or executor.journal_error else "ok"
        finally:
            trace = executor.trace()
            if directory is not None:
                trace.write(directory / "trace.json", mode=0o600)
            if on_event is not None:
                on_event(RunEnded(trace, status, directory))
    finally:
        await router.aclose()
        if recorder is not None and executor is not None and executor.journal_error is None:
            stopped = status
            if status == "ok" and not executor.machine.finished:
                stopped = "failed"
            try:
                recorder.end(stopped)
                recorder.record_state(executor.machine.to_configuration())
            except JournalError as exc:
                executor.journal_error = exc
    if executor.journal_error is not None:
        raise executor.journal_error
    machine = executor.machine
    after = machine.to_configuration()
    if executor.failures:
        failures = tuple(executor.failures)
        raise ReconfigError(
            [Diagnostic("reconfigure-failed", f.describe(), f.span) for f in failures],
            trace,
            after,
            failures,
        )
    if machine.fatal is not None:
        raise ReconfigError([Diagnostic("loop", machine.fatal.describe())], trace, after)
    if not machine.finished:
        blocked = machine.blocked()
        raise ReconfigError(
            [Diagnostic("blocked", f"the program blocked: {b.message}", b.span) for b in blocked]
            or [Diagnostic("blocked", "the program blocked")],
            trace,
            after,
        )
    violations = tuple(p for p in machine.problems if p.kind != "loop")
    return ReconfigResult(trace, after, prediction, directory, scale, violations)


def _actions(
    configuration: Configuration, program: Program
) -> list[tuple[str, Action | None, Host]]:
    """(transition id, action, host) of every transition the program may run: the backends
    are built and the hosts' limits known before anything runs."""
    found: list[tuple[str, Action | None, Host]] = []
    hosts = {i.name: i.hosts for i in configuration.instances}
    components = {i.name: i.component for i in configuration.instances}
    inventory = configuration.inventory
    for ins in program:
        if isinstance(ins, Add):
            components[ins.instance] = configuration.components[ins.type]
            hosts[ins.instance] = ins.placement(inventory)
        if not isinstance(ins, Push):
            continue
        for t in components[ins.instance].transitions_of(ins.behaviour):
            for h in hosts[ins.instance]:
                found.append((f"{ins.instance}.{t.name}", t.action, inventory.host(h)))
    return found


def reconfigure_sync(
    configuration: Configuration,
    program: Program,
    options: RunOptions | None = None,
    **keywords: Any,
) -> ReconfigResult:
    """`reconfigure` for synchronous callers (runs its own event loop)."""
    return asyncio.run(reconfigure(configuration, program, options, **keywords))
