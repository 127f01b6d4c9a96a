"""The engine: runs a plan, event-driven, in one asyncio TaskGroup (see docs/engine.md).

`deploy(target, ...)` -> DeployResult (its Trace); DeployError when a transition fails.
`open_journal(mad, inventory)` -> Journal: the durable record of a deployment, for resumes.
"""

from madeus.engine.api import DeployResult, deploy, deploy_sync
from madeus.engine.errors import (
    DeployError,
    Failure,
    JournalError,
    JournalLocked,
    ParameterError,
    ResumeError,
)
from madeus.engine.events import (
    Event,
    RunEnded,
    RunStarted,
    TransitionEnded,
    TransitionStarted,
)
from madeus.engine.journal import Journal, JournalState, open_journal, read_journal

__all__ = [
    "DeployError",
    "DeployResult",
    "Event",
    "Failure",
    "Journal",
    "JournalError",
    "JournalLocked",
    "JournalState",
    "ParameterError",
    "ResumeError",
    "RunEnded",
    "RunStarted",
    "TransitionEnded",
    "TransitionStarted",
    "deploy",
    "deploy_sync",
    "open_journal",
    "read_journal",
]
