"""The `madeus` command line: the only code that prints or chooses exit codes.

Every module in this package whose name does not start with `_` is a verb: it defines
`add_parser(subparsers) -> None` (registering `run(args) -> int` as the parser's `func` default)
and must import nothing heavy at module level, so `madeus --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from madeus import __version__
from madeus.cli._common import EXIT_INTERRUPTED, normalise_simulate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madeus",
        description="Deploy distributed software from verified lifecycle models.",
    )
    parser.add_argument("--version", action="version", version=f"madeus {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalise_simulate(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
