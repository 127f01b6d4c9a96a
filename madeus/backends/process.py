"""Local processes for backends: output sinks, and one way to run a process and stop it.

`run_process` starts a command in a session of its own (so that its whole process group can be
signalled), feeds it its standard input, streams standard output and error (and any extra pipe)
to sinks as the bytes come, and returns its exit status. Cancelled (a timeout, a failure
elsewhere, Ctrl-C), it SIGTERMs the group, waits `grace` seconds, SIGKILLs what is left, then
re-raises; that clean-up runs to its end even when a second cancellation arrives
(`despite_cancellation`), since abandoning it half-way would leave processes running. The local
shell backend and the Ansible backend both run their processes this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

# Keep this much standard output for `provide data ... = output of T`, and this many lines of
# standard error for failure reports.
OUTPUT_LIMIT = 1 << 20
TAIL_LINES = 20
_TAIL_BYTES = 16 << 10
# After the shell exits, a background child may still hold the pipes open: stop reading after
# this long instead of waiting for it.
_DRAIN_AFTER_EXIT = 1.0
_CHUNK = 1 << 16


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class OutputSink:
    """Where one stream goes: a log file opened on the first byte, plus what the outcome keeps
    (all of stdout up to OUTPUT_LIMIT, or the tail of stderr). Secrets are redacted on whole
    lines, so a secret split across two reads is still caught."""

    def __init__(self, path: Path | None, secrets: frozenset[str], *, keep_all: bool) -> None:
        self._path = path
        self._secrets = tuple(s.encode() for s in secrets if s)
        self._keep_all = keep_all
        self._fd: int | None = None
        self._pending = b""
        self._kept = bytearray()

    def write(self, data: bytes) -> None:
        if self._secrets:
            data = self._pending + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < _CHUNK:
                self._pending = data
                return
            if cut == 0:
                cut = len(data)
            data, self._pending = self._redact(data[:cut]), data[cut:]
        self._emit(data)

    def _redact(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, b"******")
        return data

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if self._path is not None:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.write(self._fd, data)
        if self._keep_all:
            room = OUTPUT_LIMIT - len(self._kept)
            if room > 0:
                self._kept += data[:room]
        else:
            self._kept += data
            if len(self._kept) > 2 * _TAIL_BYTES:
                del self._kept[:-_TAIL_BYTES]

    def close(self) -> None:
        if self._pending:
            self._emit(self._redact(self._pending))
            self._pending = b""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace")

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.text().rstrip("\n").splitlines()[-lines:])


async def despite_cancellation(work: Awaitable[None]) -> None:
    """Await `work` to its end even when cancelled again meanwhile (the engine cancels its
    jobs, and the run itself may be cancelled on top): clean-up after a cancellation is bounded
    in time, and abandoning it half-way would leave processes running. The caller re-raises the
    cancellation it is handling."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group; it may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_process(
    argv: Sequence[str],
    *,
    out: Sink,
    err: Sink,
    input: bytes | None = None,
    grace: float = 5.0,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    pipes: Sequence[tuple[int, Sink]] = (),
    after_start: Callable[[], None] | None = None,
) -> int:
    """Run `argv` to its end (see the module docstring); its exit status, negative for a
    signal. `pipes`: read ends of pipes whose write ends the process holds (in `pass_fds`),
    each read into its sink like standard output; this function closes them. `after_start`
    runs once the process exists (to close the parent's copy of a pipe's write end)."""
    readers = []
    try:
        for fd, sink in pipes:
            readers.append((await _open_reader(fd), sink))
    except BaseException:
        for fd, _ in pipes[len(readers) :]:
            os.close(fd)
        for (_, transport), _ in readers:
            transport.close()
        raise
    try:
        proc = await _spawn(argv, input is not None, grace, cwd, env, pass_fds)
        if after_start is not None:
            after_start()
        try:
            return await _communicate(proc, input, out, err, [(r, s) for (r, _), s in readers])
        except BaseException:
            await despite_cancellation(terminate(proc, grace))
            raise
    finally:
        for (_, transport), _ in readers:
            transport.close()


async def _open_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def _spawn(
    argv: Sequence[str],
    stdin: bool,
    grace: float,
    cwd: str | Path | None,
    env: Mapping[str, str] | None,
    pass_fds: Sequence[int],
) -> asyncio.subprocess.Process:
    """Start `argv` in a new session.

    The process exists before `create_subprocess_exec` returns (it still waits for the
    pipes): a cancellation in that window would leave the process group running, with
    nobody knowing its id. So the creation is shielded, and on cancellation we wait for
    it to finish, then kill the group. The inner task is awaited on every path: it never
    outlives this call."""
    creating = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            pass_fds=tuple(pass_fds),
        )
    )
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        try:
            proc = await creating
        except Exception:
            raise asyncio.CancelledError from None
        await despite_cancellation(terminate(proc, grace))
        raise


async def _communicate(
    proc: asyncio.subprocess.Process,
    input: bytes | None,
    out: Sink,
    err: Sink,
    pipes: Sequence[tuple[asyncio.StreamReader, Sink]],
) -> int:
    async with asyncio.TaskGroup() as tg:
        if input is not None:
            tg.create_task(_feed(proc.stdin, input))
        readers = [
            tg.create_task(_copy_stream(stream, sink))
            for stream, sink in [(proc.stdout, out), (proc.stderr, err), *pipes]
        ]
        code = await proc.wait()
        try:
            async with asyncio.timeout(_DRAIN_AFTER_EXIT):
                await asyncio.gather(*readers)
        except TimeoutError:
            for reader in readers:
                reader.cancel()
    return code


async def _copy_stream(stream: asyncio.StreamReader | None, sink: Sink) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        sink.write(chunk)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write standard input and close it; a process that died first is no error here (its
    exit status says what happened)."""
    if stdin is None:
        return
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, give it `grace` seconds, then SIGKILL what is left."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        pass
    finally:
        # Children may outlive the leader (or ignore SIGTERM): the group goes either way.
        signal_group(proc.pid, signal.SIGKILL)
    # Reap the leader, so that no zombie is left; SIGKILL cannot be ignored, so this is
    # quick (bounded anyway: a process stuck in the kernel may take its time).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await proc.wait()


def marked_processes(token: str) -> list[int]:
    """The processes of this machine whose environment holds `MADEUS_JOB=<token>` (a run of
    Ansible marks its processes so), but ssh ControlPersist masters: other runs share them."""
    needle = f"MADEUS_JOB={token}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ + b"\0" and not cmdline.startswith(b"ssh: "):
            found.append(int(entry.name))
    return found


def signal_processes(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_marked_processes(token: str, grace: float) -> list[int]:
    """SIGTERM the processes marked with `token` (`marked_processes`), then SIGKILL those left
    after `grace` seconds. Returns the PIDs signalled."""
    signalled = marked_processes(token)
    signal_processes(signalled, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = marked_processes(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # processes give no notice of their end to non-parents
        left = marked_processes(token)
    signal_processes(left, signal.SIGKILL)
    return signalled
