"""Executing a reconfiguration program: the Concerto state machine driven by real jobs.

`machine.py` decides what may happen; this module runs it. Every transition that fires runs on
each host of its instance, through the same backends as a deployment (`Router`,
`BackendConfig`: local, SSH, Ansible, Python, `--simulate` and `--simulate=remote`); it ends
when all its hosts are done, and that end is handed to the machine, which returns every move it
enables at once (event-driven: nothing polls; a safety wait is re-examined exactly when an
instance it depends on changes). Every job is a task in one `asyncio.TaskGroup`; a job that
takes no time (the router says `instant`) completes without a task.

On a failure (after the transition's retries) nothing new starts and running jobs are
cancelled; `ReconfigError` carries the failures and the partial trace. The trace has the schema
of a deployment's (docs/engine.md) with each event's `behaviour`; a transition run twice by a
program appears twice.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from madeus.backends.base import Backend, Capacity, Instant, Job, Outcome
from madeus.backends.router import Habits, Router, SimulateMode, backend_config
from madeus.engine.errors import Failure, JournalError
from madeus.engine.events import RunEnded, RunStarted
from madeus.engine.executor import attempt_job, host_limit
from madeus.engine.runlog import log_stem, make_private_dir
from madeus.engine.values import (
    InstanceValues,
    action_dir,
    data_value,
    host_values,
    resolve_params,
)
from madeus.errors import Diagnostic, MadeusError
from madeus.inventory import LOCAL_HOST, Host
from madeus.model import Action, Assembly, OutputOf
from madeus.reconfig.events import (
    BehaviourDone,
    EventSink,
    InstructionDone,
    TransitionEnded,
    TransitionStarted,
)
from madeus.reconfig.machine import Machine, Move, Problem
from madeus.reconfig.predict import Prediction
from madeus.reconfig.program import Add, Program, Push, Remove
from madeus.reconfig.state import Configuration, Recorder
from madeus.resolve import Deployment, ResolvedInstance
from madeus.trace import Limits, Status, Trace, TraceEvent

_OK = Outcome(ok=True)


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


@dataclass(slots=True)
class _JobRec:
    instance: str
    transition: str
    behaviour: str
    host: Host
    start: float
    end: float = math.nan
    status: Status | None = None
    attempts: int = 1


class ReconfigExecutor:
    """Runs one program from one configuration. Use `run()` once, then `trace()`."""

    def __init__(
        self,
        configuration: Configuration,
        program: Program,
        backend: Backend,
        *,
        params: Mapping[str, InstanceValues],
        environ: Mapping[str, str],
        on_event: EventSink | None = None,
        run_dir: Path | None = None,
        recorder: Recorder | None = None,
        predicted_makespan: float = 0.0,
        expected: tuple[int, int] = (0, 0),
        max_parallel: int | None = None,
    ) -> None:
        self.configuration = configuration
        self._max_parallel = max_parallel  # jobs at once over all hosts (`-f`)
        self._running = 0
        self._expected = expected  # (transitions, jobs) predicted, for progress displays
        self.program = program
        self.machine = Machine(configuration, program)
        self._backend = backend
        self._params = dict(params)
        self._environ = environ
        self._emit = on_event
        self._run_dir = run_dir
        self._recorder = recorder
        self._predicted = predicted_makespan
        self._inventory = configuration.inventory
        self._instant: Callable[[Action | None, float], bool] | None = (
            backend.instant if isinstance(backend, Instant) else None
        )
        self._capacity: Callable[[Action | None, Host], int | None] | None = (
            backend.capacity if isinstance(backend, Capacity) else None
        )
        self._limits: dict[tuple[str, type], int | None] = {}
        self._host_running: dict[str, int] = {}
        self._waiting: dict[str, deque[int]] = {}
        self._jobs: list[_JobRec] = []
        self._left: dict[tuple[str, str], int] = {}  # running transition -> hosts not done
        self._first_job: dict[tuple[str, str], int] = {}
        self._outputs: dict[tuple[str, str], str] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._ended: deque[tuple[str, str]] = deque()
        self._processing = False
        self._stopping = False
        self.failures: list[Failure] = []
        self.journal_error: JournalError | None = None
        self.data: dict[str, str] = dict(configuration.data)
        self._secret_data: set[str] = set()
        self._recorded: dict[str, frozenset[str]] = {
            i.name: i.marking for i in configuration.instances
        }
        self._instances = {i.name: i.type for i in configuration.instances}
        self._t0 = 0.0
        self.started_at = ""

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._t0 = time.monotonic()
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._emit is not None:
            self._emit(
                RunStarted(
                    self.configuration.assembly,
                    self.started_at,
                    self._expected[0],
                    self._expected[1],
                    self._predicted,
                    self._run_dir,
                )
            )
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._process(self.machine.advance())
        self._tg = None

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _process(self, moves: list[Move]) -> None:
        """Act on the moves the machine applied: start jobs, report, record. A transition
        that ends at once (instant jobs) is queued and handed back to the machine here, in a
        loop rather than by recursion."""
        self._handle(moves)
        if self._processing:
            return
        self._processing = True
        try:
            while self._ended and not self._stopping:
                instance, transition = self._ended.popleft()
                self._handle(self.machine.end(instance, transition))
        finally:
            self._processing = False

    def _handle(self, moves: list[Move]) -> None:
        touched: dict[str, None] = {}
        now = self.now()
        for move in moves:
            if move.kind == "fire":
                self._launch(move.instance, move.name)
            elif move.kind == "exec":
                ins = self.program[move.index]
                if self._emit is not None:
                    self._emit(InstructionDone(move.index, str(ins), now))
                if isinstance(ins, Add | Remove):
                    self._instances_changed()
            elif move.kind == "done" and self._emit is not None:
                self._emit(BehaviourDone(move.instance, move.name, move.index, now))
            elif move.kind == "reach":
                self._reached(move.instance, move.name)
            if move.instance:
                touched[move.instance] = None
        for name in touched:
            self._record_marking(name)
        if self._recorder is not None and touched and self.journal_error is None:
            try:
                self._recorder.flush()
            except JournalError as exc:
                # Without a journal nothing more may run: stop as after a failure.
                self.journal_error = exc
                self._stop()

    def _launch(self, instance: str, name: str) -> None:
        if self._stopping:
            return  # a failure (or the journal) stopped the run: nothing new starts
        machine = self.machine
        transition = machine.transition(instance, name)
        hosts = machine.hosts(instance)
        key = (instance, name)
        if not hosts:
            self._ended.append(key)
            return
        self._left[key] = len(hosts)
        instant = self._instant is not None and self._instant(
            transition.action, transition.expected
        )
        for host_name in hosts:
            host = self._host(host_name)
            j = len(self._jobs)
            if host_name == hosts[0]:
                self._first_job[key] = j
            self._jobs.append(_JobRec(instance, name, transition.behaviour, host, math.nan))
            if instant:
                self._start(j, run=False)
                self._job_done(j, "ok", _OK)
            elif self._has_room(host, transition.action):
                self._start(j)
            else:  # the host is at its limit: the job starts when one of its jobs ends
                self._waiting.setdefault(host.name, deque()).append(j)

    def _start(self, j: int, *, run: bool = True) -> None:
        """The job starts now: reported, and (`run`) its task created."""
        rec = self._jobs[j]
        rec.start = now = self.now()
        if self._emit is not None:
            self._emit(
                TransitionStarted(
                    f"{rec.instance}.{rec.transition}", rec.host.name, now, behaviour=rec.behaviour
                )
            )
        if run:
            self._host_running[rec.host.name] = self._host_running.get(rec.host.name, 0) + 1
            self._running += 1
            assert self._tg is not None
            self._tasks[j] = self._tg.create_task(self._run_job(j))

    def _has_room(self, host: Host, action: Action | None) -> bool:
        """Whether a job may start on `host` now: under the host's `madeus_max_parallel` and
        what the backend can run there at once without a queue of its own, and under the
        run's own limit (`max_parallel`)."""
        if self._max_parallel is not None and self._running >= self._max_parallel:
            return False
        key = (host.name, type(action))
        limit = self._limits.get(key, -1)
        if limit == -1:
            limit = host_limit(self._inventory, host.name)
            capacity = self._capacity(action, host) if self._capacity is not None else None
            if capacity is not None:
                limit = capacity if limit is None else min(limit, capacity)
            self._limits[key] = limit
        return limit is None or self._host_running.get(host.name, 0) < limit

    def _job_left_host(self, j: int) -> None:
        """A running job ended (or was cancelled): the next one waiting for its host starts."""
        host = self._jobs[j].host.name
        self._host_running[host] -= 1
        self._running -= 1
        if self._stopping:
            return
        waiting = self._waiting.get(host)
        if waiting and self._has_room(self._jobs[waiting[0]].host, self._action(waiting[0])):
            self._start(waiting.popleft())
        if self._max_parallel is None:
            return  # only this host's slot was freed
        # The run's limit freed a slot too: the oldest waiting job of any host that has room.
        while self._running < self._max_parallel:
            heads = sorted((queue[0], name) for name, queue in self._waiting.items() if queue)
            ready = next(
                (
                    (k, name)
                    for k, name in heads
                    if self._has_room(self._jobs[k].host, self._action(k))
                ),
                None,
            )
            if ready is None:
                return
            self._start(self._waiting[ready[1]].popleft())

    def _action(self, j: int) -> Action | None:
        rec = self._jobs[j]
        return self.machine.transition(rec.instance, rec.transition).action

    async def _run_job(self, j: int) -> None:
        rec = self._jobs[j]
        transition = self.machine.transition(rec.instance, rec.transition)
        tries = 1 + max(transition.retries, 0)
        attempt = 0
        try:
            while True:
                attempt += 1
                rec.attempts = attempt
                job = self._make_job(rec, attempt)
                status, outcome = await attempt_job(self._backend, job, transition.timeout)
                if status == "ok" or attempt >= tries or self._stopping:
                    break
                self._emit_end(j, status, outcome, final=False)
                if self._emit is not None:
                    self._emit(
                        TransitionStarted(
                            f"{rec.instance}.{rec.transition}",
                            rec.host.name,
                            self.now(),
                            attempt + 1,
                            behaviour=rec.behaviour,
                        )
                    )
        except asyncio.CancelledError:
            self._tasks.pop(j, None)
            rec.end = self.now()
            rec.status = "cancelled"
            self._host_running[rec.host.name] -= 1
            self._emit_end(j, "cancelled", Outcome(ok=False), final=True)
            raise
        self._tasks.pop(j, None)
        self._job_done(j, status, outcome)
        self._job_left_host(j)
        self._process([])

    def _job_done(self, j: int, status: Status, outcome: Outcome) -> None:
        rec = self._jobs[j]
        rec.end = self.now()
        rec.status = status
        key = (rec.instance, rec.transition)
        if self._first_job.get(key) == j and outcome.output:
            self._outputs[key] = outcome.output
        self._emit_end(j, status, outcome, final=True)
        if status != "ok":
            self._fail(j, status, outcome)
            return
        left = self._left[key] - 1
        self._left[key] = left
        if left == 0:
            del self._left[key]
            self._ended.append(key)

    def _fail(self, j: int, status: Status, outcome: Outcome) -> None:
        rec = self._jobs[j]
        transition = self.machine.transition(rec.instance, rec.transition)
        self.failures.append(
            Failure(
                transition=f"{rec.instance}.{rec.transition}",
                host=rec.host.name,
                status=status,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
                attempts=rec.attempts,
                span=transition.span,
            )
        )
        self._stop()

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._ended.clear()
        self._waiting.clear()  # jobs waiting for their host never start
        for task in list(self._tasks.values()):
            task.cancel()

    # --- values ----------------------------------------------------------------------------

    def _host(self, name: str) -> Host:
        found = self._inventory.hosts.get(name)
        if found is not None:
            return found
        return Host(name, name, connection="local" if name == LOCAL_HOST else "ssh")

    def _values_of(self, instance: str) -> InstanceValues:
        values = self._params.get(instance)
        if values is None:  # added by the program
            values = _params_of(self.machine, instance, self.configuration, self._environ)
            self._params[instance] = values
        return values

    def _make_job(self, rec: _JobRec, attempt: int) -> Job:
        machine = self.machine
        transition = machine.transition(rec.instance, rec.transition)
        inst_values = self._values_of(rec.instance)
        values = {**host_values(self._inventory, rec.host), **inst_values.params}
        secrets = inst_values.secrets
        run = machine.runs[rec.instance]
        for port, (value, secret) in self._used(rec.instance).items():
            values[port] = value
            if secret:
                secrets = secrets | {value}
        tid = f"{rec.instance}.{rec.transition}"
        stdout_path = stderr_path = None
        if self._run_dir is not None:
            stem = log_stem(tid, rec.host.name)
            stdout_path = self._run_dir / f"{stem}.out"
            stderr_path = self._run_dir / f"{stem}.err"
        return Job(
            id=tid,
            instance=rec.instance,
            transition=rec.transition,
            behaviour=transition.behaviour,
            action=transition.action,
            host=rec.host,
            values=values,
            secrets=secrets,
            duration=transition.expected,
            attempt=attempt,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            workdir=action_dir(run.ix.component),
            types=inst_values.types,
        )

    def _reached(self, instance: str, place: str) -> None:
        """A place was reached: (re)compute the data provide ports bound to it."""
        run = self.machine.runs.get(instance)
        if run is None:
            return
        for port in run.ix.component.provides:
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
            run = self.machine.runs[instance]
            hosts = run.hosts
            facts = host_values(self._inventory, self._host(hosts[0])) if hosts else {}
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
        return True

    def _used(
        self, instance: str, seen: frozenset[str] = frozenset()
    ) -> dict[str, tuple[str, bool]]:
        """The values of `instance`'s connected data use ports: port -> (value, secret). A value
        the run does not have yet (a secret is never recorded; an added instance's ports were
        never reached) is computed when its provide port is active, from what it reads in turn
        (`seen`: the instances on the way, against a cycle)."""
        machine = self.machine
        found = {}
        for port, use in machine.runs[instance].ix.uses.items():
            target = machine.links.get((instance, port))
            if use.kind != "data" or target is None:
                continue
            key = f"{target[0]}.{target[1]}"
            if key not in self.data and target[0] not in seen and machine.active(*target):
                provider = machine.runs[target[0]].ix.provides[target[1]]
                if isinstance(provider.value, str):
                    self._provide(target[0], target[1], provider.value, seen | {instance})
            if key in self.data:
                found[port] = (self.data[key], key in self._secret_data)
        return found

    # --- the journal -------------------------------------------------------------------------

    def _record_marking(self, instance: str) -> None:
        if self._recorder is None or instance not in self.machine.runs:
            return
        marking = self.machine.marking_for_journal(instance)
        if self._recorded.get(instance) != marking:
            self._recorded[instance] = marking
            self._recorder.marking(instance, marking)

    def _instances_changed(self) -> None:
        current = {name: run.ix.component.name for name, run in self.machine.runs.items()}
        if current != self._instances:
            self._instances = current
            if self._recorder is not None:
                self._recorder.instances(current)

    # --- events and trace --------------------------------------------------------------------

    def _emit_end(self, j: int, status: Status, outcome: Outcome, *, final: bool) -> None:
        if self._emit is None:
            return
        rec = self._jobs[j]
        self._emit(
            TransitionEnded(
                id=f"{rec.instance}.{rec.transition}",
                host=rec.host.name,
                start=rec.start,
                end=rec.end if final else self.now(),
                status=status,
                attempt=rec.attempts,
                final=final,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
                behaviour=rec.behaviour,
            )
        )

    def trace(self) -> Trace:
        now = self.now()
        events = [
            TraceEvent(
                f"{r.instance}.{r.transition}",
                r.host.name,
                r.start,
                now if math.isnan(r.end) else r.end,
                r.status or "cancelled",
                r.behaviour,
                r.attempts,
            )
            for r in self._jobs
            if not math.isnan(r.start)  # never started (waiting for its host at a failure)
        ]
        events.sort(key=lambda e: e.start)
        makespan = max((e.end for e in events), default=0.0)
        hosts: dict[str, int] = {}
        for (host, _), limit in self._limits.items():
            if limit is not None:
                hosts[host] = min(limit, hosts.get(host, limit))
        limits = (
            Limits(self._max_parallel, hosts) if hosts or self._max_parallel is not None else None
        )
        return Trace(self.configuration.assembly, self.started_at, makespan, tuple(events), limits)


def _params_of(
    machine: Machine, instance: str, configuration: Configuration, environ: Mapping[str, str]
) -> InstanceValues:
    run = machine.runs[instance]
    resolved = ResolvedInstance(instance, run.ix.component, run.hosts, machine.params_of(instance))
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
    *,
    simulate: bool | SimulateMode = False,
    time_scale: float = 1.0,
    on_event: EventSink | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
    prediction: Prediction | None = None,
    recorder: Recorder | None = None,
    known_hosts: str | None = None,
    insecure_no_host_key_check: bool = False,
    habits: Habits | None = None,
    max_parallel: int | None = None,
    ssh_keepalive_interval: float | None = None,
    ssh_keepalive_count_max: int | None = None,
) -> ReconfigResult:
    """Run `program` from `configuration` (verify it first: `madeus.verify.behaviours`).

    - `simulate`: True or "local" replaces every action by a sleep of its declared duration
      times `time_scale`; "remote" sleeps on the real hosts (over SSH);
    - `on_event`: called with RunStarted, TransitionStarted / TransitionEnded (with their
      `behaviour`), InstructionDone, BehaviourDone, RunEnded;
    - `run_dir`: per-job logs and `trace.json`; `recorder`: where markings are written (the
      journal, `madeus.reconfig.state.Recorder`);
    - `prediction`: for the predicted makespan in RunStarted and the result;
    - `habits`: Ansible's command-line habits (check mode: give no `recorder`);
    - `max_parallel`: at most this many jobs at once (besides each host's limits);
    - `ssh_keepalive_interval`, `ssh_keepalive_count_max`: as for `deploy` (else the
      inventory's `madeus_ssh_keepalive_*`, else the SSH backend's defaults).

    Every backend is built and every remote host connected before anything runs (an
    unreachable host is a BackendError then, nothing ran).

    Raises ReconfigError when a transition fails (or an unverified program blocks or loops),
    ParameterError when an `env("X")` parameter is unset (nothing ran).
    """
    if time_scale < 0:
        raise ValueError("time_scale must not be negative")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    if habits is not None and habits.check and recorder is not None:
        raise ValueError("a check run records nothing: give it no recorder")
    env = os.environ if environ is None else environ
    params = _resolve_all(configuration, env)
    mode: SimulateMode | None = "local" if simulate is True else (simulate or None)
    scale = time_scale if mode is not None else 1.0
    directory = Path(run_dir) if run_dir is not None else None
    router = Router(
        backend_config(
            configuration.inventory,
            mode,
            time_scale,
            directory,
            known_hosts=known_hosts,
            insecure_no_host_key_check=insecure_no_host_key_check,
            ssh_keepalive_interval=ssh_keepalive_interval,
            ssh_keepalive_count_max=ssh_keepalive_count_max,
            habits=habits,
        )
    )
    predicted = prediction.makespan * scale if prediction is not None else 0.0
    status: Literal["ok", "failed", "interrupted"] = "interrupted"
    executor: ReconfigExecutor | None = None
    try:
        if backend is None:
            await router.ready(_actions(configuration, program))
        executor = ReconfigExecutor(
            configuration,
            program,
            backend if backend is not None else router,
            params=params,
            environ=env,
            on_event=on_event,
            run_dir=directory,
            recorder=recorder,
            predicted_makespan=predicted,
            expected=(
                (len(prediction.steps), sum(len(st.hosts) for st in prediction.steps))
                if prediction is not None
                else (0, 0)
            ),
            max_parallel=max_parallel,
        )
        if directory is not None:
            make_private_dir(directory)
        if recorder is not None:
            recorder.begin(directory.name if directory is not None else "reconfigure", directory)
        try:
            await executor.run()
            status = "failed" if executor.failures else "ok"
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


def _actions(configuration: Configuration, program: Program) -> list[tuple[Action | None, Host]]:
    """(action, host) of every transition the program may run, to build the backends first."""
    pairs: list[tuple[Action | None, Host]] = []
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
                host = inventory.hosts.get(h) or Host(
                    h, h, connection="local" if h == LOCAL_HOST else "ssh"
                )
                pairs.append((t.action, host))
    return pairs


def reconfigure_sync(
    configuration: Configuration, program: Program, **options: Any
) -> ReconfigResult:
    """`reconfigure` for synchronous callers (runs its own event loop)."""
    return asyncio.run(reconfigure(configuration, program, **options))
