"""Gantt charts of a run: one bar per transition and host, predicted and actual side by side.

Rows are grouped by instance and host (a header row per group, groups in order of their first
start); each row holds the actual bar (coloured by status) with the predicted bar drawn thin
underneath, so the gap between plan and reality is visible at a glance. The critical path of
the run (walking back from the last end through the dependency that made each transition
ready) is drawn in a colour of its own. Hovering a bar shows its times (SVG `<title>`).

`write_gantt(path, trace, plan)` writes `.svg` (standalone, CSS inside) or `.html` (the same SVG
inline, with a short summary; no external assets). Plain string building: no dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

from madeus.plan import Plan
from madeus.trace import Trace, TraceEvent

ROW = 18  # px per row
BAR = 11  # actual bar height
PRED = 3  # predicted bar height
CHART_WIDTH = 960
PAD = 12
CHAR = 6.6  # approximate width of one character at 11px sans-serif
COLOURS = {
    "ok": "#4c78a8",
    "critical": "#e8590c",
    "failed": "#d62728",
    "timeout": "#9467bd",
    "cancelled": "#a0a0a0",
    "skipped": "#d0d0d0",
    "predicted": "#555555",
}
# A start later than this after its dependencies: it waited for a slot (concurrency limit).
_SLOT_WAIT = 0.005
_STYLE = """
text { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 11px;
       fill: #222; }
.group { font-weight: bold; }
.never { fill: #999; font-style: italic; }
.tick { fill: #666; font-size: 10px; }
.grid { stroke: #e4e4e4; stroke-width: 1; }
.axis { stroke: #888; stroke-width: 1; }
.band { fill: #f5f7fa; }
.bar:hover { stroke: #000; stroke-width: 1.5; }
.pred { fill: #555; opacity: 0.55; }
.mark { stroke-width: 1.2; stroke-dasharray: 4 3; }
"""


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    event: TraceEvent | None  # None: a group header, or a job that never started
    group: int
    missing: tuple[str, str] | None = None  # (transition, host) planned but never started


def critical_events(trace: Trace, plan: Plan) -> set[tuple[str, str]]:
    """(transition, host) pairs of the run's critical path: from the event that ended last,
    back through what made each one start: the dependency whose end made it ready or, when it
    waited longer than that for a free slot (a concurrency limit), the job whose end freed it."""
    ends: dict[str, TraceEvent] = {}
    for event in trace.events:
        best = ends.get(event.id)
        if best is None or event.end > best.end:
            ends[event.id] = event
    if not ends:
        return set()
    deps = {t.id: t for t in plan.transitions}
    by_end = sorted(trace.events, key=lambda e: e.end)
    path: set[tuple[str, str]] = set()
    current: TraceEvent | None = max(ends.values(), key=lambda e: e.end)
    while current is not None and (current.id, current.host) not in path:
        path.add((current.id, current.host))
        t = deps.get(current.id)
        if t is None:
            break
        candidates = [ends[a] for a in t.after if a in ends]
        for entry in t.alternatives():
            # The alternative complete first: its last member to end.
            complete = [
                max((ends[a] for a in alternative), key=lambda e: e.end)
                for alternative in entry
                if alternative and all(a in ends for a in alternative)
            ]
            if complete:
                candidates.append(min(complete, key=lambda e: e.end))
        cause = max(candidates, key=lambda e: e.end, default=None)
        ready = cause.end if cause is not None else 0.0
        if current.start - ready > _SLOT_WAIT:
            freed = [e for e in by_end if e.end <= current.start + 1e-6 and e is not current]
            cause = freed[-1] if freed else cause
        current = cause
    return path


def _nice_step(span: float, target: int = 10) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def _fmt(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f}"
    if seconds >= 10:
        return f"{seconds:.1f}"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") if seconds else "0"


def _rows(trace: Trace, plan: Plan | None) -> list[_Row]:
    groups: dict[tuple[str, str], list[TraceEvent]] = {}
    for event in trace.events:
        groups.setdefault((_instance(event.id), event.host), []).append(event)
    # Planned jobs that never started (the run failed first): listed last in their group.
    missing: dict[tuple[str, str], list[str]] = {}
    if plan is not None:
        ran = {(e.id, e.host) for e in trace.events}
        for t in plan.transitions:
            for host in t.hosts:
                if (t.id, host) not in ran:
                    missing.setdefault((_instance(t.id), host), []).append(t.id)

    def first_start(key: tuple[str, str]) -> float:
        return min((e.start for e in groups.get(key, ())), default=math.inf)

    keys = sorted({*groups, *missing}, key=lambda k: (first_start(k), k))
    rows: list[_Row] = []
    for index, (instance, host) in enumerate(keys):
        rows.append(_Row(f"{instance} @ {host}", None, index))
        for event in sorted(groups.get((instance, host), ()), key=lambda e: (e.start, e.id)):
            rows.append(_Row(event.id.rpartition(".")[2], event, index))
        for tid in missing.get((instance, host), ()):
            rows.append(_Row(tid.rpartition(".")[2], None, index, (tid, host)))
    return rows


def _instance(tid: str) -> str:
    return tid.rpartition(".")[0] or tid


def gantt_svg(
    trace: Trace, plan: Plan | None = None, *, time_scale: float = 1.0, title: str | None = None
) -> str:
    """The chart as a standalone SVG document. `time_scale` maps the plan's predicted times to
    the run's clock (the `--time-scale` of a simulated run)."""
    rows = _rows(trace, plan)
    predicted: Mapping[str, float] = plan.start if plan is not None else {}
    durations = {t.id: t.duration for t in plan.transitions} if plan is not None else {}
    critical = critical_events(trace, plan) if plan is not None else set()
    horizon = max(
        [trace.makespan, *(e.end for e in trace.events)]
        + [(predicted[k] + durations[k]) * time_scale for k in predicted if k in durations]
    )
    horizon = horizon if horizon > 0 else 1.0
    label_width = max((len(r.label) for r in rows), default=10) * CHAR + 2 * PAD + 8
    left = label_width
    top = 70
    width = left + CHART_WIDTH + PAD * 3
    height = top + len(rows) * ROW + 40

    def x(t: float) -> float:
        return left + CHART_WIDTH * t / horizon

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}">',
        f"<style>{_STYLE}</style>",
        f'<rect width="{width:.0f}" height="{height}" fill="#fff"/>',
    ]
    heading = title if title is not None else _title(trace, plan, time_scale)
    out.append(
        f'<text x="{PAD}" y="18" style="font-size:14px;font-weight:bold">{escape(heading)}</text>'
    )
    out.extend(_legend(PAD, 40, plan is not None))

    # Alternate bands per group, grid lines and ticks.
    for index, row in enumerate(rows):
        if row.group % 2 == 1:
            y = top + index * ROW
            out.append(f'<rect class="band" x="0" y="{y}" width="{width:.0f}" height="{ROW}"/>')
    step = _nice_step(horizon)
    bottom = top + len(rows) * ROW
    tick = 0.0
    while tick <= horizon + 1e-9:
        tx = x(tick)
        out.append(f'<line class="grid" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}"/>')
        for ty in (top - 8, bottom + 14):
            out.append(
                f'<text class="tick" x="{tx:.1f}" y="{ty}" text-anchor="middle">{_fmt(tick)}</text>'
            )
        tick += step
    out.append(
        f'<line class="axis" x1="{left}" y1="{bottom}" x2="{x(horizon):.1f}" y2="{bottom}"/>'
    )
    out.append(
        f'<text class="tick" x="{left + CHART_WIDTH / 2:.0f}" y="{bottom + 28}" '
        'text-anchor="middle">seconds since the start of the run</text>'
    )
    # The run's end and the predicted end, as dashed lines across the chart.
    marks = [(trace.makespan, "end", COLOURS["ok"])]
    if plan is not None:
        marks.append((plan.predicted_makespan * time_scale, "predicted end", COLOURS["predicted"]))
    for at, text, colour in marks:
        mx = x(at)
        out.append(
            f'<line class="mark" x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" '
            f'y2="{bottom}" stroke="{colour}"><title>{text}: {at:.3f} s</title></line>'
        )

    for index, row in enumerate(rows):
        y = top + index * ROW
        if row.missing is not None:
            tid, host = row.missing
            out.append(
                f'<text class="never" x="{PAD + 12}" y="{y + 12}">{escape(row.label)}</text>'
            )
            if tid in predicted:
                p_start = predicted[tid] * time_scale
                p_end = p_start + durations.get(tid, 0.0) * time_scale
                px = x(p_start)
                pw = max(x(p_end) - px, 1.0)
                never = f"{tid} @ {host}: never started; predicted {p_start:.3f} → {p_end:.3f} s"
                out.append(
                    f'<rect class="pred" x="{px:.1f}" y="{y + 2 + BAR + 1}" width="{pw:.1f}" '
                    f'height="{PRED}"><title>{escape(never)}</title></rect>'
                )
            continue
        if row.event is None:
            out.append(f'<text class="group" x="{PAD}" y="{y + 13}">{escape(row.label)}</text>')
            continue
        event = row.event
        out.append(f'<text x="{PAD + 12}" y="{y + 12}">{escape(row.label)}</text>')
        hint = [
            f"{event.id} @ {event.host}: {event.start:.3f} → {event.end:.3f} s "
            f"({event.duration:.3f} s), {event.status}"
        ]
        if event.attempts > 1:
            hint.append(f"{event.attempts} attempts")
        if event.id in predicted:
            p_start = predicted[event.id] * time_scale
            p_end = p_start + durations.get(event.id, 0.0) * time_scale
            hint.append(f"predicted {p_start:.3f} → {p_end:.3f} s")
            px = x(p_start)
            pw = max(x(p_end) - px, 1.0)
            out.append(
                f'<rect class="pred" x="{px:.1f}" y="{y + 2 + BAR + 1}" '
                f'width="{pw:.1f}" height="{PRED}"/>'
            )
        critical_bar = (event.id, event.host) in critical and event.status == "ok"
        if critical_bar:
            hint.append("critical path")
        colour = COLOURS["critical"] if critical_bar else COLOURS.get(event.status, "#888")
        bx = x(event.start)
        bw = max(x(event.end) - bx, 2.0)
        out.append(
            f'<rect class="bar" x="{bx:.1f}" y="{y + 2}" width="{bw:.1f}" height="{BAR}" '
            f'rx="2" fill="{colour}"><title>{escape("; ".join(hint))}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(trace: Trace, plan: Plan | None, time_scale: float) -> str:
    text = f"{trace.assembly}: makespan {trace.makespan:.3f} s"
    if plan is not None:
        predicted = plan.predicted_makespan * time_scale
        text += f" (predicted {predicted:.3f} s"
        if predicted > 0:
            text += f", ratio {trace.makespan / predicted:.3f}"
        text += ")"
    return text + f", {len(trace.events)} bars, started {trace.started_at}"


def _legend(x0: float, y: float, with_plan: bool) -> Iterable[str]:
    items = [
        ("ok", "ran"),
        ("critical", "critical path"),
        ("failed", "failed"),
        ("timeout", "timed out"),
        ("cancelled", "cancelled"),
    ]
    x = x0
    for key, text in items:
        yield (
            f'<rect x="{x}" y="{y - 9}" width="14" height="{BAR - 1}" rx="2" '
            f'fill="{COLOURS[key]}"/>'
        )
        yield f'<text x="{x + 19}" y="{y}">{text}</text>'
        x += 30 + len(text) * 5.6
    marks = [("end", COLOURS["ok"])]
    if with_plan:
        yield f'<rect class="pred" x="{x}" y="{y - 4}" width="14" height="{PRED}"/>'
        yield f'<text x="{x + 19}" y="{y}">predicted</text>'
        x += 30 + len("predicted") * 5.6
        marks.append(("predicted end", COLOURS["predicted"]))
    for text, colour in marks:
        yield (
            f'<line class="mark" x1="{x}" y1="{y - 3}" x2="{x + 14}" y2="{y - 3}" '
            f'stroke="{colour}"/>'
        )
        yield f'<text x="{x + 19}" y="{y}">{text}</text>'
        x += 30 + len(text) * 5.6


def gantt_html(trace: Trace, plan: Plan | None = None, *, time_scale: float = 1.0) -> str:
    """A self-contained page: the SVG inline, a one-line summary, no external assets."""
    svg = gantt_svg(trace, plan, time_scale=time_scale)
    summary = escape(_title(trace, plan, time_scale))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(trace.assembly)}: Gantt chart</title>"
        "<style>body{margin:16px;font-family:-apple-system,'Segoe UI',Helvetica,Arial,"
        "sans-serif;color:#222} p{font-size:13px;color:#555} svg{display:block}</style>"
        f"</head><body>\n<p>{summary}. Hover a bar for its times; thin grey bars are the "
        f"predicted schedule.</p>\n{svg}</body></html>\n"
    )


def write_gantt(
    path: str | Path, trace: Trace, plan: Plan | None = None, *, time_scale: float = 1.0
) -> None:
    """Write `.svg` or `.html` (by the file's suffix); ValueError for anything else."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".svg":
        text = gantt_svg(trace, plan, time_scale=time_scale)
    elif suffix in (".html", ".htm"):
        text = gantt_html(trace, plan, time_scale=time_scale)
    else:
        raise ValueError(
            f"cannot draw a Gantt chart as {suffix or 'a file without suffix'}: use .svg or .html"
        )
    target.write_text(text, encoding="utf-8")
