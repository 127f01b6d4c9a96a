"""Run actions on this machine: shell commands as subprocesses, uploads as copies.

A shell action runs as `/bin/sh -c 'eval "$(cat)"'` with its script on standard input
(`Job.shell_script`, see `madeus/shell.py`): values are shell variables referenced from the
command, never pasted into it, and neither the command nor its values appear in the process
table. The command runs in the operator's current directory (relative paths in *commands* are
the operator's; the `.mad` file's directory, `Job.workdir`, is where an upload's source is
read).

Output is streamed to the job's log files as it comes (opened on the first byte, mode 0600,
secrets redacted line by line). The process runs in a session of its own so that cancelling the
job (a timeout, a failure elsewhere, Ctrl-C) can signal its whole process group: SIGTERM, then
SIGKILL after a grace period, before `CancelledError` is re-raised (`process.run_process`).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from madeus.backends.base import Job, Outcome
from madeus.backends.connection import connection_of
from madeus.backends.process import OutputSink, run_process
from madeus.errors import BackendError, MadeusError
from madeus.model import ShellAction, UploadAction
from madeus.shell import shell_argv

if TYPE_CHECKING:
    from madeus.backends.router import Habits


class LocalBackend:
    def __init__(self, grace: float = 5.0, habits: Habits | None = None) -> None:
        self.grace = grace  # seconds between SIGTERM and SIGKILL on cancellation
        self.habits = habits  # `-b`: commands through sudo

    async def run(self, job: Job) -> Outcome:
        action = job.action
        if isinstance(action, ShellAction):
            return await self.run_shell(job, action.command)
        if isinstance(action, UploadAction):
            return await self._upload(job, action)
        kind = type(action).__name__
        raise BackendError(f"the local backend cannot run {kind} ({job.id})")

    async def run_shell(self, job: Job, command: str) -> Outcome:
        """Run `command` (placeholders not yet substituted) with `shell_argv`."""
        try:
            argv = shell_argv(connection_of(job.host, self.habits).become_user)
        except BackendError as exc:  # a become method other than sudo
            return Outcome(ok=False, message=str(exc))
        try:
            script = job.shell_script(command).encode()
        except MadeusError as exc:  # a missing value, bad braces, a NUL byte
            return Outcome(ok=False, message=job.redact(f"cannot substitute values: {exc}"))
        out = OutputSink(job.stdout_path, job.secrets, keep_all=True)
        err = OutputSink(job.stderr_path, job.secrets, keep_all=False)
        try:
            code = await run_process(argv, input=script, out=out, err=err, grace=self.grace)
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
