"""`madeus agent`: a site's agent, started by `madeus deploy --agents` over SSH (docs/agents.md).

It speaks only to the process that started it, on its standard input and output; nobody types
to it. Exit 0 when the controller is done with it, 1 when its standard input is not a pipe.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent",
        help="run a site's part of a deployment for a controller (started by deploy --agents)",
        description="Serve the controller that started this process (`madeus deploy "
        "--agents`, over SSH) on standard input and output: run the jobs of this site it "
        "hands over, and report them. Not for interactive use.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from madeus.agents.serve import main

    return main()
