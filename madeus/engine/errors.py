"""Errors raised by the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from madeus.errors import Diagnostic, MadeusError
from madeus.source import NO_SPAN, Span
from madeus.trace import Status, Trace

if TYPE_CHECKING:
    from madeus.engine.journal import LockHolder


@dataclass(frozen=True, slots=True)
class Failure:
    """One transition that failed on one host, after its retries."""

    transition: str
    host: str
    status: Status  # "failed" or "timeout"
    exit_status: int | None
    message: str  # plain words, redacted
    stderr_tail: str  # redacted
    attempts: int
    span: Span = NO_SPAN

    def describe(self) -> str:
        what = "timed out" if self.status == "timeout" else "failed"
        parts = [f'transition "{self.transition}" {what} on host "{self.host}"']
        if self.exit_status is not None:
            parts.append(f"(exit status {self.exit_status})")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        text = " ".join(parts)
        redundant = (
            self.exit_status is not None and self.message == f"exit status {self.exit_status}"
        )
        return f"{text}: {self.message}" if self.message and not redundant else text


class DeployError(MadeusError):
    """The run stopped because a transition failed. The first failure's facts are attributes;
    `failures` lists every one (several when running transitions were allowed to finish), and
    `trace` is the partial trace of what ran."""

    def __init__(self, failures: tuple[Failure, ...], trace: Trace) -> None:
        if not failures:
            raise ValueError("DeployError needs at least one failure")
        super().__init__([Diagnostic("deploy-failed", f.describe(), f.span) for f in failures])
        first = failures[0]
        self.failures = failures
        self.trace = trace
        self.transition = first.transition
        self.host = first.host
        self.status = first.status
        self.exit_status = first.exit_status
        self.stderr_tail = first.stderr_tail
        self.message = first.message


class ParameterError(MadeusError):
    """A parameter value cannot be resolved (an unset environment variable): nothing ran."""


class JournalError(MadeusError):
    """The journal cannot be read or written (an unwritable directory, a damaged file)."""


class JournalLocked(JournalError):
    """Another run holds the journal's lock: two runs of one assembly and inventory must not
    overlap. `holder` says who (pid, host, user, since when, command line)."""

    def __init__(self, directory: object, holder: LockHolder) -> None:
        self.directory = directory
        self.holder = holder
        super().__init__(
            f"another run holds the journal {directory}: {holder.describe()} "
            "(wait for it to end, or stop it)"
        )


class ResumeError(MadeusError):
    """`--resume` cannot continue on its own: transitions were running when the run stopped and
    are not declared idempotent (one diagnostic each, saying what to check). Nothing ran."""
