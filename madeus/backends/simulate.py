"""Simulation: every action replaced by a sleep of its declared duration times the time scale.

The engine runs unchanged (same scheduling, same events, same trace); only the work is fake. A
zero duration returns at once, without even yielding to the loop, so huge simulated assemblies
measure the engine and not the sleeps.
"""

from __future__ import annotations

import asyncio

from madeus.backends.base import Job, Outcome

_OK = Outcome(ok=True)


class SimulateBackend:
    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale < 0:
            raise ValueError("the time scale must not be negative")
        self.time_scale = time_scale

    def seconds(self, job: Job) -> float:
        return job.duration * self.time_scale

    async def run(self, job: Job) -> Outcome:
        delay = job.duration * self.time_scale
        if delay > 0:
            await asyncio.sleep(delay)
        return _OK

    async def aclose(self) -> None:
        return None
