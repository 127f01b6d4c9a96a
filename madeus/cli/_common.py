"""What every verb shares: loading an assembly with its inventory, and reporting errors."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from madeus.errors import Diagnostic, MadeusError, SourceCache, render_all
from madeus.model import Module
from madeus.resolve import Deployment

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Verb = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    module: Module
    deployment: Deployment


def add_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the .mad file holding the assembly")


def add_inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        metavar="INVENTORY",
        help="Ansible YAML inventory (default: everything runs on this machine)",
    )


def load(file: str, inventory: str | None = None) -> Loaded:
    """Parse, check and resolve; raise MadeusError with every problem found."""
    from madeus.frontend import load_file
    from madeus.inventory import load_inventory
    from madeus.resolve import resolve

    module = load_file(file)
    if module.assembly is None:
        raise MadeusError([Diagnostic("no-assembly", f"{file} defines no assembly")])
    inv = load_inventory(inventory) if inventory else None
    return Loaded(Path(file), module, resolve(module.assembly, inv))


def report(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> None:
    """Print diagnostics to standard error, with a count when there are several."""
    if not diagnostics:
        return
    print(render_all(diagnostics, SourceCache()), file=sys.stderr)
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if errors > 1:
        print(f"{errors} errors", file=sys.stderr)


def reports_errors(verb: Verb) -> Verb:
    """Turn a MadeusError escaping a verb into diagnostics on stderr and exit status 1."""

    @functools.wraps(verb)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return verb(args)
        except MadeusError as error:
            report(error.diagnostics)
            return EXIT_ERRORS

    return wrapper


def fail(message: str, code: int = EXIT_ERRORS) -> int:
    print(f"madeus: error: {message}", file=sys.stderr)
    return code
