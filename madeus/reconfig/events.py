"""Progress events of a reconfiguration: the deployment's events (`madeus.engine.events`), with
the behaviour on each transition event, plus what the program itself does.

`TransitionStarted` and `TransitionEnded` here are subclasses of the engine's, so anything that
renders a deployment's progress renders a reconfiguration's too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from madeus.engine import events as engine
from madeus.engine.events import RunEnded, RunStarted
from madeus.model import DEFAULT_BEHAVIOUR


@dataclass(frozen=True, slots=True)
class TransitionStarted(engine.TransitionStarted):
    behaviour: str = DEFAULT_BEHAVIOUR


@dataclass(frozen=True, slots=True)
class TransitionEnded(engine.TransitionEnded):
    behaviour: str = DEFAULT_BEHAVIOUR


@dataclass(frozen=True, slots=True)
class InstructionDone:
    """The program executed instruction `index` (`text` as the builder writes it)."""

    index: int
    text: str
    time: float


@dataclass(frozen=True, slots=True)
class BehaviourDone:
    """`instance` ended behaviour `behaviour` (pushed by instruction `push`)."""

    instance: str
    behaviour: str
    push: int
    time: float


Event = (
    RunStarted | TransitionStarted | TransitionEnded | InstructionDone | BehaviourDone | RunEnded
)
EventSink = Callable[[Any], None]

__all__ = [
    "BehaviourDone",
    "Event",
    "EventSink",
    "InstructionDone",
    "RunEnded",
    "RunStarted",
    "TransitionEnded",
    "TransitionStarted",
]
