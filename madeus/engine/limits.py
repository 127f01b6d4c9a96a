"""Concurrency limits: at most N host-jobs in the whole run, at most K on a host.

When a limit binds, the enabled job that starts first is the one with the longest predicted path
from its start to the end of the run (`Plan.remaining`): critical path first. `fifo` (the order in
which jobs became enabled) is kept as a diagnostic aid, to measure what the priority buys.

Jobs are plain integers (the engine's host-job indices). Waiting jobs sit in lanes: one lane per
host that has its own limit, plus one shared lane for every other host, each a heap. Picking the
next job looks at the head of each lane that has room, so its cost grows with the number of
limited hosts, not with the number of waiting jobs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Literal

Scheduling = Literal["critical-path", "fifo"]
_SHARED = -1


class Limiter:
    def __init__(
        self,
        max_parallel: int | None,
        host_limits: Sequence[int | None],
        priority: Sequence[float],
        job_host: Sequence[int],
        scheduling: Scheduling = "critical-path",
    ) -> None:
        """`host_limits[h]`: the limit of host index h (None: unlimited); `priority[j]`: the
        remaining path of job j (larger starts first); `job_host[j]`: its host index."""
        self._max = max_parallel
        self._host_limits = host_limits
        self._priority = priority
        self._job_host = job_host
        self._fifo = scheduling == "fifo"
        self._running = 0
        self._host_running = [0] * len(host_limits)
        self._lanes: dict[int, list[tuple[float, int, int]]] = {}
        self._seq = 0

    @property
    def running(self) -> int:
        return self._running

    def push(self, job: int) -> None:
        host = self._job_host[job]
        lane = host if self._host_limits[host] is not None else _SHARED
        self._seq += 1
        key = float(self._seq) if self._fifo else -self._priority[job]
        heapq.heappush(self._lanes.setdefault(lane, []), (key, self._seq, job))

    def pop(self) -> int | None:
        """The next job allowed to start now (counted as running), or None."""
        if self._max is not None and self._running >= self._max:
            return None
        best: tuple[float, int, int] | None = None
        best_lane = 0
        for lane, heap in self._lanes.items():
            if not heap:
                continue
            if lane != _SHARED:
                limit = self._host_limits[lane]
                if limit is not None and self._host_running[lane] >= limit:
                    continue
            if best is None or heap[0] < best:
                best, best_lane = heap[0], lane
        if best is None:
            return None
        heapq.heappop(self._lanes[best_lane])
        job = best[2]
        self._running += 1
        self._host_running[self._job_host[job]] += 1
        return job

    def add_host(self) -> None:
        """A host was appended to `host_limits` (a reconfiguration adds an instance)."""
        self._host_running.append(0)

    def release(self, job: int) -> None:
        self._running -= 1
        self._host_running[self._job_host[job]] -= 1

    def waiting(self) -> bool:
        return any(self._lanes.values())

    def clear(self) -> None:
        """Drop every waiting job (the run is stopping)."""
        self._lanes.clear()
