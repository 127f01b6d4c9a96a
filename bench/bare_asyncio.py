#!/usr/bin/env python3
"""The baseline for the engine benchmark: the same DAG, run by a minimal bare-asyncio program.

    python bench/bare_asyncio.py PLAN.json [--time-scale X]

PLAN.json is `madeus plan --format json` output. What a competent minimal program does:
integer indices, one dependency counter per transition (an entry of `after_one_of`, or an
older `after_any` group, counts once: when one of its alternatives is complete), one
task per transition in a TaskGroup, created when its counter reaches zero and sleeping its
duration (times the scale). Hosts are ignored (one job per transition), and there is no trace, no
events, no logs: everything the engine does on top of this is overhead measured against it.
Prints JSON: transitions, wall seconds (from the parsed plan to the end), makespan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


async def run(plan: dict[str, Any], time_scale: float = 1.0) -> float:
    """Run the plan's DAG; return the makespan in seconds."""
    transitions = plan["transitions"]
    index = {t["id"]: i for i, t in enumerate(transitions)}
    n = len(transitions)
    pending = [0] * n
    succ: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # (successor, alternative or -1)
    left: list[int] = []  # per alternative: members still to end
    entry_of: list[tuple[int, int]] = []  # per alternative: (successor, entry)
    done_entries: set[tuple[int, int]] = set()
    durations = [float(t["duration"]) * time_scale for t in transitions]
    for i, t in enumerate(transitions):
        entries = [[[a] for a in g] for g in t.get("after_any", ())]
        entries += t.get("after_one_of", [])
        pending[i] = len(t["after"]) + len(entries)
        for dep in t["after"]:
            succ[index[dep]].append((i, -1))
        for e, entry in enumerate(entries):
            for alternative in entry:
                for dep in set(alternative):
                    succ[index[dep]].append((i, len(left)))
                left.append(len(set(alternative)))
                entry_of.append((i, e))
    start = time.monotonic()
    end = start

    async with asyncio.TaskGroup() as tg:

        async def step(i: int) -> None:
            nonlocal end
            await asyncio.sleep(durations[i])
            end = time.monotonic()
            for s, a in succ[i]:
                if a >= 0:
                    left[a] -= 1
                    if left[a] or entry_of[a] in done_entries:
                        continue
                    done_entries.add(entry_of[a])
                pending[s] -= 1
                if pending[s] == 0:
                    tg.create_task(step(s))

        for i in range(n):
            if pending[i] == 0:
                tg.create_task(step(i))
    return end - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", metavar="PLAN.json")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)
    started = time.perf_counter()
    makespan = asyncio.run(run(plan, args.time_scale))
    wall = time.perf_counter() - started
    json.dump(
        {"transitions": len(plan["transitions"]), "wall_s": wall, "makespan_s": makespan},
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
