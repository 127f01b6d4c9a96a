"""`madeus destroy FILE [-i INVENTORY] [--simulate[=local|remote]] ...`: uninstall everything.

The program is derived from the behaviours (`madeus.reconfig.programs.destroy_program`): push
`uninstall` on every instance that has that behaviour, then `wait_all()`. No order is written:
the safety rule makes each provider wait, before leaving its provide group, until no connected
user is in use, so services are uninstalled in reverse dependency order, and in parallel
wherever the port bindings allow. The program is verified like any reconfiguration before it
runs (an instance that could never uninstall is reported with the interleaving that blocks it),
then run, and the journal records where it left the tokens. Options and exit codes are those
of `madeus reconfigure`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from madeus.cli._common import reports_errors
from madeus.cli.reconfigure import add_run_options, run_program

if TYPE_CHECKING:
    from madeus.reconfig.program import Program
    from madeus.reconfig.state import Configuration


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "destroy",
        help="uninstall every instance, in reverse dependency order (verified)",
        description="Push the `uninstall` behaviour on every instance that has one, then wait "
        "for all: providers wait for their users (the safety rule), which gives the reverse "
        "dependency order. Verified before it runs, like `madeus reconfigure`.",
    )
    parser.add_argument("file", metavar="FILE", help="the .mad file of the assembly")
    add_run_options(parser)
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    file = args.file
    return run_program(args, file, lambda state: _program(file, state, args.limit), "destroy")


def _program(file: str, state: Configuration, limit: str | None) -> Program:
    from madeus.errors import Diagnostic, MadeusError
    from madeus.reconfig.programs import UNINSTALL, destroy_program, lacking
    from madeus.resolve import limit_hosts

    missing = lacking(state)
    if len(missing) == len(state.instances):
        raise MadeusError(
            [
                Diagnostic(
                    "no-uninstall",
                    f'nothing to destroy: no component type of {file} has an "{UNINSTALL}" '
                    "behaviour",
                )
            ]
        )
    for name in missing:
        print(
            f'note: instance "{name}" has no "{UNINSTALL}" behaviour: left as it is',
            file=sys.stderr,
        )
    if limit is None:
        return destroy_program(state, source=file)
    within = set(limit_hosts(state.inventory, limit))
    kept = [i.name for i in state.instances if set(i.hosts) <= within]
    away = [i.name for i in state.instances if i.name not in kept and i.name not in missing]
    if away:
        shown = ", ".join(away[:6]) + (f" and {len(away) - 6} more" if len(away) > 6 else "")
        print(
            f"note: --limit {limit}: left as they are: {shown} (they run on other hosts too)",
            file=sys.stderr,
        )
    if not any(name not in missing for name in kept):
        raise MadeusError(
            [
                Diagnostic(
                    "limit", f"--limit {limit}: no instance to destroy runs on its hosts alone"
                )
            ]
        )
    return destroy_program(state, source=file, within=within)
