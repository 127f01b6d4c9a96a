"""The plan: the transition-level dependency relation of a deployment, with predicted times.

For each transition of the `deploy` behaviour (docs/semantics.md):
- `after`: the transitions that must all have ended first: those entering its source place,
  and, for each use port bound to it whose provide group has a single way to be reached, the
  transitions entering that place;
- `after_one_of`: one entry per other use port bound to it: the alternatives, one per place
  of the provide group, each the transitions entering that place. A provide group is provided
  once one of its places is reached, and a place is reached once all transitions entering it
  have ended: an OR of ANDs, kept as it is (linear in the size of the net).
Plans read from JSON may also carry `after_any`, the older form (groups of which at least one
transition must have ended: an AND of ORs, whose size can grow exponentially); every reader
takes both through `PlanTransition.alternatives()`.
Predicted times come from an event-driven pass in order of end times (like the engine, with
declared durations), so alternatives and zero durations are handled without a topological
order.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from madeus import net
from madeus.errors import Diagnostic, MadeusError
from madeus.memory import gc_paused
from madeus.model import DEFAULT_BEHAVIOUR
from madeus.net import Net, NetInstance, Provider
from madeus.resolve import Deployment
from madeus.source import NO_SPAN, Span

if TYPE_CHECKING:
    from madeus.trace import Trace


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
    after_one_of: tuple[tuple[tuple[str, ...], ...], ...] = ()
    span: Span = field(default=NO_SPAN, compare=False)

    def alternatives(self) -> tuple[tuple[tuple[str, ...], ...], ...]:
        """Every wait beyond `after`, as `after_one_of` entries: for each, the transition may
        start once all transitions of one of its alternatives have ended (an `after_any` group
        is an entry whose alternatives are its members, one each)."""
        if not self.after_any:
            return self.after_one_of
        return tuple(tuple((a,) for a in g) for g in self.after_any) + self.after_one_of


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

    # An index built on first use: rebuilt at each call, `transition()` in a loop over all
    # transitions (as an executor does) was quadratic.
    _by_id: dict[str, PlanTransition] = field(default_factory=dict, compare=False, repr=False)

    def transition(self, tid: str) -> PlanTransition:
        if not self._by_id:
            self._by_id.update((t.id, t) for t in self.transitions)
        return self._by_id[tid]

    def to_json(self) -> dict[str, Any]:
        """The plan JSON (docs/plan.md)."""
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
                    "after_one_of": [[list(a) for a in entry] for entry in t.after_one_of],
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
                after_one_of=tuple(
                    tuple(tuple(dict.fromkeys(a)) for a in entry)
                    for entry in t.get("after_one_of", ())
                ),
            )
            for t in data["transitions"]
        )
        return schedule(str(data["assembly"]), transitions)


def build_plan(deployment: Deployment) -> Plan:
    """The plan of `deployment`'s dependency net (`madeus.net`). Raise PlanError naming the
    transitions that can never start, if any."""
    return plan_of(net.compile(deployment))


def plan_of(compiled: Net) -> Plan:
    """The plan of a dependency net: the transition-level projection of its waits (module
    docstring), then the prediction."""
    if compiled.problems:
        raise PlanError(compiled.problems)
    transitions: list[PlanTransition] = []
    with gc_paused():
        for inst in compiled.instances:
            transitions.extend(_instance_transitions(compiled, inst))
        return schedule(compiled.name, transitions)


def _instance_transitions(compiled: Net, inst: NetInstance) -> Iterable[PlanTransition]:
    shape, instance = inst.shape, inst.name
    for t in shape.deploy:
        after: dict[str, None] = {}
        if t.source not in shape.initial:
            entering = shape.entering.get(t.source, ())
            # A place no deploy transition enters is never reached: this one never starts.
            after.update(dict.fromkeys(f"{instance}.{e}" for e in entering) or {_UNREACHED: None})
        entries: list[list[tuple[str, ...]]] = []
        for port in shape.bound.get(t.name, ()):
            alternatives = _provider_alternatives(compiled.provider.get((instance, port)))
            if alternatives is None:
                continue
            if len(alternatives) == 1:
                after.update(dict.fromkeys(alternatives[0]))
            else:
                entries.append(alternatives)
        one_of: dict[tuple[tuple[str, ...], ...], None] = {}
        for alternatives in entries:
            # An alternative already waited for in full satisfies the entry.
            if not any(after.keys() >= set(a) for a in alternatives):
                one_of[tuple(alternatives)] = None
        yield PlanTransition(
            id=f"{instance}.{t.name}",
            instance=instance,
            name=t.name,
            behaviour=t.behaviour,
            duration=float(t.expected),  # `~5s` may reach us as an int
            hosts=inst.hosts,
            after=tuple(after),
            after_one_of=tuple(one_of),
            span=t.span,
        )


# A port that can never be provided: the waiting transition can never start.
_NEVER = "<never>"
# A transition whose source place is never reached waits for this, which never ends.
_UNREACHED = "<unreached source place>"


def _provider_alternatives(provider: Provider | None) -> list[tuple[str, ...]] | None:
    """How a use port gets provided: alternatives (transition ids that must all have ended),
    one per reachable place of the connected provide group, those holding another one's ids
    left out. None when nothing is waited for: an unconnected (optional) port, a group holding
    an initial place."""
    if provider is None:
        return None
    shape, name = provider.instance.shape, provider.instance.name
    places = provider.port.places if provider.port is not None else ()
    if any(p in shape.initial for p in places):
        return None
    # Each reachable place is one alternative; a place nothing enters is never reached.
    alternatives = {
        tuple(f"{name}.{t}" for t in shape.entering[p]): None for p in places if p in shape.entering
    }
    if not alternatives:
        return [(_NEVER,)]
    if len(alternatives) == 1:
        return list(alternatives)
    ordered = sorted(alternatives, key=len)
    kept: list[tuple[str, ...]] = []
    for alternative in ordered:
        members = set(alternative)
        if not any(members >= set(k) for k in kept):
            kept.append(alternative)
    return kept


def schedule(assembly: str, transitions: Sequence[PlanTransition]) -> Plan:
    """Predict start times (earliest, unlimited parallelism), makespan and critical path."""
    with gc_paused():
        return _schedule(assembly, transitions)


def _schedule(assembly: str, transitions: Sequence[PlanTransition]) -> Plan:
    # Transitions are numbered and the pass works on lists indexed by number: at 100,000
    # transitions, string-keyed dicts made it grow faster than linearly (cache misses).
    n = len(transitions)
    index = {t.id: i for i, t in enumerate(transitions)}
    duration = [t.duration for t in transitions]
    waiting = [0] * n
    and_dependents: list[list[int]] = [[] for _ in range(n)]
    # Alternatives are numbered across the plan: `left[a]` members still to end, `slot[a]` the
    # entry it satisfies, `owner[e]` the transition waiting on entry e.
    alt_dependents: list[list[int]] = [[] for _ in range(n)]
    left: list[int] = []
    slot: list[int] = []
    owner: list[int] = []
    for i, t in enumerate(transitions):
        entries = t.alternatives()
        waiting[i] = len(t.after) + len(entries)
        for a in t.after:
            j = index.get(a)
            if j is not None:  # an unknown id is never satisfied: `i` stays blocked
                and_dependents[j].append(i)
        for entry in entries:
            for alternative in entry:
                members = set(alternative)
                for m in members:
                    j = index.get(m)
                    if j is not None:
                        alt_dependents[j].append(len(left))
                left.append(len(members))
                slot.append(len(owner))
            owner.append(i)
    start = [-1.0] * n
    ended = [False] * n
    cause = [-1] * n
    satisfied = bytearray(len(owner))
    order: list[int] = []
    counter = itertools.count()
    heap: list[tuple[float, int, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    for i in range(n):
        if waiting[i] == 0:
            start[i] = 0.0
            push(heap, (duration[i], next(counter), i))
    while heap:
        now, _, i = pop(heap)
        ended[i] = True
        order.append(i)
        ready = list(and_dependents[i])
        for k in alt_dependents[i]:
            left[k] -= 1
            if left[k] == 0 and not satisfied[slot[k]]:
                satisfied[slot[k]] = 1
                ready.append(owner[slot[k]])
        for d in ready:
            waiting[d] -= 1
            if waiting[d] == 0:
                start[d] = now
                cause[d] = i
                push(heap, (now + duration[d], next(counter), d))
    if len(order) < n:
        done = {transitions[i].id for i in order}
        raise PlanError(
            Diagnostic(
                "blocked",
                f'transition "{t.id}" can never start: it waits for {_pending(t, done, index)}',
                t.span,
            )
            for i, t in enumerate(transitions)
            if not ended[i]
        )
    makespan = max((start[i] + duration[i] for i in order), default=0.0)
    path: list[str] = []
    if order:
        # `order` is in end order, so its last element ends last. Among equal end times the
        # last one popped is the deepest: with zero durations (a -> b -> c all ending at 0, or
        # a 0 s transition after a 5 s one) the path must be the whole chain, not its head.
        node = order[-1]
        while node >= 0:
            path.append(transitions[node].id)
            node = cause[node]
        path.reverse()
    dependents = [and_dependents[i] + [owner[slot[k]] for k in alt_dependents[i]] for i in range(n)]
    remaining = _remaining(order, duration, dependents)
    # Stable sort: transitions starting together keep their declaration order, which is what
    # a reader of the table or the JSON expects (not the order in which they happen to end).
    ordered = tuple(transitions[i] for i in sorted(range(n), key=start.__getitem__))
    return Plan(
        assembly,
        ordered,
        makespan,
        tuple(path),
        {t.id: start[i] for i, t in enumerate(transitions)},
        {t.id: remaining[i] for i, t in enumerate(transitions)},
    )


def _pending(t: PlanTransition, done: set[str], index: Mapping[str, int]) -> str:
    """What a blocked transition still waits for, in words (names the waiting cycle's links)."""

    def name(tid: str) -> str:
        if tid == _NEVER:
            return "a provide port whose places no transition reaches"
        if tid == _UNREACHED:
            return "its source place, which no deploy transition reaches"
        return tid if tid in index else f"unknown transition {tid}"

    parts = [name(a) for a in t.after if a not in done]
    for entry in t.alternatives():
        if any(all(a in done for a in alternative) for alternative in entry):
            continue
        parts.append(
            "one of "
            + ", ".join(
                name(a[0]) if len(a) == 1 else "(" + " and ".join(map(name, a)) + ")" for a in entry
            )
        )
    return "; ".join(parts) if parts else "nothing (inconsistent plan)"


def _remaining(
    order: Sequence[int], duration: Sequence[float], dependents: Sequence[list[int]]
) -> list[float]:
    position = [0] * len(duration)
    for p, i in enumerate(order):
        position[i] = p
    remaining = [0.0] * len(duration)
    for i in reversed(order):
        here = position[i]
        longest = 0.0
        # Only dependents that ended after this one can have waited for it (one waiting for
        # alternatives may have started earlier, thanks to another alternative).
        for d in dependents[i]:
            if position[d] > here and remaining[d] > longest:
                longest = remaining[d]
        remaining[i] = duration[i] + longest
    return remaining


def measured_durations(trace: Trace, *more: Trace) -> dict[str, float]:
    """Each transition's measured duration: from its first start to its last end over its
    hosts (a transition ends when its last host ends), counting only the events that ended
    `ok` (a failed, cancelled or skipped job measured nothing). Given several traces (runs of
    the same deployment), the median of the runs that measured it."""
    runs: dict[str, list[float]] = {}
    for one in (trace, *more):
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for event in one.events:
            if event.status != "ok":
                continue
            if event.id not in first or event.start < first[event.id]:
                first[event.id] = event.start
            if event.id not in last or event.end > last[event.id]:
                last[event.id] = event.end
        for tid in first:
            runs.setdefault(tid, []).append(max(0.0, last[tid] - first[tid]))
    return {tid: statistics.median(values) for tid, values in runs.items()}


def calibrate(plan: Plan, trace: Trace, *more: Trace) -> Plan:
    """`plan` with each transition's duration replaced by the one measured in `trace` (the
    median over `trace` and `more`: `measured_durations`), start times, makespan and critical
    path predicted again; the transitions absent from the traces keep their declared
    durations. Predictions thus learn from real runs: the next run of the same deployment is
    predicted with what the previous ones took."""
    measured = measured_durations(trace, *more)
    transitions = [
        replace(t, duration=round(measured[t.id], 6)) if t.id in measured else t
        for t in plan.transitions
    ]
    return schedule(plan.assembly, transitions)
