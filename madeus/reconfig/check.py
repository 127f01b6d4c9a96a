"""Checking the trace of an executed reconfiguration against the Concerto rules.

Independent of the executor and of `machine.py`: the timeline of each instance's tokens is
rebuilt from the trace alone, then checked. What a trace shows, and so what is checked:

- each transition run is an *occurrence*: its jobs (one per host) start together; it runs from
  its first start to its last end;
- a place is marked from the moment it is reached (time 0 for a place marked in the starting
  configuration; else the end of the last transition of the behaviour that enters it) until
  the first transition leaving it starts (the moment it is left is not in the trace: the
  executor leaves a place and starts the transitions that do not wait in the same step);
- a provide port is active while one of its group's places is marked or a transition between
  two of its places holds the token (from its start to the moment its target is reached);
- a use port is in use while a place bound to it is marked or a transition bound to it runs (or
  has ended, until its target is reached).

An instance changed `serial` shows as its batches (`web#1`, `web#2`...), each with its own
timeline; its provide port is active while one of them provides it.

Checked, for every connection of the starting configuration that the program leaves alone:
**port safety** (never in use while the provider is inactive, for longer than `tolerance`):
this is what the safety rule (a provider waits before leaving its group while a user is in use)
and the port rule (a transition bound to a use port starts only once it is provided) guarantee
together. Also: every job ended `ok`, the behaviours of one instance (or batch) ran one after
the other (a queue), never overlapping, and two batches of one instance never ran at the same
time (a rolling change).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from madeus.model import ComponentType
from madeus.reconfig.program import Connect, Disconnect, Program
from madeus.reconfig.state import Configuration
from madeus.trace import Trace

Interval = tuple[float, float]
INF = float("inf")


@dataclass(frozen=True, slots=True)
class _Occurrence:
    instance: str
    transition: str
    behaviour: str
    start: float
    end: float


def _occurrences(trace: Trace) -> list[_Occurrence]:
    by_id: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for e in trace.events:
        by_id[e.id].append((e.start, e.end, e.behaviour))
    found: list[_Occurrence] = []
    for tid, jobs in by_id.items():
        instance, _, transition = tid.rpartition(".")
        jobs.sort()
        current: list[tuple[float, float, str]] = []
        for job in jobs:
            if current and job[0] >= max(j[1] for j in current):
                found.append(_merge(instance, transition, current))
                current = []
            current.append(job)
        if current:
            found.append(_merge(instance, transition, current))
    found.sort(key=lambda o: (o.start, o.end))
    return found


def _merge(instance: str, transition: str, jobs: list[tuple[float, float, str]]) -> _Occurrence:
    return _Occurrence(
        instance,
        transition,
        jobs[0][2],
        min(j[0] for j in jobs),
        max(j[1] for j in jobs),
    )


class _Timeline:
    """The token intervals of one instance, rebuilt from its occurrences."""

    def __init__(self, component: ComponentType, marking: Iterable[str]) -> None:
        self.component = component
        self.places: dict[str, list[Interval]] = defaultdict(list)
        self.running: dict[str, list[Interval]] = defaultdict(list)
        self.docks: dict[str, list[Interval]] = defaultdict(list)  # end -> target reached
        self._since: dict[str, float] = {p: -INF for p in marking}
        self._ended: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)

    def run(self, occurrences: list[_Occurrence]) -> None:
        transitions = {t.name: t for t in self.component.transitions}
        events: list[tuple[float, int, _Occurrence]] = []
        for o in occurrences:
            events.append((o.start, 1, o))
            events.append((o.end, 0, o))
        # Ends before starts at equal times: a place reached at t may be left at t.
        for time, kind, o in sorted(events, key=lambda e: (e[0], e[1])):
            t = transitions.get(o.transition)
            if t is None:
                continue
            if kind == 1:
                since = self._since.pop(t.source, None)
                if since is not None:
                    self.places[t.source].append((since, time))
                continue
            self.running[t.name].append((o.start, o.end))
            entering = [
                x.name for x in self.component.transitions_of(t.behaviour) if x.target == t.target
            ]
            ended = self._ended[(t.behaviour, t.target)]
            ended[t.name] = time
            if all(name in ended for name in entering):
                for name, at in ended.items():
                    self.docks[name].append((at, time))
                del self._ended[(t.behaviour, t.target)]
                self._since.setdefault(t.target, time)

    def close(self, horizon: float) -> None:
        for place, since in self._since.items():
            self.places[place].append((since, horizon))
        self._since.clear()


def _union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _minus(left: list[Interval], right: list[Interval]) -> list[Interval]:
    """Parts of `left` not covered by `right` (both unions)."""
    result: list[Interval] = []
    for a, b in left:
        cursor = a
        for c, d in right:
            if d <= cursor or c >= b:
                continue
            if c > cursor:
                result.append((cursor, c))
            cursor = max(cursor, d)
            if cursor >= b:
                break
        if cursor < b:
            result.append((cursor, b))
    return result


def check_trace(
    configuration: Configuration,
    trace: Trace,
    program: Program | None = None,
    *,
    tolerance: float = 0.005,
) -> list[str]:
    """Problems found in `trace` (empty when it follows the rules), in plain words."""
    problems: list[str] = []
    for e in trace.events:
        if e.status != "ok":
            problems.append(f'"{e.id}" on "{e.host}" ended with status {e.status}')
    occurrences = _occurrences(trace)
    by_instance: dict[str, list[_Occurrence]] = defaultdict(list)
    for o in occurrences:
        by_instance[o.instance].append(o)
    horizon = max([trace.makespan, *(o.end for o in occurrences)]) + 1.0
    timelines: dict[str, list[_Timeline]] = {}  # instance -> one per batch
    for inst in configuration.instances:
        batches = [name for name, _ in inst.parts()]
        for name in batches:
            timeline = _Timeline(inst.component, inst.marking)
            timeline.run(by_instance.get(name, []))
            timeline.close(horizon)
            timelines.setdefault(inst.name, []).append(timeline)
            problems.extend(_queue_problems(name, by_instance.get(name, []), tolerance))
        problems.extend(_rolling_problems(batches, by_instance, tolerance))
    changed: set[tuple[str, str]] = set()
    if program is not None:
        for ins in program:
            if isinstance(ins, Connect | Disconnect):
                changed.add((ins.user, ins.user_port))
    for link in configuration.links:
        if (link.user, link.user_port) in changed:
            continue
        users = timelines.get(link.user, [])
        providers = timelines.get(link.provider, [])
        if not users or not providers:
            continue
        use = users[0].component.use(link.user_port)
        provide = providers[0].component.provide(link.provider_port)
        if use is None or provide is None:
            continue
        in_use = _union(
            [
                *(i for user in users for p in use.places for i in user.places.get(p, ())),
                *(i for user in users for t in use.transitions for i in user.running.get(t, ())),
                *(i for user in users for t in use.transitions for i in user.docks.get(t, ())),
            ]
        )
        group = set(provide.places)
        internal = [
            t.name
            for t in providers[0].component.transitions
            if t.source in group and t.target in group
        ]
        active = _union(
            [
                *(i for pr in providers for p in group for i in pr.places.get(p, ())),
                *(i for pr in providers for t in internal for i in pr.running.get(t, ())),
                *(i for pr in providers for t in internal for i in pr.docks.get(t, ())),
            ]
        )
        for a, b in _minus(in_use, active):
            if b - a > tolerance:
                end = "the end" if b >= horizon else f"{b:.3f} s"
                begin = "the start" if a == -INF else f"{a:.3f} s"
                problems.append(
                    f'"{link.user}.{link.user_port}" is in use from {begin} to {end} while '
                    f'"{link.provider}.{link.provider_port}" is not provided'
                )
    return problems


def _rolling_problems(
    batches: list[str], by_instance: dict[str, list[_Occurrence]], tolerance: float
) -> list[str]:
    """Two batches of one instance never run at the same time."""
    problems = []
    spans = {name: _union((o.start, o.end) for o in by_instance.get(name, [])) for name in batches}
    for first, second in itertools.combinations(batches, 2):
        for a, b in spans[first]:
            for c, d in spans[second]:
                if min(b, d) - max(a, c) > tolerance:
                    problems.append(
                        f'batches "{first}" and "{second}" both run from {max(a, c):.3f} s to '
                        f"{min(b, d):.3f} s"
                    )
    return problems


def _queue_problems(instance: str, occurrences: list[_Occurrence], tolerance: float) -> list[str]:
    """Runs of different behaviours of one instance must not overlap (a queue)."""
    problems = []
    runs: list[tuple[str, float, float]] = []  # behaviour, first start, last end
    for o in sorted(occurrences, key=lambda o: o.start):
        if runs and runs[-1][0] == o.behaviour:
            b, s, e = runs[-1]
            runs[-1] = (b, s, max(e, o.end))
        else:
            runs.append((o.behaviour, o.start, o.end))
    for (b1, _, e1), (b2, s2, _) in itertools.pairwise(runs):
        if s2 < e1 - tolerance:
            problems.append(
                f'"{instance}" runs behaviour "{b2}" from {s2:.3f} s while "{b1}" runs until '
                f"{e1:.3f} s"
            )
    return problems
