#!/usr/bin/env python3
"""How the front half scales: parse + check, resolve, compile (the net), plan on `layers`
assemblies of growing size, each size in a fresh interpreter so that peak memory is its own.

    python bench/bench_frontend.py [--sizes 100 300 1000 3000 10000] [--repeat 1]

Prints one JSON document: a row per size (seconds per stage, peak RSS; apart, under `state`,
what `madeus plan` adds with a state of record: the record of the deployment, `state.json`
written and read back, and the change against a record lacking a tenth of the instances),
the time per component of each stage and its growth (log-log slope: 1.0 is linear), and
whether the target holds (10,000 components, i.e. 100,000 transitions: parse + check +
resolve + compile + plan in at most 10 s, peak RSS at most 1 GiB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = (100, 300, 1000, 3000, 10000)
STAGES = ("parse_check", "resolve", "compile", "plan")
TOTAL = ("parse_check", "resolve", "compile", "plan")  # what the target counts
TARGET_N = 10_000
TARGET_SECONDS = 10.0
TARGET_RSS_MIB = 1024.0


def measure(path: str) -> dict[str, Any]:
    """Run in the child: time each stage once, after the imports (not part of any stage)."""
    import resource

    from madeus import net
    from madeus.frontend import load_file
    from madeus.plan import plan_of
    from madeus.resolve import resolve

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clock = time.perf_counter
    t0 = clock()
    module = load_file(path)
    t1 = clock()
    assert module.assembly is not None
    deployment = resolve(module.assembly)
    t2 = clock()
    compiled = net.compile(deployment)
    t3 = clock()
    plan = plan_of(compiled)
    t4 = clock()
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "instances": len(deployment.instances),
        "transitions": len(plan.transitions),
        "predicted_makespan": plan.predicted_makespan,
        "seconds": {
            "parse_check": t1 - t0,
            "resolve": t2 - t1,
            "compile": t3 - t2,
            "plan": t4 - t3,
        },
        # ru_maxrss is in KiB on Linux: the peak of the whole process, imports included.
        "rss_after_imports_mib": rss_start / 1024,
        "peak_rss_mib": rss_plan / 1024,
        # Not in the total: what `madeus plan` adds when the deployment has a state of record.
        "state": _state_stages(path, deployment),
    }


def _state_stages(path: str, deployment: Any) -> dict[str, Any]:
    """The record of the complete deployment, written to `state.json` and read back, then the
    change against a record that lacks a tenth of the instances (the change `madeus plan`
    shows: a tenth of them to add)."""
    from dataclasses import replace

    from madeus.engine.journal import JournalState
    from madeus.reconfig.state import deployed
    from madeus.state import changes, load, record_of, save

    clock = time.perf_counter
    t0 = clock()
    record = record_of(
        deployed(deployment), JournalState(), file=path, inventory=None, complete=True
    )
    t1 = clock()
    with tempfile.TemporaryDirectory(prefix="madeus-state-") as directory:
        written = save(record, directory)
        t2 = clock()
        size = written.stat().st_size
        again = load(directory)
        t3 = clock()
    assert again is not None
    older = replace(again, instances=again.instances[: len(again.instances) * 9 // 10])
    t4 = clock()
    found = changes(older, deployment)
    t5 = clock()
    return {
        "record_s": t1 - t0,
        "save_s": t2 - t1,
        "load_s": t3 - t2,
        "file_bytes": size,
        "changes_s": t5 - t4,
        "to_add": len(found.added),
    }


def _child(path: str) -> dict[str, Any]:
    env = dict(os.environ)
    root = str(HERE.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", path],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed on {path}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) against log(x): 1.0 means time grows linearly."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pairs) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    var = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / var if var else None


def run(sizes: list[int], repeat: int, kind: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="madeus-bench-") as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"{kind}-{n}.mad")
            subprocess.run(
                [sys.executable, str(HERE / "generate.py"), kind, str(n), "-o", path],
                check=True,
                capture_output=True,
            )
            # Best of `repeat` runs per stage: the machine's noise only ever adds time.
            runs = [_child(path) for _ in range(repeat)]
            best = {s: min(r["seconds"][s] for r in runs) for s in STAGES}
            row = {
                "n": n,
                "instances": runs[0]["instances"],
                "transitions": runs[0]["transitions"],
                "file_bytes": Path(path).stat().st_size,
                "seconds": {s: round(v, 4) for s, v in best.items()},
                "total_seconds": round(sum(best[s] for s in TOTAL), 4),
                "us_per_component": {s: round(best[s] / n * 1e6, 1) for s in STAGES},
                "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
                "rss_after_imports_mib": round(runs[0]["rss_after_imports_mib"], 1),
                "state": {
                    **{
                        k: round(min(r["state"][k] for r in runs), 4)
                        for k in ("record_s", "save_s", "load_s", "changes_s")
                    },
                    "file_bytes": runs[0]["state"]["file_bytes"],
                    "to_add": runs[0]["state"]["to_add"],
                },
            }
            rows.append(row)
            print(
                f"n={n}: total {row['total_seconds']} s, peak {row['peak_rss_mib']} MiB",
                file=sys.stderr,
            )
    ns = [float(r["n"]) for r in rows]
    growth = {
        s: None if (k := _slope(ns, [r["seconds"][s] for r in rows])) is None else round(k, 3)
        for s in STAGES
    }
    total_slope = _slope(ns, [r["total_seconds"] for r in rows])
    growth["total"] = None if total_slope is None else round(total_slope, 3)
    target_row = next((r for r in rows if r["n"] == TARGET_N), None)
    target: dict[str, Any] = {
        "n": TARGET_N,
        "max_seconds": TARGET_SECONDS,
        "max_peak_rss_mib": TARGET_RSS_MIB,
    }
    if target_row is not None:
        target["seconds"] = target_row["total_seconds"]
        target["peak_rss_mib"] = target_row["peak_rss_mib"]
        target["met"] = (
            target_row["total_seconds"] <= TARGET_SECONDS
            and target_row["peak_rss_mib"] <= TARGET_RSS_MIB
        )
    return {
        "benchmark": "frontend",
        "kind": kind,
        "command": " ".join(["python", "bench/bench_frontend.py", *sys.argv[1:]]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "stages": {
            "parse_check": "madeus.frontend.load_file: parse, build the model, semantic checks",
            "resolve": "madeus.resolve.resolve against the default (local) inventory",
            "compile": "madeus.net.compile: the dependency net",
            "plan": "madeus.plan.plan_of: after/after_one_of, prediction, critical path",
        },
        "rows": rows,
        # Slope of log(time) over log(N): 1.0 linear, 2.0 quadratic. Small sizes carry fixed
        # costs, which pulls the slope under 1.
        "growth_loglog_slope": growth,
        "target": target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (best is kept)")
    parser.add_argument("--kind", default="layers", help="bench/generate.py kind")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    print(json.dumps(run(args.sizes, args.repeat, args.kind), indent=2))


if __name__ == "__main__":
    main()
