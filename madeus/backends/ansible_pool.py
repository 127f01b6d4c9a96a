"""The controller's side of a long-lived Ansible worker (`madeus/ansible_worker.py`).

One worker process per run (and roles path): Ansible imported and the inventory loaded once,
each play a `fork` of it. `Pool.play` sends a request and hands each event of the play to a
callback until the play's process ends, returning its exit status; a cancelled `play` stops
that process (SIGTERM, SIGKILL after the grace period) before it returns. `aclose` closes the
worker's standard input: the worker kills what is left and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from madeus.backends.process import despite_cancellation
from madeus.errors import BackendError

EventSink = Callable[[dict[str, Any]], None]
_LINE_LIMIT = 1 << 26  # an event carries at most 1 MB of a task's output, JSON-escaped
_STDERR_KEPT = 1 << 14


class Pool:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        private: bytes,
        *,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self._argv = list(argv)
        self._pass_fds = tuple(pass_fds)
        self._env = dict(env)
        self._private = private  # the first line of the worker's standard input
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sinks: dict[str, EventSink] = {}
        self._exits: dict[str, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._stderr = b""
        self._started: asyncio.Future[None] | None = None
        self.version = ""

    async def start(self) -> None:
        """Start the worker (once; concurrent callers wait for the same start)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._start()
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # retrieved: later callers re-raise it
                raise
            self._started.set_result(None)
            return
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        proc = self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,  # the operator's Ctrl-C reaches madeus, which stops it
            pass_fds=self._pass_fds,
            limit=_LINE_LIMIT,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._private + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        try:
            first = json.loads(line) if line.strip() else {}
        except ValueError:
            first = {}
        if "ready" not in first:
            await proc.wait()
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode(errors="replace")
            errors = first.get("errors") or [{"message": stderr.strip()[-2000:] or "no answer"}]
            said = "; ".join(str(e.get("message", "")).splitlines()[0] for e in errors if e)
            raise BackendError(f"the Ansible worker could not start: {said}")
        self.version = str(first["ready"])
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def play(self, request: dict[str, Any], sink: EventSink, *, grace: float) -> int:
        """Run one play (`request`: playbook, hosts, extra_vars, token); each event goes to
        `sink`; returns the exit status of the play's `ansible-playbook`."""
        await self.start()
        run = str(next(self._ids))
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._sinks[run] = sink
        self._exits[run] = exited
        try:
            self._send({**request, "run": run})
            return await asyncio.shield(exited)
        except asyncio.CancelledError:
            await despite_cancellation(self._stop(run, exited, grace))
            raise
        finally:
            self._sinks.pop(run, None)
            self._exits.pop(run, None)

    async def _stop(self, run: str, exited: asyncio.Future[int], grace: float) -> None:
        if exited.done():
            return
        with contextlib.suppress(BackendError):
            self._send({"cancel": run, "grace": grace})
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, BackendError):
            async with asyncio.timeout(grace + 10):
                await asyncio.shield(exited)

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise BackendError(f"the Ansible worker has stopped: {self._said()}")
        proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None

        async def stderr() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(4096):
                self._stderr = (self._stderr + chunk)[-_STDERR_KEPT:]

        async def stdout() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                run = str(event.pop("r", ""))
                if event.get("e") == "exit":
                    exited = self._exits.get(run)
                    if exited is not None and not exited.done():
                        exited.set_result(int(event.get("code", 1)))
                    continue
                sink = self._sinks.get(run)
                if sink is not None:
                    sink(event)

        try:
            await asyncio.gather(stdout(), stderr())
        finally:
            # The worker is gone: every play still waiting has failed.
            for exited in self._exits.values():
                if not exited.done():
                    exited.set_exception(
                        BackendError(f"the Ansible worker stopped: {self._said()}")
                    )

    def _said(self) -> str:
        text = self._stderr.decode(errors="replace").strip()
        return text.splitlines()[-1] if text else "no message"

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
