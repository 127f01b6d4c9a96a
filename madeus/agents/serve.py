"""The agent: runs its site's part of a run, on a host of the site, for the controller that
started it (`madeus agent`, or the shipped zipapp). It speaks only on its standard input and
output (see `madeus.agents.wire`), which are an SSH session of the controller's connection:
no port, no credential of its own; it has the SSH user's rights.

It runs the same executor as the controller, on the same program, but starts only its own
transitions (`Runner.hand_over` the others); the ends of other parties' transitions it waits
for, and the data values it uses, come from the controller. It reaches the site's hosts, its
own included, over SSH (the same backend as the controller, short links), and writes its job
logs under `~/.madeus/agent/runs/RUN/` (0700, files 0600).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from madeus import __version__
from madeus.agents import wire
from madeus.agents.ship import source_hash
from madeus.engine.events import Event, TransitionEnded, TransitionStarted
from madeus.engine.executor import Executor
from madeus.engine.runlog import make_private_dir
from madeus.engine.runner import Inputs
from madeus.errors import MadeusError

AGENT_DIR = Path("~/.madeus/agent")
_log = logging.getLogger(__name__)


class Agent:
    def __init__(self, write: Any) -> None:
        self._write = write  # bytes -> None: the standard output, buffered by the loop
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0  # "end" and "data" messages applied
        self._idle_told = False
        self._finished = asyncio.Event()
        self._own_left = 0
        self._work: wire.Work | None = None
        self._executor: Executor | None = None
        self._jobs: dict[tuple[str, str], int] = {}
        self._started = asyncio.Event()  # "start" came
        self._running = asyncio.Event()  # the run has begun: what comes next may be applied
        self._t0 = 0.0

    # --- output --------------------------------------------------------------------------

    def send(self, *fields: Any) -> None:
        self._out.append(wire.line(*fields))
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out:
            data, self._out = b"".join(self._out), []
            self._write(data)

    # --- the conversation ----------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader) -> int:
        self._loop = asyncio.get_running_loop()
        self.send("hello", __version__, source_hash())
        self.flush()
        first = await reader.readline()
        if not first:
            return 0  # the controller only checked the version
        message = wire.parse(first)
        if message[0] != "work":
            raise ValueError(f"expected the work, got {message[0]!r}")
        work = wire.read_work(message[1])
        async with asyncio.TaskGroup() as tg:
            # Listening from now on: the controller's ping is answered while we connect.
            tg.create_task(self._listen(reader))
            router, executor = await self._prepare(work)
            try:
                await self._started.wait()
                error: str | None = None
                try:
                    await executor.run(until=self._until, t0=self._t0, whole=False)
                except MadeusError as exc:
                    error = str(exc)
                self.send("done", error)
                self.flush()
                # The listener ends with the controller's end of file.
            finally:
                await router.aclose()
        return 0

    async def _prepare(self, work: wire.Work) -> tuple[Any, Executor]:
        self._work = work
        run_dir = AGENT_DIR.expanduser() / "runs" / work.run_id
        make_private_dir(run_dir)
        known = run_dir / "known_hosts"
        fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(work.known_hosts)
        options = replace(work.options, known_hosts=str(known))
        router = options.router(work.inventory, run_dir)
        p = work.program
        executor = self._executor = Executor(
            work.assembly,
            p,
            router,
            inventory=work.inventory,
            params=work.params,
            options=options,
            on_event=self._event,
            run_dir=run_dir,
            skip=work.skip,
            outputs=work.outputs,
            data=work.data,
            owned=work.instances,
        )
        runner = executor.runner
        runner.hand_over(i for i in range(len(p.ids)) if i not in work.slots)
        runner.scheduler = _Counting(executor, self)
        runner.after_job = self._maybe_idle
        runner.on_stop = self._finished.set
        executor.on_data = lambda key, value, secret: self.send("data", *key, value, secret)
        self._own_left = len(work.slots)
        for i in work.slots:
            for j in range(p.job_base[i], p.job_base[i + 1]):
                self._jobs[(p.ids[i], p.hosts[p.job_host[j]].name)] = j
        problems: list[str] = []
        try:
            await router.ready(
                (p.transitions[p.job_trans[j]].action, p.hosts[p.job_host[j]])
                for j in self._jobs.values()
            )
        except MadeusError as exc:
            problems = [d.message for d in exc.diagnostics] or [str(exc)]
        self.send("ready", problems)
        self.flush()
        return router, executor

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            executor = self._executor
            if not raw:  # the controller is gone: nothing more will come
                if not self._started.is_set():
                    self._t0 = time.monotonic()
                    self._started.set()
                if executor is not None:
                    executor.runner.stop()
                self._finished.set()
                return
            message = wire.parse(raw)
            kind = message[0]
            if kind == "ping":
                self.send("pong", message[1], time.monotonic())
                self.flush()
                continue
            if executor is None:
                raise ValueError(f"{kind!r} before the agent is ready")
            runner = executor.runner
            if kind == "start":
                self._t0 = time.monotonic()
                self.send("t0", self._t0)
                self.flush()  # before the first jobs start: it measures the clock offset
                self._started.set()
                # An "end" read with "start" must wait for the run that counts it.
                await self._running.wait()
            elif kind == "end":
                self.received += 1
                self._idle_told = False
                runner.told_ended(int(message[1]))
            elif kind == "data":
                self.received += 1
                self._idle_told = False
                executor.told_data((message[1], message[2]), message[3], bool(message[4]))
            elif kind == "stop":
                runner.stop()
                self._finished.set()
            elif kind == "finish":
                self._finished.set()
            self._maybe_idle()
            self.flush()

    async def _until(self) -> None:
        self._running.set()
        if self._own_left == 0:
            self._finished.set()
        await self._finished.wait()

    def slot_ended(self, s: int) -> None:
        if self._work is not None and s in self._work.slots:
            self._own_left -= 1
            if self._own_left == 0:
                self._finished.set()

    def _maybe_idle(self) -> None:
        # Looked at once the runner has reported the job that just ended (its report is
        # queued first): "idle" must reach the controller after that job's end.
        if self._loop is not None:
            self._loop.call_soon(self._tell_idle)

    def _tell_idle(self) -> None:
        executor = self._executor
        if executor is None or self._idle_told or not self._started.is_set():
            return
        if executor.runner.idle():
            self._idle_told = True
            self.send("idle", self.received)

    def _event(self, event: Event) -> None:
        if isinstance(event, TransitionStarted):
            j = self._jobs.get((event.id, event.host))
            if j is not None:
                self._idle_told = False
                self.send("s", j, round(event.time, 6), event.attempt)
        elif isinstance(event, TransitionEnded) and event.final:
            j = self._jobs.get((event.id, event.host))
            if j is None:
                return
            executor = self._executor
            assert executor is not None
            runner = executor.runner
            s = runner.job_slot[j]
            first = j == runner.job_base[s]
            output = runner.outputs.get(s) if first and event.status == "ok" else None
            self.send(
                "e",
                j,
                event.status,
                round(event.start, 6),
                round(event.end, 6),
                event.attempt,
                event.exit_status,
                event.message,
                event.stderr_tail,
                output,
            )


class _Counting:
    """The executor as the runner's scheduler, counting this agent's own ended transitions."""

    def __init__(self, executor: Executor, agent: Agent) -> None:
        self._executor = executor
        self._agent = agent

    def inputs(self, slot: int) -> Inputs:
        return self._executor.inputs(slot)

    def ended(self, slot: int) -> None:
        self._executor.ended(slot)
        self._agent.slot_ended(slot)


def main() -> int:
    """`madeus agent`: serve the controller on standard input and output."""
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        print(
            "madeus agent: standard input must be a pipe (the controller's SSH session): "
            "it is started by `madeus deploy --agents`",
            file=sys.stderr,
        )
        return 1
    warnings.simplefilter("ignore")  # libraries' deprecation notices are not for the controller
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    return asyncio.run(_main())


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    # The loop buffers what the controller has not read yet: a stalled link never blocks the
    # run.
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    try:
        return await Agent(transport.write).serve(reader)
    finally:
        while transport.get_write_buffer_size() and not transport.is_closing():
            await asyncio.sleep(0.01)
        transport.close()
