"""The engine: runs a plan, event-driven, in one asyncio TaskGroup (see docs/engine.md).

`deploy(target, ...)` -> DeployResult (its Trace); DeployError when a transition fails.
"""

from madeus.engine.api import DeployResult, deploy, deploy_sync
from madeus.engine.errors import DeployError, Failure, ParameterError
from madeus.engine.events import (
    Event,
    RunEnded,
    RunStarted,
    TransitionEnded,
    TransitionStarted,
)

__all__ = [
    "DeployError",
    "DeployResult",
    "Event",
    "Failure",
    "ParameterError",
    "RunEnded",
    "RunStarted",
    "TransitionEnded",
    "TransitionStarted",
    "deploy",
    "deploy_sync",
]
