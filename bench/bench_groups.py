#!/usr/bin/env python3
"""Provide groups of many places: how long verifying and planning take as the group grows.

    python bench/bench_groups.py [--places 5 8 10 20 50 200] [--entering 3] [--timeout 60]

A provider with one provide group over K places, each place entered by M transitions of its
own, and a user waiting on the group. Each size runs in a child process of its own (the
`madeus` on its `sys.path`: set PYTHONPATH to measure another checkout), timed per stage:
`verify` (madeus.verify.verify: deadlock-freedom and port safety, z3 included), `plan`
(madeus.plan.build_plan), and `check` (the whole `madeus check FILE`, in the same process).
A stage that does not end within `--timeout` seconds is reported as such. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any


def source(places: int, entering: int) -> str:
    names = [f"p{k}" for k in range(places)]
    transitions = "\n".join(
        f"    transition t{k}_{j}: a -> p{k}  ~{1 + k + j}s"
        for k in range(places)
        for j in range(entering)
    )
    return f"""component Provider() {{
    places a*, {", ".join(names)}
{transitions}
    provide service s at {", ".join(names)}
}}
component User() {{
    places a*, b
    transition go: a -> b  ~1s
    use service s for go
}}
assembly groups {{
    p = Provider()
    u = User()
    connect u.s -> p.s
}}
"""


def child(places: int, entering: int) -> dict[str, Any]:
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    from madeus.cli import main as cli
    from madeus.frontend import load_text
    from madeus.plan import build_plan
    from madeus.resolve import resolve
    from madeus.verify import verify

    text = source(places, entering)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "groups.mad"
        path.write_text(text)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli(["check", str(path)])
        checked = time.perf_counter() - started
    assert code == 0
    module = load_text(text, "groups.mad")
    assert module.assembly is not None
    deployment = resolve(module.assembly)
    started = time.perf_counter()
    problems = verify(deployment)
    verified = time.perf_counter()
    plan = build_plan(deployment)
    planned = time.perf_counter()
    assert problems == [], problems
    return {
        "verify_s": round(verified - started, 4),
        "plan_s": round(planned - verified, 4),
        "check_s": round(checked, 4),
        "predicted_makespan": plan.predicted_makespan,
    }


def measure(places: int, entering: int, timeout: float) -> dict[str, Any]:
    row: dict[str, Any] = {"places": places, "entering": entering}
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(places), str(entering)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        row["timeout_s"] = timeout
        return row
    row.update(json.loads(done.stdout))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, nargs="+", default=[5, 8, 10, 20, 50, 200])
    parser.add_argument("--entering", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = [measure(k, args.entering, args.timeout) for k in args.places]
    print(
        json.dumps(
            {
                "benchmark": "groups",
                "command": " ".join(["python", "bench/bench_groups.py", *sys.argv[1:]]),
                "madeus": os.path.dirname(_madeus_path()),
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg()[0],
                },
                "rows": rows,
            },
            indent=2,
        )
    )


def _madeus_path() -> str:
    found = subprocess.run(
        [sys.executable, "-c", "import madeus; print(madeus.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


if __name__ == "__main__":
    main()
