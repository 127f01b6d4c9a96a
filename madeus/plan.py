"""The plan: the transition-level dependency relation of a deployment, with predicted times.

For each transition of the `deploy` behaviour (SPEC section 3):
- `after`: the transitions that must all have ended first: those entering its source place,
  and, for each use port bound to it whose provide group has a single way to be reached, the
  transitions entering that place;
- `after_any`: groups of which at least one transition must have ended. A provide group is
  provided once one of its places is reached, and a place is reached once all transitions
  entering it have ended: an OR of ANDs, which we rewrite as an AND of ORs (min distributes over
  max), so it fits the plan's `after` / `after_any` shape exactly.
Predicted times come from an event-driven pass in order of end times (like the engine, with
declared durations), so OR-groups and zero durations are handled without a topological order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from madeus.errors import Diagnostic, MadeusError
from madeus.model import DEFAULT_BEHAVIOUR, ComponentType, Transition
from madeus.resolve import Deployment
from madeus.source import NO_SPAN, Span


class PlanError(MadeusError):
    """Some transitions can never start: the deployment cannot finish."""


@dataclass(frozen=True, slots=True)
class PlanTransition:
    id: str
    instance: str
    name: str
    behaviour: str
    duration: float
    hosts: tuple[str, ...]
    after: tuple[str, ...] = ()
    after_any: tuple[tuple[str, ...], ...] = ()
    span: Span = field(default=NO_SPAN, compare=False)


@dataclass(frozen=True, slots=True)
class Plan:
    assembly: str
    transitions: tuple[PlanTransition, ...]  # in predicted start order
    predicted_makespan: float
    critical_path: tuple[str, ...]
    start: Mapping[str, float] = field(default_factory=dict, compare=False)
    # Longest predicted path from a transition's start to the end of the run: the priority
    # used when a concurrency limit binds (critical path first).
    remaining: Mapping[str, float] = field(default_factory=dict, compare=False)

    def transition(self, tid: str) -> PlanTransition:
        return self._index()[tid]

    def _index(self) -> dict[str, PlanTransition]:
        return {t.id: t for t in self.transitions}

    def to_json(self) -> dict[str, Any]:
        """The plan JSON of SPEC section 5."""
        return {
            "assembly": self.assembly,
            "transitions": [
                {
                    "id": t.id,
                    "instance": t.instance,
                    "name": t.name,
                    "behaviour": t.behaviour,
                    "duration": t.duration,
                    "hosts": list(t.hosts),
                    "after": list(t.after),
                    "after_any": [list(g) for g in t.after_any],
                }
                for t in self.transitions
            ],
            "predicted_makespan": round(self.predicted_makespan, 6),
            "critical_path": list(self.critical_path),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        transitions = tuple(
            PlanTransition(
                id=str(t["id"]),
                instance=str(t["instance"]),
                name=str(t["name"]),
                behaviour=str(t.get("behaviour", DEFAULT_BEHAVIOUR)),
                duration=float(t.get("duration", 0.0)),
                hosts=tuple(t.get("hosts", ())),
                after=tuple(t.get("after", ())),
                after_any=tuple(tuple(g) for g in t.get("after_any", ())),
            )
            for t in data["transitions"]
        )
        return schedule(str(data["assembly"]), transitions)


def build_plan(deployment: Deployment) -> Plan:
    """Raise PlanError naming the transitions that can never start, if any."""
    transitions: list[PlanTransition] = []
    for inst in deployment.instances:
        transitions.extend(_instance_transitions(deployment, inst.name, inst.component, inst.hosts))
    return schedule(deployment.name, transitions)


def _instance_transitions(
    deployment: Deployment, instance: str, component: ComponentType, hosts: tuple[str, ...]
) -> Iterable[PlanTransition]:
    deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
    initial = set(component.initial_places)
    entering = _entering(deploy)
    uses_by_transition: dict[str, list[str]] = {}
    for use in component.uses:
        for name in use.transitions:
            uses_by_transition.setdefault(name, []).append(use.name)
    for t in deploy:
        after: dict[str, None] = {}
        if t.source not in initial:
            after.update(dict.fromkeys(f"{instance}.{e}" for e in entering.get(t.source, ())))
        clauses: list[frozenset[str]] = []
        for port in uses_by_transition.get(t.name, ()):
            clauses.extend(_provider_clauses(deployment, instance, port))
        single = [next(iter(c)) for c in clauses if len(c) == 1]
        after.update(dict.fromkeys(single))
        groups = _minimal({c for c in clauses if len(c) > 1 and not (c & after.keys())})
        yield PlanTransition(
            id=f"{instance}.{t.name}",
            instance=instance,
            name=t.name,
            behaviour=t.behaviour,
            duration=t.expected,
            hosts=hosts,
            after=tuple(after),
            after_any=tuple(tuple(sorted(g)) for g in groups),
            span=t.span,
        )


def _entering(transitions: Iterable[Transition]) -> dict[str, list[str]]:
    entering: dict[str, list[str]] = {}
    for t in transitions:
        entering.setdefault(t.target, []).append(t.name)
    return entering


# A port that can never be provided: the waiting transition can never start.
_NEVER = frozenset({"<never>"})


def _provider_clauses(deployment: Deployment, instance: str, port: str) -> list[frozenset[str]]:
    """CNF clauses (sets of transition ids, at least one of each must end) for `port` to be
    provided. An unconnected (optional) port and a group holding an initial place give none."""
    link = deployment.provider_of(instance, port)
    if link is None:
        return []
    provider = deployment.instance(link.provider)
    component = provider.component
    provide = component.port(link.provider_port)
    places: Sequence[str] = getattr(provide, "places", ())
    initial = set(component.initial_places)
    if any(p in initial for p in places):
        return []
    entering = _entering(component.transitions_of(DEFAULT_BEHAVIOUR))
    # Each reachable place contributes one conjunction; a place nothing enters is never reached.
    conjunctions = [
        [f"{link.provider}.{t}" for t in entering[p]] for p in places if entering.get(p)
    ]
    if not conjunctions:
        return [_NEVER]
    clauses = {frozenset(choice) for choice in itertools.product(*conjunctions)}
    return list(_minimal(clauses))


def _minimal(clauses: set[frozenset[str]]) -> list[frozenset[str]]:
    """Drop clauses implied by smaller ones (absorption)."""
    ordered = sorted(clauses, key=lambda c: (len(c), sorted(c)))
    kept: list[frozenset[str]] = []
    for clause in ordered:
        if not any(k <= clause for k in kept):
            kept.append(clause)
    return kept


def schedule(assembly: str, transitions: Sequence[PlanTransition]) -> Plan:
    """Predict start times (earliest, unlimited parallelism), makespan and critical path."""
    by_id = {t.id: t for t in transitions}
    waiting: dict[str, int] = {}
    and_dependents: dict[str, list[str]] = {}
    any_dependents: dict[str, list[tuple[str, int]]] = {}
    for t in transitions:
        waiting[t.id] = len(t.after) + len(t.after_any)
        for a in t.after:
            and_dependents.setdefault(a, []).append(t.id)
        for index, group in enumerate(t.after_any):
            for a in group:
                any_dependents.setdefault(a, []).append((t.id, index))
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    cause: dict[str, str] = {}
    satisfied: set[tuple[str, int]] = set()
    order: list[str] = []
    counter = itertools.count()
    heap: list[tuple[float, int, str]] = []

    def begin(tid: str, at: float, because: str | None) -> None:
        start[tid] = at
        if because is not None:
            cause[tid] = because
        heapq.heappush(heap, (at + by_id[tid].duration, next(counter), tid))

    for t in transitions:
        if waiting[t.id] == 0:
            begin(t.id, 0.0, None)
    while heap:
        now, _, tid = heapq.heappop(heap)
        end[tid] = now
        order.append(tid)
        ready: list[str] = []
        for d in and_dependents.get(tid, ()):
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
        for d, index in any_dependents.get(tid, ()):
            if (d, index) not in satisfied:
                satisfied.add((d, index))
                waiting[d] -= 1
                if waiting[d] == 0:
                    ready.append(d)
        for d in ready:
            begin(d, now, tid)
    blocked = [t for t in transitions if t.id not in end]
    if blocked:
        raise PlanError(
            Diagnostic(
                "blocked",
                f'transition "{t.id}" can never start: it waits for something that never happens',
                t.span,
            )
            for t in blocked
        )
    makespan = max(end.values(), default=0.0)
    position = {tid: i for i, tid in enumerate(order)}
    path: list[str] = []
    if order:
        last = max(order, key=lambda tid: (end[tid], -position[tid]))
        node: str | None = last
        while node is not None:
            path.append(node)
            node = cause.get(node)
        path.reverse()
    remaining = _remaining(order, position, by_id, and_dependents, any_dependents)
    ordered = tuple(sorted(transitions, key=lambda t: (start[t.id], position[t.id])))
    return Plan(assembly, ordered, makespan, tuple(path), start, remaining)


def _remaining(
    order: Sequence[str],
    position: Mapping[str, int],
    by_id: Mapping[str, PlanTransition],
    and_dependents: Mapping[str, list[str]],
    any_dependents: Mapping[str, list[tuple[str, int]]],
) -> dict[str, float]:
    remaining: dict[str, float] = {}
    for tid in reversed(order):
        later = [
            remaining[d]
            for d in (*and_dependents.get(tid, ()), *(d for d, _ in any_dependents.get(tid, ())))
            if position[d] > position[tid]
        ]
        remaining[tid] = by_id[tid].duration + max(later, default=0.0)
    return remaining
