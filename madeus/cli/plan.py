"""`madeus plan FILE [-i INVENTORY] [--format text|json] [-o OUT]`: the transition-level
dependency graph, durations, predicted makespan and critical path.

`--format json` prints exactly the plan JSON of SPEC section 5 (`Plan.to_json`); `text` (the
default) a table in predicted start order, then the makespan, the sequential time and the
critical path.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from madeus.cli._common import EXIT_OK, add_file_arg, add_inventory_arg, reports_errors
from madeus.errors import Diagnostic, MadeusError
from madeus.source import Span

if TYPE_CHECKING:
    from madeus.plan import Plan


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="predict the makespan and the critical path",
        description="Compute each transition's dependencies (`after`: all of them; "
        "`after_any`: one of each group), predict start times from the declared durations "
        "with unlimited parallelism, and the critical path.",
    )
    add_file_arg(parser)
    add_inventory_arg(parser)
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a table for people (default); json: the plan JSON of the SPEC",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write to OUT instead of standard output"
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    from madeus.cli.check import load_existing
    from madeus.plan import build_plan

    plan = build_plan(load_existing(args.file, args.inventory).deployment)
    if args.format == "json":
        text = json.dumps(plan.to_json(), indent=2) + "\n"
    else:
        text = render_text(plan)
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


def _hosts(hosts: tuple[str, ...], limit: int = 3) -> str:
    if len(hosts) > limit:
        return ",".join(hosts[:limit]) + f",+{len(hosts) - limit}"
    return ",".join(hosts)


def render_text(plan: Plan) -> str:
    """The table (`*` marks the critical path), then the totals."""
    critical = set(plan.critical_path)
    header = ("", "transition", "hosts", "start", "duration", "end")
    rows = [
        (
            "*" if t.id in critical else "",
            t.id,
            _hosts(t.hosts),
            f"{plan.start.get(t.id, 0.0):.1f}",
            f"{t.duration:.1f}",
            f"{plan.start.get(t.id, 0.0) + t.duration:.1f}",
        )
        for t in plan.transitions
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = {3, 4, 5}  # numbers align right

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
