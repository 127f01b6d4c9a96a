"""What ran: the trace of a deployment (the trace JSON of docs/engine.md).

```
{"assembly": "openstack", "started_at": "2026-11-21T10:00:00Z", "makespan": 1.52,
 "events": [{"id": "mariadb.bootstrap", "host": "control-1", "start": 0.123, "end": 0.347,
             "status": "ok", "behaviour": "deploy", "attempts": 1}],
 "limits": {"max_parallel": null, "hosts": {"control-1": 8}},
 "agents": [{"site": "edge1", "host": "edge1-1", "delay": 0.151, "instances": ["nova[edge1-1]"]}]}
```
Times are seconds from the start of the run (monotonic clock). One event per transition per host;
transitions that never started are absent. `limits` (only when one applied) are the concurrency
limits the run kept: `--max-parallel`, and per host the smaller of `madeus_max_parallel` and
what its backend runs at once (SSH: the sessions of one connection). A job may wait for one of
those, and a checker of the trace must know it. `agents` (only in a run with site agents):
the instances each site's agent ran, and the one-way delay measured between the controller and
that agent: what an agent runs can start only once the news it waits for has reached it (the
start of the run, or the end of another party's transition, relayed by the controller).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

Status = Literal["ok", "failed", "timeout", "cancelled", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "timeout", "cancelled", "skipped")
# Six decimals: microseconds, finer than anything the engine can measure reliably.
_DIGITS = 6


@dataclass(frozen=True, slots=True)
class TraceEvent:
    id: str
    host: str
    start: float
    end: float
    status: Status
    behaviour: str = "deploy"
    attempts: int = 1

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "start": round(self.start, _DIGITS),
            "end": round(self.end, _DIGITS),
            "status": self.status,
            "behaviour": self.behaviour,
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TraceEvent:
        status = data["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} in trace event {data.get('id')!r}")
        return cls(
            id=str(data["id"]),
            host=str(data["host"]),
            start=float(data["start"]),
            end=float(data["end"]),
            status=cast(Status, status),
            behaviour=str(data.get("behaviour", "deploy")),
            attempts=int(data.get("attempts", 1)),
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """The concurrency limits a run kept (see the module docstring)."""

    max_parallel: int | None = None
    hosts: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"max_parallel": self.max_parallel, "hosts": dict(self.hosts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limits:
        top = data.get("max_parallel")
        hosts = data.get("hosts") or {}
        return cls(None if top is None else int(top), {str(h): int(n) for h, n in hosts.items()})


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A site's agent in a run (see the module docstring)."""

    site: str
    host: str
    delay: float  # seconds, one way, between the controller and the agent
    instances: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "host": self.host,
            "delay": round(self.delay, _DIGITS),
            "instances": list(self.instances),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentRecord:
        return cls(
            str(data["site"]),
            str(data["host"]),
            float(data["delay"]),
            tuple(str(i) for i in data["instances"]),
        )


@dataclass(frozen=True, slots=True, repr=False)
class Trace:
    assembly: str
    started_at: str  # UTC, ISO 8601 with a trailing Z
    makespan: float
    events: tuple[TraceEvent, ...]
    limits: Limits | None = None
    agents: tuple[AgentRecord, ...] = ()

    def __repr__(self) -> str:
        # Short on purpose: Python 3.11's asyncio.run formats the main task's result when it
        # restores the SIGINT handler, and a 100,000-event repr took a second.
        return (
            f"Trace(assembly={self.assembly!r}, started_at={self.started_at!r}, "
            f"makespan={self.makespan!r}, events=<{len(self.events)} events>)"
        )

    @property
    def ok(self) -> bool:
        return all(e.status in ("ok", "skipped") for e in self.events)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "assembly": self.assembly,
            "started_at": self.started_at,
            "makespan": round(self.makespan, _DIGITS),
            "events": [e.to_json() for e in self.events],
        }
        if self.limits is not None:
            data["limits"] = self.limits.to_json()
        if self.agents:
            data["agents"] = [a.to_json() for a in self.agents]
        return data

    def dumps(self) -> str:
        """The JSON text, one event per line (readable, and diffs well)."""
        return dumps_lines(self.to_json())

    def write(self, path: str | Path, *, mode: int = 0o644) -> None:
        """Write the JSON file (`mode` for a new file; run directories use 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.dumps())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trace:
        limits = data.get("limits")
        return cls(
            assembly=str(data["assembly"]),
            started_at=str(data["started_at"]),
            makespan=float(data["makespan"]),
            events=tuple(TraceEvent.from_json(e) for e in data["events"]),
            limits=Limits.from_json(limits) if isinstance(limits, Mapping) else None,
            agents=tuple(AgentRecord.from_json(a) for a in data.get("agents") or ()),
        )


def dumps_lines(data: Mapping[str, Any]) -> str:
    """A JSON object whose top-level lists (trace events, plan transitions) get one item per
    line. Without `indent`, which switches `json` to its pure-Python encoder: 10x slower on
    100,000 items."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            items = ",\n  ".join(json.dumps(item) for item in value)
            parts.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{" + ",\n ".join(parts) + "}\n"


def load(path: str | Path) -> Trace:
    """Read a trace file; raise ValueError (or OSError) when it is not one."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a trace is a JSON object")
    try:
        return Trace.from_json(data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a Madeus trace (missing or bad field {exc})") from None
