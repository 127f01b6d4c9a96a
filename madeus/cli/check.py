"""`madeus check FILE [-i INVENTORY] [--no-verify]`: parse, check, resolve, plan, verify.

Exit 0 when the assembly is sound (warnings may be printed), 1 when errors were found (all of
them on standard error, in the diagnostic format of docs/cli.md), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from madeus.cli._common import (
    EXIT_ERRORS,
    EXIT_OK,
    Loaded,
    add_file_arg,
    add_inventory_arg,
    load,
    load_module,
    report,
    reports_errors,
    resolve_module,
)
from madeus.errors import Diagnostic
from madeus.model import DEFAULT_BEHAVIOUR

# Nothing heavy here: `madeus --help` imports every verb module. The front end, the plan and
# the verifier (z3) are imported inside `run`.


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="parse, resolve and verify an assembly",
        description="Parse FILE and its imports, check names and types, resolve it against "
        "the inventory, plan it (every transition must be able to start) and verify it with "
        "z3 (no deadlock, no use of a service that is not provided). Prints "
        "`FILE: ok (N instances, M transitions to deploy)` and exits 0 when sound; otherwise "
        "prints every problem on standard error and exits 1.",
    )
    add_file_arg(parser)
    add_inventory_arg(parser)
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the z3 verification (parse, check, resolve and plan only: fast)",
    )
    parser.set_defaults(func=run)


def load_existing(file: str, args: argparse.Namespace, *, limited: bool = False) -> Loaded:
    """`_common.load`: FILE's assembly, resolved (a missing FILE is a diagnostic naming it)."""
    return load(file, args, limited=limited)


def find_verifier(name: str = "verify") -> Callable[..., Any] | None:
    """`madeus.verify.<name>` when the verifier is installed, else None (checked without
    importing z3 when it is absent)."""
    if importlib.util.find_spec("madeus.verify") is None:
        return None
    module = importlib.import_module("madeus.verify")
    found = getattr(module, name, None)
    return found if callable(found) else None


@reports_errors
def run(args: argparse.Namespace) -> int:
    from madeus.frontend.ansible_refs import check_ansible_references
    from madeus.plan import PlanError, build_plan

    module = load_module(args.file)
    if module.assembly is None:
        problems = check_ansible_references(module.components)
        report(problems)
        if _has_errors(problems):
            return EXIT_ERRORS
        # A library of component types: the front end has checked each of them (names,
        # places reached, an acyclic deploy behaviour, ports): nothing to resolve or verify.
        names = ", ".join(c.name for c in module.components)
        print(
            f"{args.file}: ok (library: {_count(len(module.components), 'component type')}: "
            f"{names})"
        )
        return EXIT_OK
    deployment = resolve_module(args.file, module, args).deployment
    components = {id(i.component): i.component for i in deployment.instances}
    references = check_ansible_references(components.values())
    plan_problems: list[Diagnostic] = []
    try:
        build_plan(deployment)
    except PlanError as error:
        plan_problems = list(error.diagnostics)
    verify = None if args.no_verify else find_verifier()
    if verify is None:
        diagnostics = plan_problems
    else:
        # The verifier also runs when the plan found blocked transitions: it explains them
        # (the waiting cycle, port by port). The plan's own diagnostics are kept only if the
        # verifier found no error, so that a blocked deployment is never reported sound.
        diagnostics = list(verify(deployment))
        if plan_problems and not _has_errors(diagnostics):
            diagnostics.extend(plan_problems)
    diagnostics = [*references, *diagnostics]
    report(diagnostics)
    if _has_errors(diagnostics):
        return EXIT_ERRORS
    instances = len(deployment.instances)
    deploy = sum(len(i.component.transitions_of(DEFAULT_BEHAVIOUR)) for i in deployment.instances)
    others = sorted(
        {b for i in deployment.instances for b in i.component.behaviours} - {DEFAULT_BEHAVIOUR}
    )
    counts = f"{_count(instances, 'instance')}, {_count(deploy, 'transition')} to deploy"
    if others:
        counts += f"; other behaviours: {', '.join(others)}"
    print(f"{args.file}: ok ({counts})")
    return EXIT_OK


def _has_errors(diagnostics: Sequence[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
