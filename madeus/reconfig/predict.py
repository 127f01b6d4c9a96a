"""The predicted makespan and critical path of a reconfiguration program.

A discrete-event simulation over virtual time: the same state machine as the executor
(`machine.py`), driven by a clock instead of backends. Each transition that starts ends after
its declared duration; ends are processed in time order (ties in start order), each one
followed by every move it enables, exactly as the executor does when a job ends. The critical
path walks back from the transition that ended last through the *cause* of each start: the
transition whose end made it start (none for what the program started at once).

    prediction = predict(configuration, program)
    prediction.makespan, prediction.critical_path
    prediction.to_plan()      # a `madeus.plan.Plan`, for `madeus plan` tables and Gantt charts
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from madeus.errors import Diagnostic, MadeusError
from madeus.plan import Plan, PlanTransition
from madeus.reconfig.machine import Blocked, Machine, Move, Problem
from madeus.reconfig.program import Program, Push
from madeus.reconfig.state import Configuration
from madeus.source import NO_SPAN, Span


class ReconfigBlocked(MadeusError):
    """The program cannot finish (a deadlock), or a behaviour loops: `blocked` says why."""

    def __init__(self, diagnostics: list[Diagnostic], blocked: tuple[Blocked, ...] = ()) -> None:
        super().__init__(diagnostics)
        self.blocked = blocked


@dataclass(frozen=True, slots=True)
class PredictedStep:
    """One run of a transition. `cause`: the index (in `Prediction.steps`) of the step whose
    end made it start, -1 when nothing did (it started at 0, or right after an instruction)."""

    id: str  # instance.transition
    instance: str
    transition: str
    behaviour: str
    hosts: tuple[str, ...]
    start: float
    duration: float
    cause: int = -1
    push: int = -1  # the index of the push instruction of its behaviour

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Prediction:
    assembly: str
    steps: tuple[PredictedStep, ...]  # in start order
    makespan: float
    critical_path: tuple[int, ...]  # indices into steps
    idle_pushes: tuple[int, ...] = ()  # pushes whose behaviour ran no transition
    problems: tuple[Problem, ...] = field(default=(), compare=False)

    @property
    def sequential(self) -> float:
        """The sum of the durations: the makespan one transition at a time."""
        return sum(s.duration for s in self.steps)

    def critical_ids(self) -> tuple[str, ...]:
        return tuple(self.steps[i].id for i in self.critical_path)

    def to_plan(self) -> Plan:
        """The prediction as a Plan (ids made unique with `#2`, `#3`... when a transition runs
        more than once; `after` is the cause): for `madeus plan`'s table and JSON, and for the
        predicted bars of Gantt charts."""
        seen: dict[str, int] = {}
        ids: list[str] = []
        for step in self.steps:
            count = seen[step.id] = seen.get(step.id, 0) + 1
            ids.append(step.id if count == 1 else f"{step.id}#{count}")
        transitions = tuple(
            PlanTransition(
                id=ids[i],
                instance=s.instance,
                name=s.transition,
                behaviour=s.behaviour,
                duration=s.duration,
                hosts=s.hosts,
                after=(ids[s.cause],) if s.cause >= 0 else (),
            )
            for i, s in enumerate(self.steps)
        )
        remaining = _remaining(self.steps)
        return Plan(
            self.assembly,
            transitions,
            self.makespan,
            tuple(ids[i] for i in self.critical_path),
            {ids[i]: s.start for i, s in enumerate(self.steps)},
            {ids[i]: remaining[i] for i in range(len(self.steps))},
        )

    def to_json(self) -> dict[str, Any]:
        data = self.to_plan().to_json()
        data["sequential"] = round(self.sequential, 6)
        return data


def _remaining(steps: tuple[PredictedStep, ...]) -> list[float]:
    remaining = [s.duration for s in steps]
    for i in sorted(range(len(steps)), key=lambda k: steps[k].start, reverse=True):
        cause = steps[i].cause
        if cause >= 0:
            remaining[cause] = max(remaining[cause], steps[cause].duration + remaining[i])
    return remaining


def predict(configuration: Configuration, program: Program) -> Prediction:
    """Simulate `program` from `configuration` with declared durations. Raise ReconfigBlocked
    when this execution blocks or loops (the verifier finds such programs first)."""
    machine = Machine(configuration, program)
    steps: list[PredictedStep] = []
    running: dict[tuple[str, str], int] = {}
    heap: list[tuple[float, int, int]] = []  # (end, order, step index)
    order = itertools.count()
    fired_by_push: dict[int, int] = {}

    def started(moves: list[Move], now: float, cause: int) -> None:
        for move in moves:
            if move.kind != "fire":
                continue
            t = machine.transition(move.instance, move.name)
            push = machine.push_index(move.instance)
            fired_by_push[push] = fired_by_push.get(push, 0) + 1
            index = len(steps)
            steps.append(
                PredictedStep(
                    f"{move.instance}.{move.name}",
                    move.instance,
                    move.name,
                    t.behaviour,
                    machine.hosts(move.instance),
                    now,
                    t.expected,
                    cause,
                    push,
                )
            )
            running[(move.instance, move.name)] = index
            heapq.heappush(heap, (now + t.expected, next(order), index))

    started(machine.advance(), 0.0, -1)
    last = -1
    while heap and machine.fatal is None:
        now, _, index = heapq.heappop(heap)
        step = steps[index]
        del running[(step.instance, step.transition)]
        last = index
        started(machine.end(step.instance, step.transition), now, index)
    if machine.fatal is not None:
        raise ReconfigBlocked(
            [Diagnostic("loop", machine.fatal.describe(), _span_of_push(program, machine))]
        )
    if not machine.finished:
        blocked = tuple(machine.blocked())
        raise ReconfigBlocked(
            [
                Diagnostic(
                    "blocked",
                    "the program cannot finish: " + "; ".join(b.message for b in blocked),
                    blocked[0].span if blocked else program[machine.pc].span,
                )
            ],
            blocked,
        )
    makespan = max((s.end for s in steps), default=0.0)
    path: list[int] = []
    if steps:
        # The last step ending at the makespan (ends are processed in time order, so `last`
        # is the deepest among equal end times: a zero-duration tail is kept on the path).
        node = last if last >= 0 else max(range(len(steps)), key=lambda i: steps[i].end)
        while node >= 0:
            path.append(node)
            node = steps[node].cause
        path.reverse()
    idle = tuple(i for i, _ in program.pushes() if fired_by_push.get(i, 0) == 0)
    return Prediction(
        configuration.assembly,
        tuple(steps),
        makespan,
        tuple(path),
        idle,
        tuple(machine.problems),
    )


def _span_of_push(program: Program, machine: Machine) -> Span:
    fatal = machine.fatal
    assert fatal is not None
    index = machine.push_index(fatal.instance)
    if index >= 0:
        ins = program[index]
        if isinstance(ins, Push):
            return ins.span
    return program[max(machine.pc - 1, 0)].span if len(program) else NO_SPAN
