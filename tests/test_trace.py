"""Traces: the JSON format, and the validator catching traces that break the semantics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.engine.validate import validate
from madeus.plan import Plan, PlanTransition, schedule
from madeus.trace import Trace, TraceEvent, load

# db.pull and db.config in parallel, then db.start; web.install from the start; web.start after
# web.install and after one of db.start / db.alt (a provide group of two places).
PLAN = schedule(
    "small",
    [
        PlanTransition("db.pull", "db", "pull", "deploy", 3.0, ("h1",)),
        PlanTransition("db.config", "db", "config", "deploy", 1.0, ("h1",)),
        PlanTransition(
            "db.start", "db", "start", "deploy", 2.0, ("h1",), after=("db.pull", "db.config")
        ),
        PlanTransition(
            "db.alt", "db", "alt", "deploy", 4.0, ("h1",), after=("db.pull", "db.config")
        ),
        PlanTransition("web.install", "web", "install", "deploy", 1.0, ("w1", "w2")),
        PlanTransition(
            "web.start",
            "web",
            "start",
            "deploy",
            1.0,
            ("w1", "w2"),
            after=("web.install",),
            after_any=(("db.alt", "db.start"),),
        ),
    ],
)


def ev(tid: str, host: str, start: float, end: float, status: str = "ok") -> TraceEvent:
    return TraceEvent(tid, host, start, end, status)  # type: ignore[arg-type]


GOOD = Trace(
    "small",
    "2026-11-21T10:00:00Z",
    6.0,
    (
        ev("db.pull", "h1", 0.0, 3.0),
        ev("db.config", "h1", 0.001, 1.0),
        ev("web.install", "w1", 0.002, 1.0),
        ev("web.install", "w2", 0.002, 1.5),
        ev("db.start", "h1", 3.001, 5.0),
        ev("db.alt", "h1", 3.002, 7.0),
        ev("web.start", "w1", 5.001, 6.0),
        ev("web.start", "w2", 5.002, 6.0),
    ),
)


def replace(trace: Trace, tid: str, host: str, **changes: object) -> Trace:
    events = tuple(
        dataclasses.replace(e, **changes) if (e.id, e.host) == (tid, host) else e  # type: ignore[arg-type]
        for e in trace.events
    )
    return dataclasses.replace(trace, events=events)


def test_good_trace_is_valid() -> None:
    assert validate(GOOD, PLAN) == []


def test_json_round_trip_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    GOOD.write(path)
    data = json.loads(path.read_text())
    assert set(data) == {"assembly", "started_at", "makespan", "events"}
    assert data["events"][0] == {
        "id": "db.pull",
        "host": "h1",
        "start": 0.0,
        "end": 3.0,
        "status": "ok",
        "behaviour": "deploy",
        "attempts": 1,
    }
    assert load(path) == GOOD


def test_load_rejects_what_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"assembly": "a"}')
    with pytest.raises(ValueError, match="not a Madeus trace"):
        load(path)
    path.write_text(
        '{"assembly": "a", "started_at": "", "makespan": 0, "events": '
        '[{"id": "a", "host": "h", "start": 0, "end": 0, "status": "great"}]}'
    )
    with pytest.raises(ValueError, match="unknown status 'great'"):
        load(path)


def test_repr_stays_short() -> None:
    assert repr(GOOD) == (
        "Trace(assembly='small', started_at='2026-11-21T10:00:00Z', makespan=6.0, "
        "events=<8 events>)"
    )


def test_catches_a_start_before_a_dependency_ended() -> None:
    broken = replace(GOOD, "db.start", "h1", start=2.5)
    assert validate(broken, PLAN) == [
        "db.start @ h1 started at 2.500000, before its dependencies ended at 3.000000"
    ]


def test_a_transition_ends_when_its_last_host_ends() -> None:
    # web.install ended on w2 at 1.5: web.start may not start at 1.2 on w1 ...
    early = replace(GOOD, "web.start", "w1", start=1.2)
    assert validate(early, PLAN, tolerance=10) == [
        "web.start @ w1 started at 1.200000, before its dependencies ended at 5.000000"
    ]


def test_after_any_needs_only_one_of_the_group() -> None:
    # db.alt ends at 7, but db.start (5) is enough for web.start.
    assert validate(GOOD, PLAN) == []
    late = replace(GOOD, "db.start", "h1", end=8.0)
    late = replace(late, "web.start", "w1", start=7.001, end=8.0)
    late = replace(late, "web.start", "w2", start=7.002, end=8.0)
    assert validate(late, PLAN) == []


def test_catches_a_needless_wait() -> None:
    lazy = replace(GOOD, "web.start", "w2", start=5.3)
    assert validate(lazy, PLAN) == [
        "web.start @ w2 started at 5.300000, 0.300000 s after it was ready at 5.000000 "
        "(tolerance 0.05 s)"
    ]
    assert validate(lazy, PLAN, tolerance=0.5) == []


def test_catches_a_missing_event() -> None:
    missing = dataclasses.replace(
        GOOD, events=tuple(e for e in GOOD.events if (e.id, e.host) != ("web.install", "w2"))
    )
    assert validate(missing, PLAN) == ["web.install @ w2 never ran"]


def test_catches_duplicates_failures_and_strangers() -> None:
    doubled = dataclasses.replace(
        GOOD, events=(*GOOD.events, ev("db.pull", "h1", 0.0, 3.0), ev("x.y", "h1", 0.0, 1.0))
    )
    assert validate(doubled, PLAN) == ["db.pull @ h1 ran 2 times", "x.y @ h1 is not in the plan"]
    failed = replace(GOOD, "db.alt", "h1", status="failed")
    assert validate(failed, PLAN) == ["db.alt @ h1 did not succeed (status failed)"]


def test_limits_excuse_waits_only_when_saturated() -> None:
    plan = schedule(
        "three",
        [PlanTransition(f"c{i}.go", f"c{i}", "go", "deploy", 1.0, ("h",)) for i in range(3)],
    )
    serial = Trace(
        "three",
        "2026-11-21T10:00:00Z",
        3.0,
        (
            ev("c0.go", "h", 0.0, 1.0),
            ev("c1.go", "h", 1.001, 2.0),
            ev("c2.go", "h", 2.001, 3.0),
        ),
    )
    assert validate(serial, plan, max_parallel=1) == []
    assert len(validate(serial, plan)) == 2  # without the limit, c1 and c2 waited
    assert validate(serial, plan, max_parallel=2) == [
        "c1.go @ h started at 1.001000, 1.001000 s after it was ready at 0.000000 "
        "(tolerance 0.05 s)",
        "c2.go @ h started at 2.001000, 2.001000 s after it was ready at 0.000000 "
        "(tolerance 0.05 s)",
    ]
    assert validate(serial, plan, host_limits={"h": 1}) == []
    crowded = dataclasses.replace(
        serial,
        events=(
            ev("c0.go", "h", 0.0, 1.0),
            ev("c1.go", "h", 0.0, 1.0),
            ev("c2.go", "h", 1.0, 2.0),
        ),
    )
    assert validate(crowded, plan, max_parallel=1) == ["2 jobs ran at 0.000000 (max parallel 1)"]


def _write(tmp_path: Path, trace: Trace, plan: Plan) -> tuple[str, str]:
    trace_path, plan_path = tmp_path / "trace.json", tmp_path / "plan.json"
    trace.write(trace_path)
    plan_path.write_text(json.dumps(plan.to_json()))
    return str(trace_path), str(plan_path)


def test_cli_trace_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace_path, plan_path = _write(tmp_path, GOOD, PLAN)
    assert main(["trace", "check", trace_path, "--plan", plan_path]) == 0
    assert capsys.readouterr().out == f"{trace_path}: valid (8 events, makespan 6.000 s)\n"
    bad = replace(GOOD, "db.start", "h1", start=2.5)
    trace_path, plan_path = _write(tmp_path, bad, PLAN)
    assert main(["trace", "check", trace_path, "--plan", plan_path]) == 1
    assert capsys.readouterr().err == (
        f"{trace_path}: error: db.start @ h1 started at 2.500000, before its dependencies "
        "ended at 3.000000\n1 problem\n"
    )


def test_cli_trace_check_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(PLAN.to_json()))
    missing = tmp_path / "nope.json"
    assert main(["trace", "check", str(missing), "--plan", str(plan_path)]) == 1
    assert capsys.readouterr().err.startswith(f"madeus: error: cannot read trace {missing}: ")
