"""The job runner: runs the jobs of a deployment and of a reconfiguration alike.

A *slot* is one transition to run (a deployment's transition, or one firing of a
reconfiguration's); each host of a slot is a *job*, numbered so that the jobs of slot s are
`job_base[s] .. job_base[s + 1] - 1`. A scheduler (the dependency counters of a deployment,
`madeus.engine.executor`; the Concerto machine of a reconfiguration,
`madeus.reconfig.executor`) adds slots, says when one is ready, gives a job's inputs, and is
told when every job of a slot has ended. Everything else is here, once: limits (critical path
first), attempts, retries and their backoff, timeouts, injected failures, skipped jobs of a
resume, cancellation, events, the journal and its durability, outputs, and the trace.

Zero-time jobs (the router says `instant`: no action, or a zero simulated duration) complete
synchronously in `_pump`, without a task: a chain of 10,000 of them costs microseconds per
hop. Everything else is a task in the run's TaskGroup. `_pump` is the only place that starts
jobs; it is re-entrant-safe: a job that completes inside it (and the scheduler it tells) only
queues what becomes ready.

On failure (after retries) nothing new starts; running jobs are cancelled, or left to finish
with `let_running_finish`. With `keep_going`, a failure stops only what depends on it.

The journal (optional) is written by a thread (`madeus.engine.commit`): the loop never waits
for the disk. With `job_records` (a deployment), every job's start and end is recorded; a
reconfiguration records markings instead (its scheduler jots them). A job whose action is not
safe to run again (`Transition.safe_to_rerun`) waits, before its action runs, until what was
recorded before it started is durable; a job stopped while it waits withdraws its start
record (`unstart`): its action never ran.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from madeus.backends.base import Backend, Capacity, Instant, Job, Outcome
from madeus.engine.commit import GroupCommit
from madeus.engine.errors import Failure, JournalError
from madeus.engine.events import Event, RunStarted, TransitionEnded, TransitionStarted
from madeus.engine.journal import Journal
from madeus.engine.limits import Limiter
from madeus.engine.options import RunOptions
from madeus.engine.runlog import log_stem
from madeus.engine.select import matches
from madeus.engine.values import InstanceValues, host_values
from madeus.errors import MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import Action, Transition
from madeus.trace import AgentRecord, Limits, Status, Trace, TraceEvent

EventSink = Callable[[Event], None]
# Per-job status codes in the hot arrays (strings only when the trace is built).
_NOT_STARTED, _RUNNING = 0, 1
_CODES: dict[Status, int] = {"ok": 2, "failed": 3, "timeout": 4, "cancelled": 5, "skipped": 6}
_STATUS: dict[int, Status] = {code: status for status, code in _CODES.items()}
_OK, _CANCELLED, _SKIPPED = _CODES["ok"], _CODES["cancelled"], _CODES["skipped"]
_FAILED = _CODES["failed"]
_INSTANT = Outcome(ok=True)
_CANCELLED_OUTCOME = Outcome(ok=False)
_log = logging.getLogger(__name__)
# What `_report` does with a queued item.
_STARTED, _ENDED, _EVENT, _START_RECORD, _END_RECORD, _LINE = range(6)


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a job of a slot needs from its scheduler: the instance's parameters, the values
    of its connected data use ports (port -> (value, secret)), its actions' directory."""

    values: InstanceValues
    used: Mapping[str, tuple[str, bool]]
    workdir: Path


class Scheduler(Protocol):
    def inputs(self, slot: int) -> Inputs: ...

    def ended(self, slot: int) -> None:
        """Every job of `slot` ended well (or was skipped): append what it enables to
        `Runner.ready_queue`. May call `Runner.fail_slot`."""


class Runner:
    def __init__(
        self,
        assembly: str,
        backend: Backend,
        inventory: Inventory,
        options: RunOptions,
        *,
        on_event: EventSink | None = None,
        run_dir: Path | None = None,
        journal: Journal | None = None,
        job_records: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        """`job_records`: record each job's start and end in the journal (a deployment)."""
        self.assembly = assembly
        self.scheduler: Scheduler | None = None
        self._backend = backend
        self._inventory = inventory
        self._o = options
        self._emit = on_event
        self._run_dir = run_dir
        self._is_instant = backend.instant if isinstance(backend, Instant) else None
        self._capacity = backend.capacity if isinstance(backend, Capacity) else None
        self._inject_scale = options.scale if options.mode is not None else 0.0
        self._rng = rng if rng is not None else random.Random()
        self._inject = _matcher(options.inject_failures) if options.inject_failures else None
        # Slots
        self.ids: list[str] = []
        self._selected_as: list[str] = []  # the id selectors match, per slot
        self.instance_of: list[str] = []
        self.transitions: list[Transition] = []
        self.job_base: list[int] = [0]
        self._jobs_left: list[int] = []
        self._instant: list[bool] = []
        self._must_wait: list[bool] = []
        self._keep_output: list[bool] = []
        # 1 when another party (a site's agent, or the controller) runs the slot's jobs: it
        # never starts here; what became of it is told (`told_start`, `told_end`, `told_ended`).
        self.foreign = bytearray()
        self.outputs: dict[int, str] = {}  # slot -> its first host's output (redacted)
        # Jobs
        self.job_slot: list[int] = []
        self.job_host: list[int] = []
        self._priority: list[float] = []
        self._start: list[float] = []
        self._end: list[float] = []
        self._code = bytearray()
        self._attempts = bytearray()
        self._start_seq: list[int] = []
        self._skip = bytearray()
        self._injected_jobs = bytearray()
        # Hosts and limits
        self.hosts: list[Host] = []
        self._host_index: dict[str, int] = {}
        self._host_limits: list[int | None] = []
        self._capped: set[tuple[type, int]] = set()
        self._limiter: Limiter | None = None
        self._facts: dict[int, dict[str, str]] = {}
        # The run
        # Slots whose dependencies are satisfied: their jobs start (as limits allow), oldest
        # first (FIFO relies on it). Schedulers append.
        self.ready_queue: deque[int] = deque()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # The hosts of a slot whose jobs one pump launched, by job (first attempts): backends
        # may run them together (`Job.batch`).
        self._batch: dict[int, list[str]] = {}
        self._launched: dict[int, list[str]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._pumping = False
        # Called after every job's end, and on `stop` (the agents' relay watches both).
        self.after_job: Callable[[], None] | None = None
        self.on_stop: Callable[[], None] | None = None
        self.agents: tuple[AgentRecord, ...] = ()  # the site agents of the run, for the trace
        self._ended: Callable[[int], None] = _nothing  # the scheduler's `ended`, during a run
        self.stopping = False
        self.failures: list[Failure] = []
        self.skipped = 0
        self._job_records = job_records and journal is not None
        self._rehearsal = options.mode == "local"
        self.commit = GroupCommit(journal, self._journal_failed) if journal is not None else None
        self.journal_error: JournalError | None = None
        # What the jobs report (events, journal records), in order, done after the jobs they
        # enabled have started (see `_report`).
        self._later: list[tuple[Any, ...]] = []
        self._report_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jh: list[str] = []  # JSON-encoded host names
        self._jt: dict[int, str] = {}  # JSON-encoded slot ids, on first use
        self._t0 = 0.0
        self.started_at = ""

    # --- building: hosts and slots -------------------------------------------------------------

    def host(self, name: str) -> int:
        """The index of host `name` (`Inventory.host`)."""
        h = self._host_index.get(name)
        return h if h is not None else self.add_host(self._inventory.host(name))

    def add_host(self, host: Host) -> int:
        h = self._host_index.get(host.name)
        if h is not None:
            return h
        h = self._host_index[host.name] = len(self.hosts)
        self.hosts.append(host)
        self._jh.append(json.dumps(host.name))
        self._host_limits.append(host_limit(self._inventory, host.name))
        if self._limiter is not None:
            self._limiter.add_host()
        return h

    def declare(self, action: Action | None, h: int) -> None:
        """A job of `action` may run on host `h`: what the backend serving it can run there at
        once without a queue of its own (`Router.capacity`) limits the host. Declare every
        (action, host) before the run: the limits are fixed when it starts."""
        if self._capacity is None:
            return
        key = (type(action), h)
        if key in self._capped:
            return
        self._capped.add(key)
        cap = self._capacity(action, self.hosts[h])
        if cap is not None:
            current = self._host_limits[h]
            self._host_limits[h] = cap if current is None else min(current, cap)

    def add(
        self,
        tid: str,
        instance: str,
        transition: Transition,
        hosts: Sequence[int],
        *,
        priority: float = 0.0,
        keep_output: bool = True,
        selected_as: str | None = None,
    ) -> int:
        """A slot: `transition` of `instance` on `hosts` (indices); not ready yet.
        `selected_as`: the id that selectors (`--inject-failure`) match, if not `tid` (a
        batch of a rolling change is selected as its instance's transition)."""
        s = len(self.ids)
        self.ids.append(tid)
        self._selected_as.append(selected_as or tid)
        self.instance_of.append(instance)
        self.transitions.append(transition)
        self._jobs_left.append(len(hosts))
        self._instant.append(
            self._is_instant is not None
            and self._is_instant(transition.action, transition.expected)
        )
        self._must_wait.append(
            self.commit is not None and not self._rehearsal and not transition.safe_to_rerun
        )
        self._keep_output.append(keep_output)
        self.foreign.append(0)
        inject = self._inject
        for h in hosts:
            self.job_slot.append(s)
            self.job_host.append(h)
            self._priority.append(priority)
            self._injected_jobs.append(
                1 if inject is not None and inject(self._selected_as[s], self.hosts[h].name) else 0
            )
        count = len(hosts)
        self._start.extend([math.nan] * count)
        self._end.extend([math.nan] * count)
        self._code.extend(bytes(count))
        self._attempts.extend(bytes(count))
        self._start_seq.extend([0] * count)
        self._skip.extend(bytes(count))
        self.job_base.append(self.job_base[-1] + count)
        return s

    def skip(self, jobs: Iterable[int]) -> None:
        """Jobs that ended in an earlier run (a resume): they end as soon as they are ready,
        with status `skipped`, and no journal record."""
        for j in jobs:
            self._skip[j] = 1
            self.skipped += 1

    # --- what other parties tell (agents) ------------------------------------------------------

    def hand_over(self, slots: Iterable[int]) -> None:
        """Another party runs these slots' jobs: they never start here."""
        for s in slots:
            self.foreign[s] = 1

    def told_start(self, j: int, at: float, attempt: int) -> None:
        """A job another party runs started (attempt `attempt`) at `at`, in this run's time."""
        s = self.job_slot[j]
        if attempt == 1:
            self._start[j] = at
            self._code[j] = _RUNNING
            if self._job_records:
                self._later.append((_START_RECORD, j, s, at))
        self._attempts[j] = min(attempt, 255)
        if self._emit is not None:
            self._later.append((_STARTED, j, s, at, attempt))
        self._schedule_report()

    def told_end(
        self, j: int, status: Status, outcome: Outcome, start: float, end: float, attempts: int
    ) -> None:
        """A job another party runs ended (after `attempts` attempts): recorded, traced and
        counted as if it had run here (a cancelled one as if cancelled here: no failure)."""
        s = self.job_slot[j]
        self._start[j] = start
        self._end[j] = end
        self._attempts[j] = min(attempts, 255)
        if status == "cancelled":
            self._code[j] = _CANCELLED
            if self._job_records:
                self._later.append((_END_RECORD, j, s, "cancelled", end, None))
            if self._emit is not None:
                self._later.append((_ENDED, j, s, "cancelled", outcome, attempts, None))
            if self.after_job is not None:
                self.after_job()
        else:
            self._job_ended(j, s, _CODES[status], outcome, end)
        self._schedule_report()

    def running(self, j: int) -> bool:
        return self._code[j] == _RUNNING

    def started(self, j: int) -> float:
        return self._start[j]

    @property
    def t0(self) -> float:
        """The run's time origin (`time.monotonic()`)."""
        return self._t0

    def told_ended(self, s: int, output: str | None = None) -> None:
        """Every job of a slot another party runs ended well: what waits for it may start
        (the party is told only the ends it needs, not each job's)."""
        if output is not None:
            self.outputs[s] = output
        self._ended(s)
        self._pump()

    def idle(self) -> bool:
        """Nothing runs here and nothing waits to start."""
        return (
            not self._tasks
            and not self.ready_queue
            and (self._limiter is None or not self._limiter.waiting())
        )

    # --- the run -------------------------------------------------------------------------------

    async def run(
        self,
        begin: Callable[[], None],
        *,
        expected: tuple[int, int],
        predicted_makespan: float,
        until: Callable[[], Coroutine[Any, Any, None]] | None = None,
        t0: float | None = None,
    ) -> None:
        """Run: `begin` (in the TaskGroup) makes the first slots ready; return when nothing
        runs any more (see `failures`, `journal_error`) and `until()`, if given, has returned
        (what other parties run is over). `t0`: the run's time origin (`time.monotonic()`),
        now if None."""
        self._t0 = time.monotonic() if t0 is None else t0
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._emit is not None:
            self._emit(
                RunStarted(
                    self.assembly,
                    self.started_at,
                    expected[0],
                    expected[1],
                    predicted_makespan,
                    self._run_dir,
                    self.skipped,
                )
            )
        max_parallel = self._o.max_parallel
        if max_parallel is not None or any(x is not None for x in self._host_limits):
            self._limiter = Limiter(
                max_parallel, self._host_limits, self._priority, self.job_host, self._o.scheduling
            )
        self._loop = asyncio.get_running_loop()
        assert self.scheduler is not None
        self._ended = self.scheduler.ended
        if self.commit is not None:
            self.commit.start()
        # Timers fire when due, not up to 50 us later (Linux's default slack): a hop is a timer.
        _precise_timers(True)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if until is not None:
                    tg.create_task(until())
                begin()
                self._pump()
        finally:
            _precise_timers(False)
            self._tg = None
            self._report()
            if self.commit is not None:
                if self._job_records:
                    # A task cancelled before its first step never ran its action: its start
                    # record is withdrawn, so a resume does not ask about it.
                    for j in self._tasks:
                        if self._code[j] == _RUNNING:
                            self.commit.jot(self._unstart_record(j))
                self.commit.drain()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        self._launched = {}
        try:
            ready = self.ready_queue
            base = self.job_base
            limiter = self._limiter
            launch = self._launch
            foreign = self.foreign
            while not self.stopping:
                if ready:
                    s = ready.popleft()
                    first, last = base[s], base[s + 1]
                    if first == last:  # no host: it ends at once, for every party
                        self._ended(s)
                    elif foreign[s]:
                        pass  # its party runs it and tells
                    elif limiter is None:
                        for j in range(first, last):
                            launch(j)
                    else:
                        for j in range(first, last):
                            limiter.push(j)
                    continue
                if limiter is None:
                    break
                job = limiter.pop()
                if job is None:
                    break
                launch(job)
        finally:
            self._pumping = False
            if self._later and not self._report_scheduled:
                self._schedule_report()

    def _launch(self, j: int) -> None:
        s = self.job_slot[j]
        now = time.monotonic() - self._t0
        self._start[j] = now
        if self._skip[j]:
            self._end[j] = now
            self._job_ended(j, s, _SKIPPED, _INSTANT, now)
            return
        self._code[j] = _RUNNING
        if self._emit is not None:
            self._later.append((_STARTED, j, s, now, 1))
        injected = self._injected_jobs[j]
        if injected and self._injected_delay(s) <= 0:
            self._end[j] = now
            self._attempts[j] = 1
            self._job_ended(j, s, _FAILED, self._injected(j, s), now)
            return
        if self._instant[s]:
            self._end[j] = now
            self._attempts[j] = 1
            self._job_ended(j, s, _OK, _INSTANT, now)
            return
        if self.commit is not None:
            if self._job_records:
                self._later.append((_START_RECORD, j, s, now))
            if self._must_wait[s]:
                self._report()  # its start record goes to the journal now: it waits for it
                self._start_seq[j] = self.commit.jotted
        if not injected:
            batch = self._launched.get(s)
            if batch is None:
                batch = self._launched[s] = []
            batch.append(self._host_name(j))
            self._batch[j] = batch
        assert self._tg is not None
        self._tasks[j] = self._tg.create_task(self._run_job(j, s))

    async def _run_job(self, j: int, s: int) -> None:
        transition = self.transitions[s]
        tries = 1 + max(transition.retries, 0)
        attempt = 0
        acting = False
        job: Job | None = None
        try:
            if self._must_wait[s]:
                assert self.commit is not None
                await self.commit.until_durable(self._start_seq[j])
            acting = True
            while True:
                attempt += 1
                self._attempts[j] = min(attempt, 255)
                status: Status
                if self._injected_jobs[j]:
                    await asyncio.sleep(self._injected_delay(s))
                    status, outcome = "failed", self._injected(j, s)
                else:
                    job = self._make_job(j, s, attempt)
                    status, outcome = await attempt_job(self._backend, job, transition.timeout)
                    if attempt == 1 and outcome.started is not None:
                        # The backend knows when the host's part really started (a queue of
                        # its own, `serial` batches): the trace shows it.
                        start = outcome.started - self._t0
                        self._start[j] = min(max(start, self._start[j]), self.now())
                if status == "ok" or attempt >= tries or self.stopping:
                    break
                if self._emit is not None:
                    self._later.append((_ENDED, j, s, status, outcome, attempt, self.now()))
                    self._schedule_report()
                if self._o.retry_backoff > 0:
                    await asyncio.sleep(self.retry_delay(attempt))
                    if self.stopping:
                        break
                if self._emit is not None:
                    self._later.append((_STARTED, j, s, self.now(), attempt + 1))
                    self._schedule_report()
        except asyncio.CancelledError:
            self._tasks.pop(j, None)
            self._batch.pop(j, None)
            now = self.now()
            self._end[j] = now
            self._code[j] = _CANCELLED
            if self._limiter is not None:
                self._limiter.release(j)
            if self._job_records:
                # Stopped before its action ran: the start is withdrawn, not a cancelled end.
                if acting:
                    self._later.append((_END_RECORD, j, s, "cancelled", now, None))
                else:
                    self._later.append((_LINE, self._unstart_record(j)))
            if self._emit is not None:
                self._later.append((_ENDED, j, s, "cancelled", _CANCELLED_OUTCOME, attempt, None))
            self._schedule_report()
            raise
        self._tasks.pop(j, None)
        self._batch.pop(j, None)
        now = self.now()
        if outcome.ended is not None:  # the host's part ended before the others'
            now = min(max(outcome.ended - self._t0, self._start[j]), now)
        self._end[j] = now
        if status == "ok" and job is not None and outcome.output:
            outcome = replace(outcome, output=job.redact(outcome.output))
        self._job_ended(j, s, _CODES[status], outcome, now)

    def _injected_delay(self, s: int) -> float:
        return self.transitions[s].expected * self._inject_scale

    def _injected(self, j: int, s: int) -> Outcome:
        message = (
            f"injected failure (--inject-failure {self._selected_as[s]}@{self._host_name(j)}): "
            "the action did not run"
        )
        return Outcome(ok=False, message=message)

    def retry_delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1, 2...): base x 2^(attempt - 1), at most
        the cap, then a random part of it (equal jitter: between half and all of it), so that
        many jobs failing together do not retry in lockstep."""
        o = self._o
        delay: float = min(o.retry_backoff_max, o.retry_backoff * 2.0 ** min(attempt - 1, 60))
        return delay / 2 + self._rng.random() * delay / 2

    def _job_ended(self, j: int, s: int, code: int, outcome: Outcome, now: float) -> None:
        self._code[j] = code
        if self._limiter is not None and not self.foreign[s]:
            self._limiter.release(j)
        output: str | None = None
        if code == _OK and self._keep_output[s] and j == self.job_base[s]:
            output = self.outputs[s] = outcome.output
        if self._emit is not None:
            self._later.append((_ENDED, j, s, _STATUS[code], outcome, self._attempts[j], None))
        if self._job_records and code != _SKIPPED:
            # A lost connection leaves the outcome unknown: the journal says so ("lost"),
            # and a resume asks about it as about a cancelled action.
            recorded = "lost" if code != _OK and outcome.uncertain else _STATUS[code]
            self._later.append((_END_RECORD, j, s, recorded, now, output))
        if code != _OK and code != _SKIPPED:
            self._fail(j, s, _STATUS[code], outcome)
            if not self.stopping:
                self._pump()  # keep going: the freed slot may start a waiting job
            if self.after_job is not None:
                self.after_job()
            return
        left = self._jobs_left[s] - 1
        self._jobs_left[s] = left
        if left == 0:
            self._ended(s)
        self._pump()
        if self.after_job is not None:
            self.after_job()

    def fail_slot(self, s: int, message: str) -> None:
        """The scheduler could not go on after `s` ended (a data value that cannot be
        computed): a failure of its first job."""
        self._fail(self.job_base[s], s, "failed", Outcome(ok=False, message=message))

    def _fail(self, j: int, s: int, status: Status, outcome: Outcome) -> None:
        self.failures.append(
            Failure(
                transition=self.ids[s],
                host=self._host_name(j) if j < len(self.job_host) else "",
                status=status,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
                attempts=self._attempts[j] if j < len(self._attempts) else 0,
                span=self.transitions[s].span,
            )
        )
        if self.stopping or self._o.keep_going:
            return
        self.stop()

    def stop(self) -> None:
        """Nothing new starts; running jobs are cancelled (unless `let_running_finish`)."""
        if self.stopping:
            return
        self.stopping = True
        if self.on_stop is not None:
            self.on_stop()
        self.ready_queue.clear()
        if self._limiter is not None:
            self._limiter.clear()  # queued jobs never start: they stay out of the trace
        if not self._o.let_running_finish:
            for task in list(self._tasks.values()):
                task.cancel()

    # --- jobs ------------------------------------------------------------------------------

    def _host_name(self, j: int) -> str:
        return self.hosts[self.job_host[j]].name

    def _make_job(self, j: int, s: int, attempt: int) -> Job:
        assert self.scheduler is not None
        inputs = self.scheduler.inputs(s)
        transition = self.transitions[s]
        h = self.job_host[j]
        host = self.hosts[h]
        facts = self._facts.get(h)
        if facts is None:
            facts = self._facts[h] = host_values(self._inventory, host)
        values = {**facts, **inputs.values.params}
        secrets = inputs.values.secrets
        for port, (value, secret) in inputs.used.items():
            values[port] = value
            if secret:
                secrets = secrets | {value}
        stdout_path = stderr_path = None
        tid = self.ids[s]
        if self._run_dir is not None:
            stem = log_stem(tid, host.name)
            stdout_path = self._run_dir / f"{stem}.out"
            stderr_path = self._run_dir / f"{stem}.err"
        return Job(
            id=tid,
            instance=self.instance_of[s],
            transition=transition.name,
            behaviour=transition.behaviour,
            action=transition.action,
            host=host,
            values=values,
            secrets=secrets,
            duration=transition.expected,
            attempt=attempt,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            workdir=inputs.workdir,
            types=inputs.values.types,
            batch=tuple(self._batch.get(j, ())) if attempt == 1 else (),
        )

    # --- the journal -------------------------------------------------------------------------

    def jot(self, line: str) -> None:
        """A scheduler's own record (a data value), written with the jobs' records."""
        if self.commit is not None:
            self._later.append((_LINE, line))

    # --- reporting -------------------------------------------------------------------------

    def emit(self, event: Any) -> None:
        """A scheduler's own event (a reconfiguration's `BehaviourDone`), in order with the
        jobs' events."""
        if self._emit is not None:
            self._later.append((_EVENT, event))
            self._schedule_report()

    def _schedule_report(self) -> None:
        if not self._report_scheduled and self._loop is not None:
            self._report_scheduled = True
            self._loop.call_soon(self._report)

    def _report(self) -> None:
        """Emit the queued events and write the queued journal records, in order. Scheduled at
        the end of the pump that started the jobs a hop enabled: their tasks were created
        first, so a successor's action starts before the report of its predecessor's end is
        done (and a job that must wait for its start record reports at once, see `_launch`)."""
        self._report_scheduled = False
        items, self._later = self._later, []
        emit, commit = self._emit, self.commit
        for item in items:
            kind = item[0]
            if kind == _STARTED:
                _, j, s, now, attempt = item
                if emit is not None:
                    host, behaviour = self._host_name(j), self.transitions[s].behaviour
                    emit(TransitionStarted(self.ids[s], host, now, attempt, behaviour))
            elif kind == _ENDED:
                _, j, s, status, outcome, attempt, at = item
                if emit is not None:
                    self._emit_end(j, s, status, outcome, attempt, at)
            elif kind == _EVENT:
                if emit is not None:
                    emit(item[1])
            elif commit is None:
                continue
            elif kind == _START_RECORD:
                _, j, s, now = item
                commit.jot(
                    f'{{"k":"start","t":{self._tid(s)},"h":{self._jh[self.job_host[j]]},'
                    f'"at":{now:.6f}}}\n'
                )
            elif kind == _END_RECORD:
                _, j, s, recorded, now, output = item
                commit.jot(self._end_record(j, s, recorded, now, output))
            else:
                commit.jot(item[1])

    def _tid(self, s: int) -> str:
        tid = self._jt.get(s)
        if tid is None:
            tid = self._jt[s] = json.dumps(self.ids[s])
        return tid

    def _end_record(self, j: int, s: int, status: str, now: float, output: str | None) -> str:
        out = "" if output is None else f',"out":{json.dumps(output)}'
        return (
            f'{{"k":"end","t":{self._tid(s)},"h":{self._jh[self.job_host[j]]},'
            f'"s":"{status}","at":{now:.6f}{out}}}\n'
        )

    def _unstart_record(self, j: int) -> str:
        s = self.job_slot[j]
        return f'{{"k":"unstart","t":{self._tid(s)},"h":{self._jh[self.job_host[j]]}}}\n'

    def _journal_failed(self, exc: JournalError) -> None:
        # Without a journal nothing may run: stop as after a failure.
        self.journal_error = exc
        self.stop()

    # --- events and trace ------------------------------------------------------------------

    def _emit_end(
        self, j: int, s: int, status: Status, outcome: Outcome, attempt: int, at: float | None
    ) -> None:
        """`at`: when a try that is not the last ended (None: the job's end)."""
        assert self._emit is not None
        final = at is None
        end = self._end[j] if at is None else at
        self._emit(
            TransitionEnded(
                id=self.ids[s],
                host=self._host_name(j),
                start=self._start[j],
                end=end,
                status=status,
                attempt=attempt,
                final=final,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
                behaviour=self.transitions[s].behaviour,
            )
        )

    def limits(self) -> Limits | None:
        named = {
            h.name: n for h, n in zip(self.hosts, self._host_limits, strict=True) if n is not None
        }
        if self._o.max_parallel is None and not named:
            return None
        return Limits(self._o.max_parallel, named)

    def trace(self) -> Trace:
        """The trace so far: one event per job that started (running ones end now)."""
        now = self.now()
        events: list[TraceEvent] = []
        ids, hosts, job_slot, job_host = self.ids, self.hosts, self.job_slot, self.job_host
        behaviours = [t.behaviour for t in self.transitions]
        for j, code in enumerate(self._code):
            if code == _NOT_STARTED:
                continue
            s = job_slot[j]
            end = self._end[j]
            status = _STATUS.get(code, "cancelled")  # still running at an interruption
            events.append(
                TraceEvent(
                    ids[s],
                    hosts[job_host[j]].name,
                    self._start[j],
                    now if math.isnan(end) else end,
                    status,
                    behaviours[s],
                    0 if code == _SKIPPED else max(self._attempts[j], 1),
                )
            )
        events.sort(key=lambda e: e.start)
        makespan = max((e.end for e in events), default=0.0)
        return Trace(
            self.assembly, self.started_at, makespan, tuple(events), self.limits(), self.agents
        )


class OnRunner:
    """What a scheduler shows of its run: the base of both executors."""

    runner: Runner

    @property
    def failures(self) -> list[Failure]:
        return self.runner.failures

    @property
    def journal_error(self) -> JournalError | None:
        return self.runner.journal_error

    @journal_error.setter
    def journal_error(self, error: JournalError | None) -> None:
        self.runner.journal_error = error

    def now(self) -> float:
        return self.runner.now()

    def trace(self) -> Trace:
        return self.runner.trace()


def _nothing(slot: int) -> None:
    return None


_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30
# Runs under way in each thread, and the slack each thread had before the first of them.
_precise: dict[int, tuple[int, int | None]] = {}


def _precise_timers(on: bool) -> None:
    """A run starts (`on`) or ends in this thread: the first sets the thread's timer slack to
    1 ns, the last puts back what it was (runs may overlap in one event loop)."""
    thread = threading.get_ident()
    count, previous = _precise.get(thread, (0, None))
    if on:
        _precise[thread] = (count + 1, _timer_slack(1) if count == 0 else previous)
        return
    if count <= 1:
        _precise.pop(thread, None)
        if previous is not None:
            _timer_slack(previous)
    else:
        _precise[thread] = (count - 1, previous)


def _timer_slack(nanoseconds: int) -> int | None:
    """Set this thread's timer slack (Linux `prctl`); the previous one, or None where it cannot
    be set."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        previous = int(libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0))
        if previous < 0 or libc.prctl(_PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return previous


def _matcher(selectors: Sequence[str]) -> Callable[[str, str], bool]:
    return lambda tid, host: any(matches(selector, tid, host) for selector in selectors)


def host_limit(inventory: Inventory, host: str) -> int | None:
    """`madeus_max_parallel` from the host's (or its groups') variables."""
    if host not in inventory.hosts:
        return None
    raw = inventory.host_vars(host).get("madeus_max_parallel")
    if raw is None:
        return None
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise MadeusError(
            f'host "{host}": madeus_max_parallel must be a positive integer, not {raw!r}'
        ) from None
    if limit < 1:
        raise MadeusError(f'host "{host}": madeus_max_parallel must be at least 1, not {limit}')
    return limit


async def attempt_job(backend: Backend, job: Job, timeout: float | None) -> tuple[Status, Outcome]:
    """Run one attempt of a job under its timeout: `ok`, `failed` or `timeout`, with the
    backend's outcome. Nothing but a cancellation escapes: a backend that raises fails the job
    (see `internal_error`)."""
    try:
        if timeout is None:
            outcome = await backend.run(job)
        else:
            async with asyncio.timeout(timeout) as scope:
                outcome = await backend.run(job)
    except TimeoutError as exc:
        if timeout is not None and scope.expired():
            return "timeout", Outcome(ok=False, message=f"timed out after {timeout:g} s")
        return "failed", internal_error(job, exc)
    except MadeusError as exc:  # the backend could not run it (e.g. not installed)
        return "failed", Outcome(ok=False, message=job.redact(str(exc)))
    except Exception as exc:
        return "failed", internal_error(job, exc)
    return ("ok" if outcome.ok else "failed"), outcome


def internal_error(job: Job, exc: BaseException) -> Outcome:
    """A backend let an exception escape: a bug, not a failed action. The job fails (the run
    goes on as after any failure, never with a traceback on the terminal), the traceback goes
    to the job's stderr log (secrets redacted), and the message says what happened."""
    where = ""
    text = "".join(traceback.format_exception(exc))
    if job.stderr_path is not None:
        try:
            fd = os.open(job.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as log:
                log.write(job.redact(f"madeus: internal error while running {job.id}:\n{text}"))
            where = f"; the traceback is in {job.stderr_path}"
        except OSError:
            pass
    _log.debug("internal error in %s on %s:\n%s", job.id, job.host.name, job.redact(text))
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome(
        ok=False,
        message=job.redact(f"internal error in madeus (a bug: please report it): {detail}{where}"),
    )
