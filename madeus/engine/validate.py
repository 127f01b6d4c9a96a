"""Check a trace against a plan: did the run follow the deployment semantics (docs/semantics.md)?

A transition ends when its last host ends. Its *ready* time is the latest of: the ends of its
`after` transitions, and for each entry of alternatives (`after_one_of`, or an `after_any`
group) the earliest time one alternative was complete (0 when it waits for nothing). Then,
for every event:
- every transition ran exactly once on each of its hosts, with status ok (or skipped);
- it started at or after its ready time (never early);
- it started within `tolerance` seconds of its ready time (never needlessly late).

A resumed run's trace holds `skipped` events for the jobs an earlier run had ended (start =
end = when they became ready in this run). They count as done, their end counts for their
successors' ready times, and they are not checked for timing (they did not run here) nor
counted against the limits (they hold no slot).

Under a concurrency limit a job may have to wait for a free slot. The limits are the trace's own
(`Trace.limits`, recorded by the run), unless `max_parallel` or `host_limits` are given: then
the trace must respect the limits, and a job that started later than `ready + tolerance` must
have found its slot taken for the whole wait (checked at the ready time plus the tolerance, and
at every start/end in the wait).

With site agents (`Trace.agents`), what an agent runs learns that it may start only when the
news reaches it: the start of the run after the agent's one-way delay, the end of a transition
another party ran after the controller relayed it (the sum of both parties' delays; the
controller's is 0). "Never early" is checked against the ready time itself, "never needlessly
late" against the time the news arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from madeus.plan import Plan
from madeus.trace import Trace, TraceEvent

# Float rounding of times written with six decimals.
_EPSILON = 1e-6
_DONE = ("ok", "skipped")


class _Interval(NamedTuple):
    start: float
    end: float
    host: str


def validate(
    trace: Trace,
    plan: Plan,
    tolerance: float = 0.05,
    *,
    max_parallel: int | None = None,
    host_limits: Mapping[str, int] | None = None,
) -> list[str]:
    """Every problem found, as sentences; an empty list means the trace is valid."""
    if max_parallel is None and host_limits is None and trace.limits is not None:
        max_parallel, host_limits = trace.limits.max_parallel, trace.limits.hosts
    problems: list[str] = []
    by_key: dict[tuple[str, str], list[TraceEvent]] = {}
    for event in trace.events:
        by_key.setdefault((event.id, event.host), []).append(event)
        if event.end + _EPSILON < event.start:
            problems.append(f"{event.id} @ {event.host} ends ({event.end:.6f}) before it starts")

    known = {(t.id, h) for t in plan.transitions for h in t.hosts}
    for (tid, host), events in by_key.items():
        if (tid, host) not in known:
            problems.append(f"{tid} @ {host} is not in the plan")
        elif len(events) > 1:
            problems.append(f"{tid} @ {host} ran {len(events)} times")

    end: dict[str, float] = {}
    ready: dict[str, float] = {}
    known_at: dict[str, float] = {}  # when the party running it could know it was ready
    delay = _delays(trace)
    party = {t.id: delay.get(t.instance, ("", 0.0)) for t in plan.transitions}
    # Plan order is topological (predicted start order, ties in end order).
    for t in plan.transitions:
        here = party[t.id]
        at, news = 0.0, here[1]
        for dep in t.after:
            at = max(at, end.get(dep, float("inf")))
            news = max(news, _arrives(dep, here, party, end))
        for entry in t.alternatives():
            complete = (max((end.get(d, float("inf")) for d in alt), default=0.0) for alt in entry)
            at = max(at, min(complete, default=0.0))
            heard = (
                max((_arrives(d, here, party, end) for d in alt), default=0.0) for alt in entry
            )
            news = max(news, min(heard, default=0.0))
        ready[t.id] = at
        known_at[t.id] = max(at, news)
        ends: list[float] = []
        for host in t.hosts:
            events = by_key.get((t.id, host), [])
            done = [e for e in events if e.status in _DONE]
            if not events:
                problems.append(f"{t.id} @ {host} never ran")
            elif not done:
                problems.append(f"{t.id} @ {host} did not succeed (status {events[0].status})")
            ends.append(done[0].end if done else float("inf"))
        end[t.id] = max(ends, default=at)

    limited = max_parallel is not None or bool(host_limits)
    intervals = [
        _Interval(e.start, e.end, e.host)
        for e in trace.events
        if e.end > e.start and e.status != "skipped"
    ]
    if limited:
        problems.extend(_limit_problems(intervals, max_parallel, host_limits or {}))
    for t in plan.transitions:
        at, news = ready[t.id], known_at[t.id]
        if at == float("inf"):
            continue  # a dependency never ran: already reported
        for host in t.hosts:
            for event in by_key.get((t.id, host), []):
                if event.status == "skipped":
                    continue
                if event.start + _EPSILON < at:
                    problems.append(
                        f"{t.id} @ {host} started at {event.start:.6f}, before its dependencies "
                        f"ended at {at:.6f}"
                    )
                elif event.start - news > tolerance and not (
                    limited
                    and _saturated(intervals, event, news, tolerance, max_parallel, host_limits)
                ):
                    note = "" if news == at else f" (its agent heard of it at {news:.6f})"
                    problems.append(
                        f"{t.id} @ {host} started at {event.start:.6f}, "
                        f"{event.start - news:.6f} s after it was ready at {at:.6f}{note} "
                        f"(tolerance {tolerance:g} s)"
                    )
    return problems


def _arrives(
    dep: str,
    here: tuple[str, float],
    party: Mapping[str, tuple[str, float]],
    end: Mapping[str, float],
) -> float:
    """When the party `here` can know that `dep` ended."""
    there = party.get(dep, ("", 0.0))
    done = end.get(dep, float("inf"))
    return done if there[0] == here[0] else done + there[1] + here[1]


def _delays(trace: Trace) -> dict[str, tuple[str, float]]:
    """Instance -> (its agent's site, the agent's one-way delay); absent: the controller."""
    return {i: (a.site, a.delay) for a in trace.agents for i in a.instances}


def _running(intervals: list[_Interval], at: float, host: str | None, slack: float = 0.0) -> int:
    """Jobs holding a slot at `at`: started by `at + slack`, not yet ended."""
    return sum(
        1
        for iv in intervals
        if iv.start <= at + slack + _EPSILON
        and at < iv.end - _EPSILON
        and (host is None or iv.host == host)
    )


def _saturated(
    intervals: list[_Interval],
    event: TraceEvent,
    ready: float,
    tolerance: float,
    max_parallel: int | None,
    host_limits: Mapping[str, int] | None,
) -> bool:
    """Was a limit binding for `event` all the time it waited, save the last `tolerance`?

    The count of running jobs only drops when a job ends, so the moments to check are the ready
    time and every end during the wait. A job that took a freed slot within `tolerance` of the
    moment counts as holding it (the engine starts jobs one after the other).
    """
    host_limit = (host_limits or {}).get(event.host)
    others = [iv for iv in intervals if iv != (event.start, event.end, event.host)]
    latest = event.start - tolerance
    moments = [ready, *(iv.end for iv in others if ready < iv.end < latest)]
    for at in moments:
        full = max_parallel is not None and _running(others, at, None, tolerance) >= max_parallel
        if not full and host_limit is not None:
            full = _running(others, at, event.host, tolerance) >= host_limit
        if not full:
            return False
    return True


def _limit_problems(
    intervals: list[_Interval], max_parallel: int | None, host_limits: Mapping[str, int]
) -> list[str]:
    problems: list[str] = []
    if max_parallel is not None:
        for at in sorted(iv.start for iv in intervals):
            running = _running(intervals, at, None)
            if running > max_parallel:
                problems.append(f"{running} jobs ran at {at:.6f} (max parallel {max_parallel})")
                break
    for host, limit in host_limits.items():
        for at in (iv.start for iv in intervals if iv.host == host):
            running = _running(intervals, at, host)
            if running > limit:
                problems.append(f"{running} jobs ran on {host} at {at:.6f} (limit {limit})")
                break
    return problems
