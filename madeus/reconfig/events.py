"""Progress events of a reconfiguration: the deployment's events (`madeus.engine.events`, whose
transition events name their behaviour), plus what the program itself does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from madeus.engine.events import RunEnded, RunStarted, TransitionEnded, TransitionStarted


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
