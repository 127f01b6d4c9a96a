"""`madeus graph FILE [-i INVENTORY] [--view VIEW] -o OUT.{svg,png,dot} [--highlight-problems]`.

Views: `assembly` (default), `net`, `plan`, `component:NAME` (see `madeus.viz.graphs`). `.dot`
is written without graphviz; `.svg` and `.png` need the `dot` program.
`--highlight-problems` draws in red the elements the verifier blames
(`madeus.verify.problem_elements(deployment)`: Petri-net node ids and edge pairs); without the
verifier it draws nothing in red and says so.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from madeus.cli._common import EXIT_OK, add_file_arg, add_inventory_arg, fail, reports_errors


def _view(text: str) -> str:
    # Validated here so that a bad view is a usage error (exit 2), like any bad option.
    if text in ("assembly", "net", "plan") or (
        text.startswith("component:") and len(text) > len("component:")
    ):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid view {text!r} (choose assembly, net, plan or component:NAME)"
    )


def _output(text: str) -> str:
    if text.lower().endswith((".svg", ".png", ".dot")):
        return text
    raise argparse.ArgumentTypeError(f"invalid output {text!r}: it must end in .svg, .png or .dot")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "graph",
        help="draw the assembly, its Petri net, its plan or a component type",
        description="Draw a view of FILE with graphviz. The output's suffix chooses the "
        "format: .dot (text, no graphviz needed), .svg or .png (need the `dot` program).",
    )
    add_file_arg(parser)
    add_inventory_arg(parser)
    parser.add_argument(
        "--view",
        type=_view,
        default="assembly",
        metavar="VIEW",
        help="assembly (default): instances, ports and connections, grouped by host group "
        "and site; net: the dependency Petri net; plan: the transition DAG with the critical "
        "path; component:NAME: one component type's lifecycle",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=_output, metavar="OUT", help="OUT.svg, .png or .dot"
    )
    parser.add_argument(
        "--highlight-problems",
        action="store_true",
        help="run the verifier and draw what it blames in red",
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    from madeus.cli._common import load_module, resolve_module
    from madeus.cli.check import find_verifier
    from madeus.viz import draw
    from madeus.viz.graphs import NO_DOT_MESSAGE, draw_component

    if not args.output.lower().endswith(".dot") and shutil.which("dot") is None:
        return fail(NO_DOT_MESSAGE)  # before any work: nothing could be drawn
    module = load_module(args.file)
    if module.assembly is None and args.view.startswith("component:"):
        draw_component(module.components, args.view.split(":", 1)[1], args.output, args.file)
        return EXIT_OK
    deployment = resolve_module(args.file, module, args).deployment
    highlight: frozenset[Any] = frozenset()
    if args.highlight_problems:
        problems = find_verifier("problem_elements")
        if problems is None:
            print(
                "madeus: note: the verifier is not available: nothing highlighted",
                file=sys.stderr,
            )
        else:
            highlight = frozenset(problems(deployment))
    draw(deployment, args.view, args.output, highlight=highlight)
    return EXIT_OK
