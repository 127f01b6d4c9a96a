"""Run actions on this machine: shell commands as asyncio subprocesses, uploads as copies.

A shell action runs as `/bin/sh -c 'eval "$(cat)"'` with its script on standard input
(`Job.shell_script`, see `madeus/shell.py`): values are shell variables referenced from the
command, never pasted into it, and neither the command nor its values appear in the process
table. The command runs in the operator's current directory (relative paths in *commands* are the
operator's; the `.mad` file's directory, `Job.workdir`, is where an upload's source is read).

Output is streamed to the job's log files as it comes (opened on the first byte, mode 0600,
secrets redacted line by line). The process runs in a session of its own so that cancelling the
job (a timeout, a failure elsewhere, Ctrl-C) can signal its whole process group: SIGTERM, then
SIGKILL after a grace period, before `CancelledError` is re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path

from madeus.backends.base import Job, Outcome
from madeus.errors import BackendError, MadeusError
from madeus.model import ShellAction, UploadAction
from madeus.shell import SHELL_ARGV

# Keep this much standard output for `provide data ... = output of T`, and this many lines of
# standard error for failure reports.
OUTPUT_LIMIT = 1 << 20
TAIL_LINES = 20
_TAIL_BYTES = 16 << 10
# After the shell exits, a background child may still hold the pipes open: stop reading after
# this long instead of waiting for it.
_DRAIN_AFTER_EXIT = 1.0
_CHUNK = 1 << 16


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


async def _copy_stream(stream: asyncio.StreamReader | None, sink: OutputSink) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        sink.write(chunk)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write the script and close standard input; a shell that died first is no error here
    (its exit status says what happened)."""
    if stdin is None:
        return
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group; it may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LocalBackend:
    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace  # seconds between SIGTERM and SIGKILL on cancellation

    async def run(self, job: Job) -> Outcome:
        action = job.action
        if isinstance(action, ShellAction):
            return await self.run_shell(job, action.command)
        if isinstance(action, UploadAction):
            return await self._upload(job, action)
        kind = type(action).__name__
        raise BackendError(f"the local backend cannot run {kind} ({job.id})")

    async def run_shell(self, job: Job, command: str) -> Outcome:
        """Run `command` (placeholders not yet substituted) with `SHELL_ARGV`."""
        try:
            script = job.shell_script(command).encode()
        except MadeusError as exc:  # a missing value, bad braces, a NUL byte
            return Outcome(ok=False, message=job.redact(f"cannot substitute values: {exc}"))
        proc = await self._spawn()
        out = OutputSink(job.stdout_path, job.secrets, keep_all=True)
        err = OutputSink(job.stderr_path, job.secrets, keep_all=False)
        try:
            code = await self._communicate(proc, script, out, err)
        except BaseException:
            await self._terminate(proc)
            raise
        finally:
            out.close()
            err.close()
        if code == 0:
            return Outcome(ok=True, exit_status=0, output=out.text().strip())
        message = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return Outcome(
            ok=False,
            exit_status=code,
            output=out.text().strip(),
            stderr_tail=err.tail(),
            message=message,
        )

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start `SHELL_ARGV` in a new session, its script to come on standard input.

        The process exists before `create_subprocess_exec` returns (it still waits for the
        pipes): a cancellation in that window would leave the process group running, with
        nobody knowing its id. So the creation is shielded, and on cancellation we wait for
        it to finish, then kill the group. The inner task is awaited on every path: it never
        outlives this call."""
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *SHELL_ARGV,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        )
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            try:
                proc = await creating
            except Exception:
                raise asyncio.CancelledError from None
            await self._terminate(proc)
            raise

    @staticmethod
    async def _communicate(
        proc: asyncio.subprocess.Process, script: bytes, out: OutputSink, err: OutputSink
    ) -> int:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_feed(proc.stdin, script))
            readers = [
                tg.create_task(_copy_stream(proc.stdout, out)),
                tg.create_task(_copy_stream(proc.stderr, err)),
            ]
            code = await proc.wait()
            try:
                async with asyncio.timeout(_DRAIN_AFTER_EXIT):
                    await asyncio.gather(*readers)
            except TimeoutError:
                for reader in readers:
                    reader.cancel()
        return code

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the process group, give it `grace` seconds, then SIGKILL what is left."""
        signal_group(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace):
                await proc.wait()
        except TimeoutError:
            pass
        finally:
            # Children may outlive the shell (or ignore SIGTERM): the group goes either way.
            signal_group(proc.pid, signal.SIGKILL)
        # Reap the shell, so that no zombie is left; SIGKILL cannot be ignored, so this is
        # quick (bounded anyway: a process stuck in the kernel may take its time).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace):
                await proc.wait()

    async def _upload(self, job: Job, action: UploadAction) -> Outcome:
        try:
            source = Path(job.render(action.source))
            dest = Path(job.render(action.dest))
        except Exception as exc:
            return Outcome(ok=False, message=job.redact(f"cannot substitute values: {exc}"))
        if not source.is_absolute():
            source = job.workdir / source
        try:
            await asyncio.to_thread(_copy, source, dest)
        except OSError as exc:
            return Outcome(ok=False, message=job.redact(f"cannot copy {source} to {dest}: {exc}"))
        return Outcome(ok=True)

    async def aclose(self) -> None:
        return None


def _copy(source: Path, dest: Path) -> None:
    if dest.is_dir():
        dest = dest / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, dest)
