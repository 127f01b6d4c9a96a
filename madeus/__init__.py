"""Madeus: a deployment engine with a formal model."""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names imported on first use (module `__getattr__`), so `import madeus` stays light.
_LAZY: dict[str, str] = {
    "deploy": "madeus.engine",
    "deploy_sync": "madeus.engine",
    "DeployResult": "madeus.engine",
    "DeployError": "madeus.engine",
    "RunStarted": "madeus.engine",
    "TransitionStarted": "madeus.engine",
    "TransitionEnded": "madeus.engine",
    "RunEnded": "madeus.engine",
    "Trace": "madeus.trace",
    "TraceEvent": "madeus.trace",
    "load_file": "madeus.frontend",
    "load_text": "madeus.frontend",
    "load_inventory": "madeus.inventory",
    "resolve": "madeus.resolve",
    "build_plan": "madeus.plan",
    "verify": "madeus.verify",
    "MadeusError": "madeus.errors",
    "Diagnostic": "madeus.errors",
    "Program": "madeus.reconfig",
    "ProgramBuilder": "madeus.reconfig",
    "load_program": "madeus.reconfig",
    "reconfigure": "madeus.reconfig",
    "reconfigure_sync": "madeus.reconfig",
    "ReconfigResult": "madeus.reconfig",
    "ReconfigError": "madeus.reconfig",
    "verify_program": "madeus.verify",
}

__all__ = [
    "DeployError",
    "DeployResult",
    "Diagnostic",
    "MadeusError",
    "Program",
    "ProgramBuilder",
    "ReconfigError",
    "ReconfigResult",
    "RunEnded",
    "RunStarted",
    "Trace",
    "TraceEvent",
    "TransitionEnded",
    "TransitionStarted",
    "__version__",
    "build_plan",
    "deploy",
    "deploy_sync",
    "load_file",
    "load_inventory",
    "load_program",
    "load_text",
    "reconfigure",
    "reconfigure_sync",
    "resolve",
    "verify",
    "verify_program",
]

if TYPE_CHECKING:
    from madeus.engine import (
        DeployError,
        DeployResult,
        RunEnded,
        RunStarted,
        TransitionEnded,
        TransitionStarted,
        deploy,
        deploy_sync,
    )
    from madeus.errors import Diagnostic, MadeusError
    from madeus.frontend import load_file, load_text
    from madeus.inventory import load_inventory
    from madeus.plan import build_plan
    from madeus.reconfig import (
        Program,
        ProgramBuilder,
        ReconfigError,
        ReconfigResult,
        load_program,
        reconfigure,
        reconfigure_sync,
    )
    from madeus.resolve import resolve
    from madeus.trace import Trace, TraceEvent
    from madeus.verify import verify, verify_program


class _Package(types.ModuleType):
    """`madeus.resolve` and `madeus.verify` name both a function of the public API and a
    submodule. Importing a submodule binds its name on the package, which would hide the
    function for good (`madeus.resolve(...)` would then call a module); the package keeps its
    functions (the submodules stay in `sys.modules`, where `from madeus.resolve import ...`
    finds them)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'madeus' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
