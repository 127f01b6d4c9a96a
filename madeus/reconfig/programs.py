"""Programs derived from the behaviours themselves.

`destroy_program(configuration)`: push `uninstall` on every instance whose component type has
that behaviour, then `wait_all()`. No order is written: the safety rule orders it. A provider
waits before leaving a provide group while a connected use port is in use, so it uninstalls
after its users have left the places bound to their use ports: reverse dependency order,
exactly as far as the port bindings say, and in parallel everywhere else. The program is
verified like any other before it runs.
"""

from __future__ import annotations

from madeus.reconfig.program import Program, Push, WaitAll
from madeus.reconfig.state import Configuration

UNINSTALL = "uninstall"


def lacking(configuration: Configuration, behaviour: str = UNINSTALL) -> tuple[str, ...]:
    """The instances whose component type has no `behaviour`."""
    return tuple(i.name for i in configuration.instances if behaviour not in i.component.behaviours)


def destroy_program(
    configuration: Configuration, behaviour: str = UNINSTALL, *, source: str = "<destroy>"
) -> Program:
    """`push(i, "uninstall")` for every instance that has the behaviour (each instruction at
    the instance's declaration), then `wait_all()`."""
    pushes = [
        Push(i.name, behaviour, i.span)
        for i in configuration.instances
        if behaviour in i.component.behaviours
    ]
    span = configuration.deployment.assembly.span if configuration.deployment else None
    wait = WaitAll(span) if span is not None else WaitAll()
    return Program((*pushes, wait), source)
