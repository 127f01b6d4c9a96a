"""Programs derived from the behaviours themselves, and `--limit` on programs.

`destroy_program(configuration)`: push `uninstall` on every instance whose component type has
that behaviour, then `wait_all()`. No order is written: the safety rule orders it. A provider
waits before leaving a provide group while a connected use port is in use, so it uninstalls
after its users have left the places bound to their use ports: reverse dependency order,
exactly as far as the port bindings say, and in parallel everywhere else. The program is
verified like any other before it runs.

`outside_limit(configuration, program, pattern)`: an instance's lifecycle is one marking over
all its hosts, so a program limited to some hosts may only change instances that run on those
hosts alone; the instructions that would change another are refused, each at its line.
"""

from __future__ import annotations

from collections.abc import Collection

from madeus.errors import Diagnostic
from madeus.reconfig.program import Add, Program, Push, Remove, WaitAll
from madeus.reconfig.state import Configuration
from madeus.resolve import limit_hosts

UNINSTALL = "uninstall"


def lacking(configuration: Configuration, behaviour: str = UNINSTALL) -> tuple[str, ...]:
    """The instances whose component type has no `behaviour`."""
    return tuple(i.name for i in configuration.instances if behaviour not in i.component.behaviours)


def destroy_program(
    configuration: Configuration,
    behaviour: str = UNINSTALL,
    *,
    source: str = "<destroy>",
    within: Collection[str] | None = None,
) -> Program:
    """`push(i, "uninstall")` for every instance that has the behaviour (each instruction at
    the instance's declaration), then `wait_all()`. `within`: only the instances running on
    these hosts alone (`--limit`)."""
    pushes = [
        Push(i.name, behaviour, i.span)
        for i in configuration.instances
        if behaviour in i.component.behaviours and (within is None or set(i.hosts) <= set(within))
    ]
    span = configuration.deployment.assembly.span if configuration.deployment else None
    wait = WaitAll(span) if span is not None else WaitAll()
    return Program((*pushes, wait), source)


def outside_limit(configuration: Configuration, program: Program, pattern: str) -> list[Diagnostic]:
    """The instructions that would change an instance with hosts outside `--limit PATTERN`
    (see the module docstring), each at its line. Raises MadeusError when the pattern
    matches no host."""
    allowed = set(limit_hosts(configuration.inventory, pattern))
    hosts = {i.name: i.hosts for i in configuration.instances}
    found = []
    for ins in program:
        if isinstance(ins, Add):
            hosts[ins.instance] = ins.placement(configuration.inventory)
        if not isinstance(ins, Add | Push | Remove):
            continue
        away = [h for h in hosts.get(ins.instance, ()) if h not in allowed]
        if away:
            found.append(
                Diagnostic(
                    "limit",
                    f'{ins} changes "{ins.instance}", which also runs on '
                    f"{', '.join(away[:5])}{' ...' if len(away) > 5 else ''}, outside "
                    f"--limit {pattern} (an instance changes on all its hosts at once)",
                    ins.span,
                )
            )
    return found
