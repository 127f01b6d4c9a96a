"""Calibration: `madeus.plan.calibrate(plan, trace)` and `madeus plan --durations-from TRACE`
replace declared durations by those a run measured, so that the next prediction learns from
experience."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.plan import PlanTransition, calibrate, measured_durations, schedule
from madeus.trace import Trace, TraceEvent

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assemblies" / "demo" / "demo.mad"

# db.install -> db.start provides `db`; app.start waits for it. Declared: 1 + 2 + 1 = 4 s.
PAIR = """\
component Db {
    places initiated*, installed, running
    transition install: initiated -> installed  ~1s
    transition start:   installed -> running    ~2s
    provide service db at running
}
component App {
    places initiated*, running
    transition start: initiated -> running  ~1s
    use service db for start
}
assembly pair {
    db  = Db
    app = App
    connect app.db -> db.db
}
"""


def event(tid: str, start: float, end: float, status: str = "ok", host: str = "h1") -> TraceEvent:
    return TraceEvent(tid, host, start, end, status)  # type: ignore[arg-type]


def trace_of(*events: TraceEvent, assembly: str = "pair") -> Trace:
    return Trace(assembly, "2026-11-22T00:00:00Z", max(e.end for e in events), events)


def chain() -> list[PlanTransition]:
    return [
        PlanTransition("db.install", "db", "install", "deploy", 1.0, ("h1", "h2")),
        PlanTransition("db.start", "db", "start", "deploy", 2.0, ("h1", "h2"), ("db.install",)),
        PlanTransition("app.start", "app", "start", "deploy", 1.0, ("h1",), ("db.start",)),
        PlanTransition("app.check", "app", "check", "deploy", 0.5, ("h1",), (), (("db.start",),)),
    ]


# --- the library ----------------------------------------------------------------------------


def test_measured_durations_span_all_hosts_of_a_transition() -> None:
    trace = trace_of(
        event("db.install", 0.0, 2.0, host="h1"),
        event("db.install", 0.1, 3.5, host="h2"),  # the transition ends when h2 ends
        event("db.start", 3.5, 4.0),
    )
    assert measured_durations(trace) == {"db.install": 3.5, "db.start": 0.5}


def test_measured_durations_ignore_jobs_that_did_not_end_ok() -> None:
    trace = trace_of(
        event("db.install", 0.0, 2.0),
        event("db.start", 2.0, 9.0, "failed"),
        event("app.start", 2.0, 3.0, "cancelled"),
        event("app.check", 0.0, 0.0, "skipped"),
    )
    assert measured_durations(trace) == {"db.install": 2.0}


def test_measured_durations_of_several_runs_are_medians() -> None:
    runs = [
        trace_of(event("db.install", 0.0, 1.0), event("db.start", 1.0, 2.0)),
        trace_of(event("db.install", 0.0, 3.0), event("db.start", 3.0, 3.5)),
        trace_of(event("db.install", 0.0, 2.0)),  # db.start failed to run here
    ]
    assert measured_durations(*runs) == {"db.install": 2.0, "db.start": 0.75}


def test_calibrate_replaces_measured_durations_and_predicts_again() -> None:
    plan = schedule("pair", chain())
    assert plan.predicted_makespan == 4.0
    trace = trace_of(
        event("db.install", 0.0, 3.0, host="h1"),
        event("db.install", 0.0, 2.0, host="h2"),
        event("db.start", 3.0, 3.5, host="h1"),
        event("db.start", 3.0, 3.5, host="h2"),
        event("app.check", 3.5, 7.5),
    )
    calibrated = calibrate(plan, trace)
    durations = {t.id: t.duration for t in calibrated.transitions}
    # app.start is absent from the trace: it keeps its declared second.
    assert durations == {"db.install": 3.0, "db.start": 0.5, "app.start": 1.0, "app.check": 4.0}
    assert calibrated.start == {
        "db.install": 0.0,
        "db.start": 3.0,
        "app.start": 3.5,
        "app.check": 3.5,
    }
    assert calibrated.predicted_makespan == 7.5
    assert calibrated.critical_path == ("db.install", "db.start", "app.check")
    # Dependencies and hosts are untouched; the plan JSON keeps its shape.
    assert [(t.id, t.after, t.after_any, t.hosts) for t in calibrated.transitions] == [
        (t.id, t.after, t.after_any, t.hosts) for t in chain()
    ]
    assert calibrated.to_json().keys() == plan.to_json().keys()


def test_calibrate_with_a_trace_of_nothing_known_changes_nothing() -> None:
    plan = schedule("pair", chain())
    calibrated = calibrate(plan, trace_of(event("other.t", 0.0, 9.0)))
    assert calibrated.to_json() == plan.to_json()


def test_calibrating_from_a_simulated_run_predicts_that_run(tmp_path: Path) -> None:
    """A simulated deployment sleeps each declared duration times the scale: calibrated on
    its trace, the plan predicts the scaled makespan, and the run's measured one."""
    from madeus.engine import deploy_sync

    result = deploy_sync(str(DEMO), simulate=True, time_scale=0.2)
    calibrated = calibrate(result.plan, result.trace)
    assert calibrated.predicted_makespan == pytest.approx(result.trace.makespan, rel=0.05)
    assert calibrated.predicted_makespan == pytest.approx(
        result.plan.predicted_makespan * 0.2, rel=0.1
    )


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    path = tmp_path / "pair.mad"
    path.write_text(PAIR)
    return path


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    trace = trace_of(
        event("db.install", 0.0, 3.0, host="localhost"),
        event("db.start", 3.0, 3.5, host="localhost"),
        event("app.start", 3.5, 5.0, host="localhost"),
    )
    path = tmp_path / "trace.json"
    trace.write(path)
    return path


def test_cli_text_shows_declared_durations_and_prediction_against_measure(
    pair: Path, trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", str(pair), "--durations-from", str(trace_file)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out == (
        "   transition  hosts      start  duration  end  declared\n"
        "*  db.install  localhost    0.0       3.0  3.0       1.0\n"
        "*  db.start    localhost    3.0       0.5  3.5       2.0\n"
        "*  app.start   localhost    3.5       1.5  5.0       1.0\n"
        "\n"
        "predicted makespan: 5.0 s\n"
        "sequential time:    5.0 s (the sum of the 3 durations)\n"
        "critical path (*):  db.install -> db.start -> app.start\n"
        "\n"
        f"calibrated from {trace_file}: 3 of 3 durations measured\n"
        "declared durations:   predicted makespan 4.0 s\n"
        "calibrated durations: predicted makespan 5.0 s\n"
        "measured makespan:    5.0 s (the trace's)\n"
        "calibrated prediction vs measured: +0.0%\n"
    )


def test_cli_text_counts_transitions_left_declared(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "partial.json"
    trace_of(event("db.install", 0.0, 2.0, host="localhost")).write(path)
    assert main(["plan", str(pair), "--durations-from", str(path)]) == 0
    tail = capsys.readouterr().out.split("\n\n")[-1]
    assert tail == (
        f"calibrated from {path}: 1 of 3 durations measured, 2 declared\n"
        "declared durations:   predicted makespan 4.0 s\n"
        "calibrated durations: predicted makespan 5.0 s\n"
        "measured makespan:    2.0 s (the trace's)\n"
        "calibrated prediction vs measured: +150.0%\n"
    )


def test_cli_several_traces_use_medians(
    pair: Path, trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.json"
    trace_of(
        event("db.install", 0.0, 1.0, host="localhost"),
        event("db.start", 1.0, 2.5, host="localhost"),
        event("app.start", 2.5, 3.0, host="localhost"),
    ).write(other)
    argv = ["plan", str(pair), "--durations-from", str(trace_file), "--durations-from", str(other)]
    assert main(argv) == 0
    tail = capsys.readouterr().out.split("\n\n")[-1]
    # Medians: install (3 + 1) / 2, start (0.5 + 1.5) / 2, app (1.5 + 0.5) / 2: 2 + 1 + 1 s.
    assert tail == (
        f"calibrated from {trace_file}, {other}: 3 of 3 durations measured (median of 2 runs)\n"
        "declared durations:   predicted makespan 4.0 s\n"
        "calibrated durations: predicted makespan 4.0 s\n"
        "measured makespan:    4.0 s (median of 5.0, 3.0)\n"
        "calibrated prediction vs measured: +0.0%\n"
    )


def test_cli_json_is_the_calibrated_plan_json(
    pair: Path, trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(pair), "--format", "json", "--durations-from", str(trace_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "assembly": "pair",
        "transitions": [
            {
                "id": "db.install",
                "instance": "db",
                "name": "install",
                "behaviour": "deploy",
                "duration": 3.0,
                "hosts": ["localhost"],
                "after": [],
                "after_any": [],
                "after_one_of": [],
            },
            {
                "id": "db.start",
                "instance": "db",
                "name": "start",
                "behaviour": "deploy",
                "duration": 0.5,
                "hosts": ["localhost"],
                "after": ["db.install"],
                "after_any": [],
                "after_one_of": [],
            },
            {
                "id": "app.start",
                "instance": "app",
                "name": "start",
                "behaviour": "deploy",
                "duration": 1.5,
                "hosts": ["localhost"],
                "after": ["db.start"],
                "after_any": [],
                "after_one_of": [],
            },
        ],
        "predicted_makespan": 5.0,
        "critical_path": ["db.install", "db.start", "app.start"],
    }


def test_cli_unreadable_trace(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert main(["plan", str(pair), "--durations-from", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"{missing}: error: cannot read the trace: No such file or directory\n"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"assembly": "pair"}')
    assert main(["plan", str(pair), "--durations-from", str(bad)]) == 1
    assert capsys.readouterr().err == (
        f"{bad}: error: cannot read the trace: {bad}: not a Madeus trace "
        "(missing or bad field 'started_at')\n"
    )


def test_cli_trace_of_another_assembly(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.json"
    trace_of(event("web.start", 0.0, 1.0), assembly="site").write(path)
    assert main(["plan", str(pair), "--durations-from", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: error: no transition of assembly pair ended ok in this trace "
        "(it is a trace of site)\n"
    )
