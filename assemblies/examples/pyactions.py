"""Python actions for assemblies/examples/python.mad.

A Python action names a callable as `"module:function"` (or `"package.module:function"`). The
module is imported normally, and if that fails, from the directory of the `.mad` file: this file
is found because it sits beside python.mad. (Anywhere else, put its directory on PYTHONPATH.)

The callable receives one argument, an `ActionContext` (`values`: the substituted parameters and
data, `host`, `id`, `attempt`, `log(message)` writing to the job's log), may be sync (run in a
worker thread) or async, and fails by raising. The string it returns is the transition's output,
usable by `provide data X = output of T`. Standard library only.
"""

from __future__ import annotations

import asyncio
import json
import platform
from typing import Any


def _log(ctx: Any, message: str) -> None:
    log = getattr(ctx, "log", None)
    if callable(log):
        log(message)


def hello(ctx: Any) -> str:
    """A synchronous action: greet, and return the name of the machine it ran on."""
    who = ctx.values.get("who", "world")
    node = platform.node() or "localhost"
    _log(ctx, f"hello, {who}, from {node}")
    return node


async def measure(ctx: Any) -> str:
    """An asynchronous action: wait a little (without blocking the engine), report as JSON."""
    await asyncio.sleep(0.2)
    report = {"python": platform.python_version(), "values": sorted(ctx.values)}
    _log(ctx, json.dumps(report))
    return json.dumps(report)


def fail(ctx: Any) -> None:
    """An action that fails: the transition is reported failed, with this message."""
    raise RuntimeError("this action always fails")
