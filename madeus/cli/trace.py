"""`madeus trace check TRACE --plan PLAN.json`: did a run follow the deployment semantics?

Every transition ran once per host and succeeded; none started before its dependencies ended;
none waited needlessly (more than `--tolerance` seconds after it became ready, unless a limit
kept it waiting: those the run recorded in the trace, or `--max-parallel`). PLAN.json is what
`madeus plan --format json` writes (each run also keeps its plan in
`.madeus/runs/<run-id>/plan.json`). Exit 0 when the trace is valid, 1 with every problem
listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from madeus.cli._common import EXIT_ERRORS, EXIT_OK, fail


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "trace", help="inspect run traces", description="Inspect the trace of a run."
    )
    actions = parser.add_subparsers(dest="trace_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="check a trace against its plan",
        description="Check that a trace follows the deployment semantics of its plan.",
    )
    check.add_argument("trace", metavar="TRACE", help="a trace JSON file (`deploy --trace`)")
    check.add_argument(
        "--plan", required=True, metavar="PLAN.json", help="`madeus plan --format json` output"
    )
    check.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        metavar="S",
        help="how late after becoming ready a start may be, in seconds (default 0.05)",
    )
    check.add_argument(
        "--max-parallel",
        type=int,
        metavar="N",
        help="check against this limit instead of those the trace records (traces of runs "
        "that did not record them)",
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from madeus.engine.validate import validate
    from madeus.errors import MadeusError
    from madeus.plan import Plan
    from madeus.trace import load

    try:
        trace = load(args.trace)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read trace {args.trace}: {exc}")
    try:
        with open(args.plan, encoding="utf-8") as f:
            plan = Plan.from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, MadeusError) as exc:
        return fail(f"cannot read plan {args.plan}: {exc}")
    problems = validate(trace, plan, args.tolerance, max_parallel=args.max_parallel)
    if problems:
        for problem in problems:
            print(f"{args.trace}: error: {problem}", file=sys.stderr)
        count = len(problems)
        print(f"{count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_ERRORS
    print(f"{args.trace}: valid ({len(trace.events)} events, makespan {trace.makespan:.3f} s)")
    return EXIT_OK
