"""Progress events: what the engine tells `on_event` callbacks (and nothing else tells the CLI).

Times are seconds from the start of the run, like the trace. A transition's events name its
behaviour (`deploy` for a deployment's). Events carry no parameter values;
messages and stderr tails are redacted before they get here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madeus.model import DEFAULT_BEHAVIOUR
from madeus.trace import Status, Trace


@dataclass(frozen=True, slots=True)
class RunStarted:
    assembly: str
    started_at: str  # UTC ISO, Z
    transitions: int
    jobs: int  # transitions x hosts
    predicted_makespan: float  # already multiplied by the time scale when simulating
    run_dir: Path | None
    skipped: int = 0  # jobs a resumed run skips (ended in an earlier run)


@dataclass(frozen=True, slots=True)
class TransitionStarted:
    id: str
    host: str
    time: float
    attempt: int = 1
    behaviour: str = DEFAULT_BEHAVIOUR


@dataclass(frozen=True, slots=True)
class TransitionEnded:
    """One host's attempt ended. `final` is False when the transition will be tried again.
    A job a resumed run skips gets only this event, with status `skipped` and attempt 0."""

    id: str
    host: str
    start: float
    end: float
    status: Status
    attempt: int = 1
    final: bool = True
    exit_status: int | None = None
    message: str = ""
    stderr_tail: str = ""
    behaviour: str = DEFAULT_BEHAVIOUR


@dataclass(frozen=True, slots=True)
class RunEnded:
    """Always sent, also when the run failed or was interrupted (`status`)."""

    trace: Trace
    status: str  # "ok", "failed" or "interrupted"
    run_dir: Path | None


Event = RunStarted | TransitionStarted | TransitionEnded | RunEnded
