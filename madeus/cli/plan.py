"""`madeus plan FILE [-i INVENTORY] [--format text|json] [-o OUT] [--durations-from TRACE]`:
the transition-level dependency graph, durations, predicted makespan and critical path.

`--format json` prints exactly the plan JSON of docs/plan.md (`Plan.to_json`); `text` (the
default) a table in predicted start order, then the makespan, the sequential time and the
critical path. `--durations-from TRACE.json` calibrates the plan with the durations measured in
a run (`madeus.plan.calibrate`): the JSON is the calibrated plan; the text also shows each
declared duration and compares the calibrated prediction with the trace's makespan.
`--reconfigure SCRIPT.py` predicts a reconfiguration program instead (same table and JSON;
`madeus.cli.reconfigure.run_plan`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madeus.cli._common import (
    EXIT_OK,
    Loaded,
    add_file_arg,
    add_habit_args,
    add_inventory_arg,
    add_state_arg,
    reports_errors,
    state_base,
)
from madeus.errors import Diagnostic, MadeusError
from madeus.source import Span

if TYPE_CHECKING:
    from madeus.plan import Plan
    from madeus.state import Changes, Record
    from madeus.trace import Trace


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="predict the makespan and the critical path",
        description="Compute each transition's dependencies (`after`: all of them; "
        "`after_one_of`: for each, all of one of its alternatives), predict start times "
        "from the declared durations with unlimited parallelism, and the critical path.",
    )
    add_file_arg(parser)
    add_inventory_arg(parser)
    add_habit_args(parser, runs=False)
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a table for people (default); json: the plan JSON (docs/plan.md)",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write to OUT instead of standard output"
    )
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there is nothing to change, 2 when there are changes (1: errors)",
    )
    add_state_arg(parser)
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="compare with the state of the simulated runs (`deploy --simulate`) instead",
    )
    parser.add_argument(
        "--reconfigure",
        metavar="SCRIPT.py",
        help="predict a reconfiguration program instead (SCRIPT.py defines reconfigure(r)): "
        "its schedule, makespan and critical path, from the configuration the journal records",
    )
    parser.add_argument(
        "--durations-from",
        metavar="TRACE",
        action="append",
        help="calibrate: use the durations measured in this trace (`madeus deploy --trace`; "
        "per transition, from its first start to its last end over its hosts) instead of the "
        "declared ones; transitions absent from the trace keep theirs. Repeat it to use the "
        "median over several runs",
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    if getattr(args, "reconfigure", None) is not None:
        from madeus.cli.reconfigure import run_plan

        return run_plan(args)
    from madeus.cli.check import load_existing
    from madeus.plan import build_plan

    loaded = load_existing(args.file, args, limited=True)
    change = compare(args, loaded)
    if change.record is not None and not change.changes and change.record.complete:
        return _write(args, _nothing_to_change(args, loaded, change))
    if change.record is not None and args.durations_from is None:
        return _plan_change(args, loaded, change)
    plan = build_plan(loaded.deployment)
    declared: Plan | None = None
    traces: list[Trace] = []
    if args.durations_from:
        declared, traces = plan, [_load_trace(path) for path in args.durations_from]
        plan = _calibrated(plan, traces, args.durations_from)
    if args.format == "json":
        document = plan.to_json()
        if change.record is not None:  # nothing deployed yet: the plan JSON alone
            document["changes"] = change.to_json()
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = change.render() + render_text(plan, declared)
        if declared is not None:
            text += render_calibration(plan, declared, traces, args.durations_from)
    code = _write(args, text)
    return EXIT_CHANGES if code == EXIT_OK and args.detailed_exitcode else code


def _nothing_to_change(args: argparse.Namespace, loaded: Loaded, change: Compared) -> str:
    if args.format == "json":
        document = {
            "assembly": loaded.deployment.name,
            "transitions": [],
            "predicted_makespan": 0.0,
            "critical_path": [],
            "changes": change.to_json(),
        }
        return json.dumps(document, indent=2) + "\n"
    return change.render()


def _plan_change(args: argparse.Namespace, loaded: Loaded, change: Compared) -> int:
    """The change against the state of record and the program that makes it (`apply`)."""
    from madeus.cli.apply import synthesised

    assert change.record is not None
    try:
        found = synthesised(change.record, loaded, partial=change.partial)
        if found.diagnostics:
            raise MadeusError(list(found.diagnostics))
    except MadeusError:
        if args.format == "text":  # what changed, then why it cannot be made
            _write(args, change.render())
        raise
    if args.format == "json":
        prediction = found.prediction
        document: dict[str, Any] = {"assembly": loaded.deployment.name, "transitions": []}
        if prediction is not None:
            document = prediction.to_plan().to_json()
        document["changes"] = change.to_json()
        document["program"] = [str(ins) for ins in found.program]
        document["notes"] = list(found.synthesis.notes)
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = change.render() + found.render()
    code = _write(args, text)
    return EXIT_CHANGES if code == EXIT_OK and args.detailed_exitcode else code


def _write(args: argparse.Namespace, text: str) -> int:
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        where = Span(args.output, 0, 0, 0, 0)
        raise MadeusError(
            [Diagnostic("output", f"cannot write: {error.strerror or error}", where)]
        ) from None
    return EXIT_OK


EXIT_CHANGES = 2  # --detailed-exitcode: there are changes


@dataclass(frozen=True, slots=True)
class Compared:
    """The deployment the files describe against its state of record."""

    record: Record | None
    changes: Changes
    where: Path  # the state file (it may not exist)
    partial: bool  # --limit: only what the limit keeps was compared

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "state": str(self.where) if self.record is not None else None,
            "complete": self.record.complete if self.record is not None else False,
            **self.changes.to_json(),
        }
        return document

    def render(self) -> str:
        if self.record is None:
            return ""  # nothing deployed yet: the plan is the whole deployment
        record = self.record
        head = f"state: {self.where} (updated {record.updated_at})\n"
        if not self.changes:
            if record.complete:
                return head + "No changes: the deployment matches its state of record.\n"
            last = record.runs[-1].get("status") if record.runs else None
            if last != "ok":
                return head + (
                    f"No changes to the files, but the last run did not complete "
                    f"({last or 'stopped'}): `madeus apply` takes every instance on to its "
                    "deployed places (a deployment that stopped can also be continued with "
                    "`madeus deploy --resume`):\n\n"
                )
            return head + (
                "No changes to the files, but not every instance is deployed (a "
                "reconfiguration left them elsewhere): `madeus apply` takes them back:\n\n"
            )
        scope = " (within --limit)" if self.partial else ""
        lines = [f"changes{scope}: {self.changes.summary()}", *self.changes.lines()]
        return head + "\n".join(lines) + "\n\n`madeus apply` runs this change:\n\n"


def compare(args: argparse.Namespace, loaded: Loaded) -> Compared:
    """Compare FILE and the inventory with the state of record (`madeus.state`)."""
    from madeus.engine.journal import state_dir
    from madeus.state import STATE_FILE, changes, recorded

    simulate = bool(getattr(args, "simulate", False))
    base = state_base(args, loaded, simulate=simulate)
    directory = state_dir(args.file, loaded.inventory_key, base=base, simulate=simulate)
    record = recorded(loaded.deployment, directory)
    partial = bool(getattr(args, "limit", None))
    found = changes(record, loaded.deployment, partial=partial)
    return Compared(record, found, directory / STATE_FILE, partial)


def _load_trace(path: str) -> Trace:
    from madeus.trace import load

    try:
        return load(path)
    except (OSError, ValueError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise MadeusError(
            [Diagnostic("trace", f"cannot read the trace: {message}", Span(path, 0, 0, 0, 0))]
        ) from None


def _calibrated(plan: Plan, traces: list[Trace], paths: list[str]) -> Plan:
    from madeus.plan import calibrate, measured_durations

    ids = {t.id for t in plan.transitions}
    for trace, path in zip(traces, paths, strict=True):
        if not ids & measured_durations(trace).keys():
            raise MadeusError(
                [
                    Diagnostic(
                        "trace",
                        f"no transition of assembly {plan.assembly} ended ok in this trace "
                        f"(it is a trace of {trace.assembly})",
                        Span(path, 0, 0, 0, 0),
                    )
                ]
            )
    return calibrate(plan, *traces)


def render_calibration(plan: Plan, declared: Plan, traces: list[Trace], paths: list[str]) -> str:
    """What calibration changed, and the calibrated prediction against the measured runs."""
    import statistics

    from madeus.plan import measured_durations

    measured = measured_durations(*traces)
    used = sum(1 for t in plan.transitions if t.id in measured)
    n = len(plan.transitions)
    many = len(traces) > 1
    makespan = statistics.median(t.makespan for t in traces)
    lines = [
        "",
        f"calibrated from {', '.join(paths)}: {used} of {n} durations measured"
        + (f" (median of {len(traces)} runs)" if many else "")
        + (f", {n - used} declared" if used < n else ""),
        f"declared durations:   predicted makespan {declared.predicted_makespan:.1f} s",
        f"calibrated durations: predicted makespan {plan.predicted_makespan:.1f} s",
    ]
    if many:
        each = ", ".join(f"{t.makespan:.1f}" for t in traces)
        lines.append(f"measured makespan:    {makespan:.1f} s (median of {each})")
    else:
        lines.append(f"measured makespan:    {makespan:.1f} s (the trace's)")
    if makespan > 0:
        error = (plan.predicted_makespan - makespan) / makespan
        error = 0.0 if abs(error) < 0.0005 else error  # no "-0.0%"
        lines.append(f"calibrated prediction vs measured: {error:+.1%}")
    return "\n".join(lines) + "\n"


def _hosts(hosts: tuple[str, ...], limit: int = 3) -> str:
    if len(hosts) > limit:
        return ",".join(hosts[:limit]) + f",+{len(hosts) - limit}"
    return ",".join(hosts)


def render_text(plan: Plan, declared: Plan | None = None) -> str:
    """The table (`*` marks the critical path), then the totals. With `declared` (the plan
    before calibration), a last column shows each transition's declared duration."""
    critical = set(plan.critical_path)
    header: tuple[str, ...] = ("", "transition", "hosts", "start", "duration", "end")
    if declared is not None:
        header = (*header, "declared")
    rows = [
        (
            "*" if t.id in critical else "",
            t.id,
            _hosts(t.hosts),
            f"{plan.start.get(t.id, 0.0):.1f}",
            f"{t.duration:.1f}",
            f"{plan.start.get(t.id, 0.0) + t.duration:.1f}",
            *([f"{declared.transition(t.id).duration:.1f}"] if declared is not None else []),
        )
        for t in plan.transitions
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = {3, 4, 5, 6}  # numbers align right

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    sequential = sum(t.duration for t in plan.transitions)
    n = len(plan.transitions)
    lines = [line(header), *(line(r) for r in rows), ""]
    lines.append(f"predicted makespan: {plan.predicted_makespan:.1f} s")
    lines.append(
        f"sequential time:    {sequential:.1f} s "
        f"(the sum of the {n} duration{'s' if n != 1 else ''})"
    )
    path = " -> ".join(plan.critical_path) if plan.critical_path else "(none)"
    lines.append(f"critical path (*):  {path}")
    return "\n".join(lines) + "\n"
