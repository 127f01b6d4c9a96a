"""The executor: runs a compiled plan, event-driven, every task in one TaskGroup.

A transition starts exactly when its dependency counter reaches zero, and that happens in the
code that records the end of its last dependency: no polling, no batching, no timers. Each host
of a transition is a job; the transition ends when all its jobs have ended.

Zero-time jobs (the router says `instant`: no action, or a zero simulated duration) complete
synchronously in the scheduling loop, without a task: a chain of 10,000 of them costs
microseconds per hop. Everything else is a task in the run's TaskGroup.

`_pump` is the only place that starts jobs. It drains the transitions that became ready, then
takes jobs from the limiter (when a limit is set) by priority. It is re-entrant-safe: a job that
completes synchronously inside it only queues its successors.

On failure (after retries) nothing new starts; running jobs are cancelled, or left to finish with
`let_running_finish`. With `keep_going`, a failure stops only what depends on it: everything
else still runs. Cancellation, including Ctrl-C, reaches each job's task, which records
`cancelled` and re-raises.

The journal (optional) gets a record at every start and end. Records are buffered and written
by one thread of the journal's own, one write and one fdatasync for everything buffered since
the previous one (group commit), so the event loop never waits for the disk and a hop (a
successor starting when its predecessor ends) is not delayed by it. A job whose action is not
safe to run again (`Transition.safe_to_rerun`: declared `idempotent`, or Ansible's) waits,
before its action runs, until its start record is durable (in a rehearsal,
`simulate="local"`, nothing runs on a host and nothing waits): after a crash the journal
knows of every such action that may have run. A job stopped while it waits
withdraws its start record (`unstart`): its action never ran.
A resumed run skips the jobs the journal says have ended (`skip`): they "end" as soon as they
are ready, with status `skipped`, their recorded output, and no journal record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from queue import SimpleQueue

from madeus.backends.base import Backend, Capacity, Instant, Job, Outcome
from madeus.engine.errors import Failure, JournalError
from madeus.engine.events import Event, RunStarted, TransitionEnded, TransitionStarted
from madeus.engine.journal import Journal
from madeus.engine.limits import Limiter, Scheduling
from madeus.engine.program import Program
from madeus.engine.runlog import log_stem
from madeus.engine.values import InstanceValues, data_value, host_values
from madeus.errors import MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import Action, OutputOf
from madeus.trace import Limits, Status, Trace, TraceEvent

EventSink = Callable[[Event], None]
# Per-job status codes in the hot arrays (strings only when the trace is built).
_NOT_STARTED, _RUNNING = 0, 1
_CODES: dict[Status, int] = {"ok": 2, "failed": 3, "timeout": 4, "cancelled": 5, "skipped": 6}
_STATUS: dict[int, Status] = {code: status for status, code in _CODES.items()}
_OK, _CANCELLED, _SKIPPED = _CODES["ok"], _CODES["cancelled"], _CODES["skipped"]
_FAILED = _CODES["failed"]
_INSTANT = Outcome(ok=True)
# Exponential backoff between attempts: base x 2^(attempt - 1), capped, with jitter.
DEFAULT_BACKOFF_MAX = 60.0
_log = logging.getLogger(__name__)


class Executor:
    def __init__(
        self,
        assembly: str,
        program: Program,
        backend: Backend,
        *,
        inventory: Inventory,
        params: Mapping[str, InstanceValues],
        max_parallel: int | None = None,
        scheduling: Scheduling = "critical-path",
        let_running_finish: bool = False,
        on_event: EventSink | None = None,
        run_dir: Path | None = None,
        predicted_makespan: float = 0.0,
        journal: Journal | None = None,
        keep_going: bool = False,
        retry_backoff: float = 0.0,
        retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
        skip: Collection[int] = (),
        outputs: Mapping[int, str] | None = None,
        data: Mapping[tuple[str, str], str] | None = None,
        inject: Collection[int] = (),
        inject_scale: float = 0.0,
        rng: random.Random | None = None,
        rehearsal: bool = False,
    ) -> None:
        """`skip`: jobs already ended (a resumed run); `outputs` (transition index -> output
        of its first host) and `data` ((instance, port) -> value) come with them. `inject`:
        jobs that fail without running their action (rehearsals), after their declared
        duration times `inject_scale` (the simulation's time scale; 0: at once). `rehearsal`:
        the backend changes nothing on any host (`simulate="local"`)."""
        self.assembly = assembly
        self._p = program
        self._backend = backend
        self._inventory = inventory
        self._params = params
        self._let_finish = let_running_finish
        self._emit = on_event
        self._run_dir = run_dir
        self._predicted = predicted_makespan
        instant = backend.instant if isinstance(backend, Instant) else None
        self._instant = [
            instant is not None and instant(t.action, t.expected) for t in program.transitions
        ]
        capacity = backend.capacity if isinstance(backend, Capacity) else None
        host_limits = _host_limits(program, inventory, capacity)
        self._limiter: Limiter | None = None
        self._limits: Limits | None = None
        if max_parallel is not None or any(x is not None for x in host_limits):
            named = {h.name: n for h, n in zip(program.hosts, host_limits, strict=True) if n}
            self._limits = Limits(max_parallel, named)
            job_priority = [program.priority[i] for i in program.job_trans]
            self._limiter = Limiter(
                max_parallel, host_limits, job_priority, program.job_host, scheduling
            )
        n, jobs = len(program.ids), program.jobs
        # Mutable run state: counters, per-job times and status codes.
        self._pending = list(program.pending)
        self._alt_left = list(program.alt_size)
        self._satisfied = bytearray(len(program.slot_owner))
        self._jobs_left = [program.job_base[i + 1] - program.job_base[i] for i in range(n)]
        self._place_left = list(program.place_left)
        self._start = [math.nan] * jobs
        self._end = [math.nan] * jobs
        self._code = bytearray(jobs)
        self._attempts = bytearray(jobs)
        # Ready transitions, oldest first (plan order for ties): FIFO scheduling relies on it.
        self._ready: deque[int] = deque()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # The hosts of a transition whose jobs one pump launched, by job (first attempts):
        # backends may run them together (`Job.batch`).
        self._batch: dict[int, list[str]] = {}
        self._launched: dict[int, list[str]] = {}  # this pump's, by transition
        self._tg: asyncio.TaskGroup | None = None
        self._pumping = False
        self._stopping = False
        self._ended = 0
        self.failures: list[Failure] = []
        self._outputs: dict[int, str] = {}
        self._data: dict[tuple[str, str], str] = {}
        self._data_secret: set[tuple[str, str]] = set()
        self._host_values: dict[int, dict[str, str]] = {}
        self._keep_going = keep_going
        self._backoff = retry_backoff
        self._backoff_max = retry_backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._skip: bytearray | None = None
        if skip:
            self._skip = bytearray(jobs)
            for j in skip:
                self._skip[j] = 1
        self._inject: bytearray | None = None
        self._inject_scale = inject_scale
        if inject:
            self._inject = bytearray(jobs)
            for j in inject:
                self._inject[j] = 1
        if outputs:
            self._outputs.update(outputs)
        if data:
            self._data.update(data)
        self.skipped = len(skip)
        # The journal: records buffered, written once per loop turn (see the module docstring).
        self._journal = journal
        self.journal_error: JournalError | None = None
        self._flush_scheduled = False
        self._jotted = 0  # records buffered so far, in order
        self._durable = 0  # of them, how many are on disk (set by the journal thread)
        self._writer: _JournalThread | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._start_seq = [0] * jobs  # the number of a job's start record
        self._must_wait = [
            journal is not None and not rehearsal and not t.safe_to_rerun
            for t in program.transitions
        ]
        self._jt: list[str | None] = [None] * n  # JSON-encoded transition ids, on first use
        self._jh = [json.dumps(h.name) for h in program.hosts]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self.started_at = ""
        self.finished = False

    # --- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run to the end, or until a failure has stopped everything (see `failures`)."""
        self._t0 = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._emit is not None:
            self._emit(
                RunStarted(
                    self.assembly,
                    self.started_at,
                    len(self._p.ids),
                    self._p.jobs,
                    self._predicted,
                    self._run_dir,
                    self.skipped,
                )
            )
        if self._journal is not None:
            self._writer = _JournalThread(self._journal, self._loop, self._on_durable)
        try:
            for p in self._p.initially_reached:
                self._reach_place(p)
            self._ready.extend(i for i, count in enumerate(self._pending) if count == 0)
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._pump()
        finally:
            self._tg = None
            if self._journal is not None:
                # A task cancelled before its first step never ran its action: its start
                # record is withdrawn, so a resume does not ask about it.
                for j in self._tasks:
                    if self._code[j] == _RUNNING:
                        i = self._p.job_trans[j]
                        self._jot(self._unstart_record(j, i))
            self._drain_journal()
        self.finished = not self.failures and self._ended == len(self._p.ids)
        if self.journal_error is not None:
            return
        if not self.failures and not self.finished:
            blocked = [self._p.ids[i] for i, c in enumerate(self._pending) if c > 0]
            raise MadeusError(f"deployment blocked: {', '.join(blocked[:10])} never started")

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        self._launched = {}
        try:
            ready = self._ready
            base = self._p.job_base
            limiter = self._limiter
            launch = self._launch
            while not self._stopping:
                if ready:
                    i = ready.popleft()
                    first, last = base[i], base[i + 1]
                    if limiter is None:
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

    def _launch(self, j: int) -> None:
        i = self._p.job_trans[j]
        now = time.monotonic() - self._t0
        self._start[j] = now
        if self._skip is not None and self._skip[j]:
            self._end[j] = now
            self._job_ended(j, i, _SKIPPED, _INSTANT, now)
            return
        self._code[j] = _RUNNING
        emit = self._emit
        if emit is not None:
            emit(TransitionStarted(self._p.ids[i], self._host_name(j), now))
        if self._inject is not None and self._inject[j] and self._injected_delay(i) <= 0:
            self._end[j] = now
            self._attempts[j] = 1
            self._job_ended(j, i, _FAILED, self._injected(j, i), now)
            return
        if self._instant[i]:
            self._end[j] = now
            self._attempts[j] = 1
            self._job_ended(j, i, _OK, _INSTANT, now)
            return
        if self._journal is not None:
            self._jot(
                f'{{"k":"start","t":{self._tid(i)},"h":{self._jh[self._p.job_host[j]]},'
                f'"at":{now:.6f}}}\n'
            )
            self._start_seq[j] = self._jotted
        if self._inject is None or not self._inject[j]:
            batch = self._launched.get(i)
            if batch is None:
                batch = self._launched[i] = []
            batch.append(self._host_name(j))
            self._batch[j] = batch
        assert self._tg is not None
        self._tasks[j] = self._tg.create_task(self._run_job(j, i))

    async def _run_job(self, j: int, i: int) -> None:
        tries = 1 + max(self._p.transitions[i].retries, 0)
        timeout = self._p.transitions[i].timeout
        attempt = 0
        acting = False
        try:
            if self._must_wait[i] and self._durable < self._start_seq[j]:
                await self._until_durable(self._start_seq[j])
            acting = True
            while True:
                attempt += 1
                self._attempts[j] = min(attempt, 255)
                status: Status
                if self._inject is not None and self._inject[j]:
                    await asyncio.sleep(self._injected_delay(i))
                    status, outcome = "failed", self._injected(j, i)
                else:
                    job = self._make_job(j, i, attempt)
                    status, outcome = await attempt_job(self._backend, job, timeout)
                    if attempt == 1 and outcome.started is not None:
                        # The backend knows when the host's part really started (a queue of
                        # its own, `serial` batches): the trace shows it.
                        start = outcome.started - self._t0
                        self._start[j] = min(max(start, self._start[j]), self.now())
                if status == "ok" or attempt >= tries or self._stopping:
                    break
                if self._emit is not None:
                    self._emit_end(j, i, status, outcome, attempt, final=False)
                if self._backoff > 0:
                    await asyncio.sleep(self.retry_delay(attempt))
                    if self._stopping:
                        break
                if self._emit is not None:
                    host = self._host_name(j)
                    self._emit(TransitionStarted(self._p.ids[i], host, self.now(), attempt + 1))
        except asyncio.CancelledError:
            self._tasks.pop(j, None)
            self._batch.pop(j, None)
            now = self.now()
            self._end[j] = now
            self._code[j] = _CANCELLED
            if self._limiter is not None:
                self._limiter.release(j)
            if self._journal is not None:
                # Stopped before its action ran: the start is withdrawn, not a cancelled end.
                done = self._end_record(j, i, "cancelled", now, None)
                self._jot(done if acting else self._unstart_record(j, i))
            if self._emit is not None:
                self._emit_end(j, i, "cancelled", Outcome(ok=False), attempt, final=True)
            raise
        self._tasks.pop(j, None)
        self._batch.pop(j, None)
        now = self.now()
        if outcome.ended is not None:  # the host's part ended before the others'
            now = min(max(outcome.ended - self._t0, self._start[j]), now)
        self._end[j] = now
        self._job_ended(j, i, _CODES[status], outcome, now)

    def _injected_delay(self, i: int) -> float:
        return self._p.transitions[i].expected * self._inject_scale

    def _injected(self, j: int, i: int) -> Outcome:
        message = (
            f"injected failure (--inject-failure {self._p.ids[i]}@{self._host_name(j)}): "
            "the action did not run"
        )
        return Outcome(ok=False, message=message)

    def retry_delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1, 2...): base x 2^(attempt - 1), at most
        the cap, then a random part of it (equal jitter: between half and all of it), so that
        many jobs failing together do not retry in lockstep."""
        delay: float = min(self._backoff_max, self._backoff * 2.0 ** min(attempt - 1, 60))
        return delay / 2 + self._rng.random() * delay / 2

    def _job_ended(self, j: int, i: int, code: int, outcome: Outcome, now: float) -> None:
        self._code[j] = code
        if self._limiter is not None:
            self._limiter.release(j)
        p = self._p
        output: str | None = None
        if code == _OK and i in p.output_needed and j == p.job_base[i]:
            output = self._outputs[i] = self._redact_output(i, outcome.output)
        if self._emit is not None:
            self._emit_end(j, i, _STATUS[code], outcome, self._attempts[j], final=True)
        if self._journal is not None and code != _SKIPPED:
            # A lost connection leaves the outcome unknown: the journal says so ("lost"),
            # and a resume asks about it as about a cancelled action.
            recorded = "lost" if code != _OK and outcome.uncertain else _STATUS[code]
            self._jot(self._end_record(j, i, recorded, now, output))
        if code != _OK and code != _SKIPPED:
            self._fail(j, i, _STATUS[code], outcome)
            if not self._stopping:
                self._pump()  # keep going: the freed slot may start a waiting job
            return
        left = self._jobs_left[i] - 1
        self._jobs_left[i] = left
        if left == 0:
            self._transition_ended(i)
        self._pump()

    def _transition_ended(self, i: int) -> None:
        p = self._p
        self._ended += 1
        place = p.reach[i]
        if place >= 0:
            left = self._place_left[place] - 1
            self._place_left[place] = left
            if left == 0:
                try:
                    self._reach_place(place)
                except MadeusError as exc:  # a data value that cannot be rendered
                    j = p.job_base[i]
                    message = f"cannot compute a data port value: {exc}"
                    self._fail(j, i, "failed", Outcome(ok=False, message=message))
                    return
        pending = self._pending
        ready = self._ready
        for s in p.and_succ[i]:
            count = pending[s] - 1
            pending[s] = count
            if count == 0:
                ready.append(s)
        if p.alt_succ[i]:
            satisfied, alt_left = self._satisfied, self._alt_left
            for a in p.alt_succ[i]:
                alt_left[a] -= 1
                slot = p.alt_slot[a]
                if alt_left[a] == 0 and not satisfied[slot]:
                    satisfied[slot] = 1
                    s = p.slot_owner[slot]
                    count = pending[s] - 1
                    pending[s] = count
                    if count == 0:
                        ready.append(s)

    def _fail(self, j: int, i: int, status: Status, outcome: Outcome) -> None:
        transition = self._p.transitions[i]
        self.failures.append(
            Failure(
                transition=self._p.ids[i],
                host=self._host_name(j),
                status=status,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
                attempts=self._attempts[j],
                span=transition.span,
            )
        )
        if self._stopping or self._keep_going:
            return
        self._stop()

    def _stop(self) -> None:
        self._stopping = True
        self._ready.clear()
        if self._limiter is not None:
            self._limiter.clear()  # queued jobs never start: they stay out of the trace
        if not self._let_finish:
            for task in list(self._tasks.values()):
                task.cancel()

    # --- values and data ports ----------------------------------------------------------

    def _host_name(self, j: int) -> str:
        return self._p.hosts[self._p.job_host[j]].name

    def _make_job(self, j: int, i: int, attempt: int) -> Job:
        p = self._p
        instance = p.instance_of[i]
        transition = p.transitions[i]
        host = p.hosts[p.job_host[j]]
        inst_values = self._params[instance]
        values = {**self._host_facts(p.job_host[j]), **inst_values.params}
        secrets = inst_values.secrets
        for use in p.data_uses.get(instance, ()):
            key = (use.provider, use.provider_port)
            if key in self._data:
                values[use.port] = self._data[key]
                if key in self._data_secret:
                    secrets = secrets | {self._data[key]}
        stdout_path = stderr_path = None
        if self._run_dir is not None:
            stem = log_stem(p.ids[i], host.name)
            stdout_path = self._run_dir / f"{stem}.out"
            stderr_path = self._run_dir / f"{stem}.err"
        return Job(
            id=p.ids[i],
            instance=instance,
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
            workdir=p.workdir[instance],
            types=inst_values.types,
            batch=tuple(self._batch.get(j, ())) if attempt == 1 else (),
        )

    def _host_facts(self, h: int) -> dict[str, str]:
        facts = self._host_values.get(h)
        if facts is None:
            facts = self._host_values[h] = host_values(self._inventory, self._p.hosts[h])
        return facts

    def _reach_place(self, place: int) -> None:
        """A place bound to data provide ports is reached: compute the values it provides
        (the first place of a group to be reached provides the value; deployment is
        monotone)."""
        for provide in self._p.place_provides[place]:
            key = (provide.instance, provide.port.name)
            if key in self._data:
                continue
            value = provide.port.value
            if isinstance(value, OutputOf):
                if provide.producer in self._outputs:
                    self._data[key] = self._outputs[provide.producer]
                    self._record_data(key)
                continue
            if value is None:
                continue
            facts = {} if provide.host is None else host_values(self._inventory, provide.host)
            used = {
                use.port: (self._data[k], k in self._data_secret)
                for use in self._p.data_uses.get(provide.instance, ())
                for k in ((use.provider, use.provider_port),)
                if k in self._data
            }
            self._data[key], secret = data_value(value, self._params[provide.instance], facts, used)
            if secret:
                self._data_secret.add(key)  # never journaled: recomputed by a resume
            else:
                self._record_data(key)

    # --- the journal ----------------------------------------------------------------------

    def _tid(self, i: int) -> str:
        tid = self._jt[i]
        if tid is None:
            tid = self._jt[i] = json.dumps(self._p.ids[i])
        return tid

    def _end_record(self, j: int, i: int, status: str, now: float, output: str | None) -> str:
        out = "" if output is None else f',"out":{json.dumps(output)}'
        return (
            f'{{"k":"end","t":{self._tid(i)},"h":{self._jh[self._p.job_host[j]]},'
            f'"s":"{status}","at":{now:.6f}{out}}}\n'
        )

    def _record_data(self, key: tuple[str, str]) -> None:
        if self._journal is not None:
            port = f"{key[0]}.{key[1]}"
            record = {"k": "data", "p": port, "v": self._data[key]}
            self._jot(json.dumps(record, separators=(",", ":")) + "\n")

    def _redact_output(self, i: int, output: str) -> str:
        """Backends redact what they keep; this catches a backend that did not."""
        for secret in self._params[self._p.instance_of[i]].secrets:
            if secret and secret in output:
                output = output.replace(secret, "******")
        return output

    def _jot(self, line: str) -> None:
        """Buffer a journal record; the first one of a loop turn schedules its write."""
        if self._journal is None or self.journal_error is not None:
            return
        self._journal.append(line)
        self._jotted += 1
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_journal)

    def _flush_journal(self) -> None:
        """Hand what is buffered to the journal thread (it writes what it was handed meanwhile
        in one go)."""
        self._flush_scheduled = False
        journal = self._journal
        if journal is None or self.journal_error is not None:
            return
        if self._writer is None:  # not running: write here
            self._drain_journal()
            return
        data = journal.take()
        if data:
            self._writer.hand(data, self._jotted)

    async def _until_durable(self, seq: int) -> None:
        assert self._loop is not None and self._writer is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((seq, future))
        self._writer.wanted = True  # the thread wakes the loop when its write ends
        self._on_durable()  # it may have ended meanwhile
        await future

    def _on_durable(self, error: JournalError | None = None) -> None:
        """On the loop, when the journal thread wrote (or failed to) and a job waits."""
        if error is not None:
            if self.journal_error is None:
                self._journal_failed(error)
            return
        assert self._writer is not None or not self._waiters
        durable = self._writer.durable if self._writer is not None else self._jotted
        self._durable = max(self._durable, durable)
        waiting = []
        for seq, future in self._waiters:
            if seq <= self._durable:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((seq, future))
        self._waiters = waiting
        if self._writer is not None:
            self._writer.wanted = bool(waiting)

    def _drain_journal(self) -> None:
        """At the end of a run: let the journal thread finish, then write the rest here."""
        writer, self._writer = self._writer, None
        if writer is not None:
            error = writer.close()
            if error is not None and self.journal_error is None:
                # A write failed: nothing may be appended after the records it lost.
                self._journal_failed(error)
        if self._journal is None or self.journal_error is not None:
            return
        try:
            self._journal.flush()
            self._durable = self._jotted
        except JournalError as exc:
            self._journal_failed(exc)

    def _journal_failed(self, exc: JournalError) -> None:
        # Without a journal nothing may run: stop as after a failure.
        self.journal_error = exc
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters = []
        if not self._stopping:
            self._stop()

    def _unstart_record(self, j: int, i: int) -> str:
        return f'{{"k":"unstart","t":{self._tid(i)},"h":{self._jh[self._p.job_host[j]]}}}\n'

    # --- events and trace ---------------------------------------------------------------

    def _emit_end(
        self, j: int, i: int, status: Status, outcome: Outcome, attempt: int, *, final: bool
    ) -> None:
        assert self._emit is not None
        end = self._end[j] if final else self.now()
        self._emit(
            TransitionEnded(
                id=self._p.ids[i],
                host=self._host_name(j),
                start=self._start[j],
                end=end,
                status=status,
                attempt=attempt,
                final=final,
                exit_status=outcome.exit_status,
                message=outcome.message,
                stderr_tail=outcome.stderr_tail,
            )
        )

    def trace(self) -> Trace:
        """The trace so far: one event per job that started (running ones end now)."""
        p = self._p
        now = self.now()
        events: list[TraceEvent] = []
        ids, hosts, job_trans, job_host = p.ids, p.hosts, p.job_trans, p.job_host
        behaviours = [t.behaviour for t in p.transitions]
        for j, code in enumerate(self._code):
            if code == _NOT_STARTED:
                continue
            i = job_trans[j]
            end = self._end[j]
            status = _STATUS.get(code, "cancelled")  # still running at an interruption
            events.append(
                TraceEvent(
                    ids[i],
                    hosts[job_host[j]].name,
                    self._start[j],
                    now if math.isnan(end) else end,
                    status,
                    behaviours[i],
                    0 if code == _SKIPPED else max(self._attempts[j], 1),
                )
            )
        events.sort(key=lambda e: e.start)
        makespan = max((e.end for e in events), default=0.0)
        return Trace(self.assembly, self.started_at, makespan, tuple(events), self._limits)


class _JournalThread:
    """Writes what the loop hands it, in order, everything handed meanwhile in one write and
    one fdatasync. It wakes the loop only when a job waits for durability (`wanted`): a wakeup
    in the middle of a job's sleep would cost it a millisecond of asyncio's timer rounding."""

    def __init__(
        self,
        journal: Journal,
        loop: asyncio.AbstractEventLoop,
        on_durable: Callable[[JournalError | None], None],
    ) -> None:
        self._journal = journal
        self._loop = loop
        self._on_durable = on_durable
        self._queue: SimpleQueue[tuple[bytes, int] | None] = SimpleQueue()
        self.durable = 0  # records on disk (a plain int: set here, read on the loop)
        self.wanted = False
        self.error: JournalError | None = None
        self._thread = threading.Thread(target=self._run, name="madeus-journal", daemon=True)
        self._thread.start()

    def hand(self, data: bytes, upto: int) -> None:
        self._queue.put((data, upto))

    def close(self) -> JournalError | None:
        """Write what was handed, stop; the error that stopped the writes, if one did."""
        self._queue.put(None)
        self._thread.join()
        return self.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            handed = [item for item in batch if item is not None]
            if handed and self.error is None:
                try:
                    self._journal.write(b"".join(data for data, _ in handed))
                except JournalError as exc:
                    self.error = exc
                    self._wake(exc)
                else:
                    self.durable = handed[-1][1]
                    if self.wanted:
                        self._wake(None)
            if None in batch:  # closed: everything handed before is written
                return

    def _wake(self, error: JournalError | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(self._on_durable, error)


def _host_limits(
    program: Program,
    inventory: Inventory,
    capacity: Callable[[Action | None, Host], int | None] | None,
) -> list[int | None]:
    """Per host: `madeus_max_parallel`, and what the backends serving its jobs can run at
    once without a queue of their own (`Router.capacity`), whichever is smaller."""
    limits = [host_limit(inventory, h.name) for h in program.hosts]
    if capacity is None:
        return limits
    seen: dict[tuple[type, int], int | None] = {}
    actions = [t.action for t in program.transitions]
    for j, h in enumerate(program.job_host):
        action = actions[program.job_trans[j]]
        key = (type(action), h)
        if key in seen:
            continue
        cap = seen[key] = capacity(action, program.hosts[h])
        if cap is not None:
            current = limits[h]
            limits[h] = cap if current is None else min(current, cap)
    return limits


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
    backend's outcome. Shared by the deploy and reconfiguration executors. Nothing but a
    cancellation escapes: a backend that raises fails the job (see `internal_error`)."""
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
    import traceback

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
