"""Gantt charts: well-formed SVG, one bar per event, the critical path, self-contained HTML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from madeus.plan import PlanTransition, schedule
from madeus.trace import Trace, TraceEvent
from madeus.viz.gantt import COLOURS, critical_events, gantt_html, gantt_svg, write_gantt

SVG = "{http://www.w3.org/2000/svg}"
PLAN = schedule(
    "demo",
    [
        PlanTransition("db.pull", "db", "pull", "deploy", 3.0, ("h1",)),
        PlanTransition("db.config", "db", "config", "deploy", 1.0, ("h1",)),
        PlanTransition(
            "db.start", "db", "start", "deploy", 2.0, ("h1",), after=("db.pull", "db.config")
        ),
        PlanTransition("web.install", "web", "install", "deploy", 1.0, ("w1", "w2")),
        PlanTransition(
            "web.start",
            "web",
            "start",
            "deploy",
            1.0,
            ("w1", "w2"),
            after=("web.install", "db.start"),
        ),
    ],
)
TRACE = Trace(
    "demo",
    "2026-11-21T10:00:00Z",
    0.062,
    (
        TraceEvent("db.pull", "h1", 0.0, 0.031, "ok"),
        TraceEvent("db.config", "h1", 0.0, 0.010, "ok"),
        TraceEvent("web.install", "w1", 0.0, 0.010, "ok"),
        TraceEvent("web.install", "w2", 0.0, 0.012, "ok", attempts=2),
        TraceEvent("db.start", "h1", 0.031, 0.051, "ok"),
        TraceEvent("web.start", "w1", 0.051, 0.062, "ok"),
        TraceEvent("web.start", "w2", 0.051, 0.055, "cancelled"),
    ),
)


def bars(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def test_svg_has_one_bar_per_event_with_times_on_hover() -> None:
    svg = gantt_svg(TRACE, PLAN, time_scale=0.01)
    found = bars(svg)
    assert len(found) == len(TRACE.events)
    titles = [b.findtext(f"{SVG}title") for b in found]
    assert (
        "web.install @ w2: 0.000 → 0.012 s (0.012 s), ok; 2 attempts; predicted 0.000 → "
        "0.010 s" in titles
    )
    predicted = [r for r in ET.fromstring(svg).iter(f"{SVG}rect") if r.get("class") == "pred"]
    assert len(predicted) == len(TRACE.events) + 1  # one per bar, one in the legend


def test_rows_are_grouped_by_instance_and_host() -> None:
    root = ET.fromstring(gantt_svg(TRACE, PLAN))
    groups = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "group"]
    assert groups == ["db @ h1", "web @ w1", "web @ w2"]


def test_critical_path_is_highlighted() -> None:
    assert critical_events(TRACE, PLAN) == {
        ("db.pull", "h1"),
        ("db.start", "h1"),
        ("web.start", "w1"),
    }
    colours = {
        b.findtext(f"{SVG}title", "").split(":")[0]: b.get("fill")
        for b in bars(gantt_svg(TRACE, PLAN))
    }
    assert colours["db.pull @ h1"] == COLOURS["critical"]
    assert colours["db.config @ h1"] == COLOURS["ok"]
    assert colours["web.start @ w2"] == COLOURS["cancelled"]


def test_time_axis_has_ticks() -> None:
    root = ET.fromstring(gantt_svg(TRACE, PLAN, time_scale=0.01))
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks[:12] == [
        "0",
        "0",
        "0.01",
        "0.01",
        "0.02",
        "0.02",
        "0.03",
        "0.03",
        "0.04",
        "0.04",
        "0.05",
        "0.05",
    ]


def test_html_is_self_contained(tmp_path: Path) -> None:
    page = gantt_html(TRACE, PLAN, time_scale=0.01)
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert not re.search(r"(src|href)=", page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_write_by_suffix(tmp_path: Path) -> None:
    write_gantt(tmp_path / "g.svg", TRACE, PLAN)
    write_gantt(tmp_path / "g.html", TRACE)
    ET.fromstring((tmp_path / "g.svg").read_text())
    assert (tmp_path / "g.html").read_text().startswith("<!doctype html>")
    with pytest.raises(ValueError, match=r"use \.svg or \.html"):
        write_gantt(tmp_path / "g.png", TRACE)


def test_empty_trace_still_draws() -> None:
    empty = Trace("none", "2026-11-21T10:00:00Z", 0.0, ())
    assert bars(gantt_svg(empty)) == []


def test_jobs_that_never_started_show_their_predicted_bar() -> None:
    stopped = Trace("demo", TRACE.started_at, 0.031, TRACE.events[:3])
    root = ET.fromstring(gantt_svg(stopped, PLAN, time_scale=0.01))
    never = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "never"]
    # db.start on h1, web.start on w1, then web @ w2 (nothing ran there: the last group)
    assert never == ["start", "start", "install", "start"]
    hints = [r.findtext(f"{SVG}title") for r in root.iter(f"{SVG}rect") if r.get("class") == "pred"]
    assert "db.start @ h1: never started; predicted 0.030 → 0.050 s" in hints
