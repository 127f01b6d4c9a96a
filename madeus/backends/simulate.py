"""Simulation (every action replaced by a sleep of its declared duration times the time scale),
and `--check` (actions printed, not run).

The engine runs unchanged (same scheduling, same events, same trace); only the work is fake. A
zero duration returns at once, without even yielding to the loop, so huge simulated assemblies
measure the engine and not the sleeps.
"""

from __future__ import annotations

import asyncio
import shlex

from madeus.backends.base import Job, Outcome
from madeus.backends.process import OutputSink
from madeus.model import PythonAction, ShellAction, UploadAction
from madeus.template import TemplateError, template_pieces

_OK = Outcome(ok=True)


class SimulateBackend:
    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale < 0:
            raise ValueError("the time scale must not be negative")
        self.time_scale = time_scale

    def seconds(self, job: Job) -> float:
        return job.duration * self.time_scale

    async def run(self, job: Job) -> Outcome:
        delay = job.duration * self.time_scale
        if delay > 0:
            await asyncio.sleep(delay)
        return _OK

    async def aclose(self) -> None:
        return None


class CheckBackend:
    """`--check`: an action that is not Ansible's is not run; what it would do goes to the
    job's log and to the outcome's message (shown by the progress display): the command as
    written, then the values of its placeholders, shell-quoted, secrets redacted."""

    async def run(self, job: Job) -> Outcome:
        action = job.action
        host = job.host.name
        if isinstance(action, ShellAction):
            said = f"would run on {host}: {_shown(job, action.command)}"
        elif isinstance(action, UploadAction):
            said = f"would upload {_shown(job, action.source)} to {host}:{_shown(job, action.dest)}"
        elif isinstance(action, PythonAction):
            said = f"would call {action.ref} for {host}"
        else:
            said = f"would run {type(action).__name__} on {host}"
        text = job.redact(said)
        sink = OutputSink(job.stdout_path, job.secrets, keep_all=False)
        sink.write((text + "\n").encode())
        sink.close()
        # The would-be output stands for the data value users of this transition would get.
        return Outcome(ok=True, message=text, output=f"<output of {job.id}>")

    async def aclose(self) -> None:
        return None


def _shown(job: Job, text: str) -> str:
    """`text` as written, followed by `where NAME=VALUE` for each placeholder."""
    try:
        names = dict.fromkeys(name for _, name, _ in template_pieces(text) if name is not None)
    except TemplateError:
        return text
    values = [
        f"{name}={shlex.quote(job.values[name])}" if name in job.values else f"{name} (no value)"
        for name in names
    ]
    if not values:
        return text.strip()
    return f"{text.strip()}\n  where {', '.join(values)}"
