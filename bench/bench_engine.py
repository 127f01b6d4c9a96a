#!/usr/bin/env python3
"""How fast and how faithful the engine is. Prints one JSON document.

    python bench/bench_engine.py [--only NAME ...] [--repeat 3]

Cases (each with its target; `ok` says whether it held in this run):
- `fidelity`: OpenStack (assemblies/openstack) under `--simulate --time-scale 0.02`: measured
  makespan / (0.02 x predicted) <= 1.02.
- `hop_1ms`: a `chain` of 1,000 transitions of 1 ms: makespan <= 1.2 s, beside a bare asyncio
  loop sleeping 1 ms 1,000 times in the same process.
- `hop_1ms_cli`: the same chain through `madeus deploy --simulate` (the journal written as the
  run goes), beside the library without a journal, alternating: makespan <= 1.2 s.
- `hop_zero`: a `chain` of 10,000 zero-duration transitions: trace makespan <= 1 s.
- `throughput`: `layers` 10,000 (100,000 zero-duration transitions) under simulate: <= 10 s
  wall and <= 1 GiB peak RSS, each measured in a fresh interpreter: `madeus deploy` end to end
  (parse, resolve, plan, run, trace and logs written, plain progress lines to /dev/null) and
  the engine alone (`deploy()` on the resolved deployment).
- `fanout`: 1,000 independent components of one 1 s transition: makespan <= 1.1 s.
- `baseline`: the same 100,000-transition DAG run by bench/bare_asyncio.py (one task per
  transition) and by `deploy()` (from the resolved deployment and plan: compiling, running,
  building the trace), alternately in one process, best of `--repeat`: ratio <= 1.5.
- `scheduling`: OpenStack under `--max-parallel 2`, simulated at time scale 0.01, critical path
  first against first-come-first-served: both makespans (in model seconds).
Machines are noisy: compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _write(tmp: Path, kind: str, n: int, duration: float = 0.0) -> Path:
    path = tmp / f"{kind}-{n}-{duration:g}.mad"
    if not path.exists():
        with path.open("w", encoding="utf-8") as out:
            _module("generate").generate(kind, n, duration, out)
    return path


def _independent(tmp: Path, n: int, duration: float) -> Path:
    """N instances of a one-transition component, no connections (not a generate.py kind)."""
    path = tmp / f"independent-{n}.mad"
    lines = [
        "component One {\n    places a*, b\n",
        f"    transition go: a -> b ~{duration:g}s\n}}\n\nassembly independent_{n} {{\n",
        *(f"    c{i} = One\n" for i in range(n)),
        "}\n",
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _deployment(path: Path) -> Any:
    from madeus.frontend import load_file
    from madeus.resolve import resolve

    module = load_file(str(path))
    assert module.assembly is not None
    return resolve(module.assembly)


def _simulate(deployment: Any, **options: Any) -> Any:
    from madeus.engine import deploy

    return asyncio.run(deploy(deployment, simulate=True, **options))


def fidelity(tmp: Path, repeat: int) -> dict[str, Any]:
    scale = 0.02
    deployment = _deployment(OPENSTACK)
    ratios = []
    for _ in range(repeat):
        result = _simulate(deployment, time_scale=scale)
        ratios.append(result.makespan / (scale * result.plan.predicted_makespan))
    return {
        "time_scale": scale,
        "predicted_s": result.plan.predicted_makespan,
        "ratio": min(ratios),
        "ratios": ratios,
        "target": 1.02,
        "ok": min(ratios) <= 1.02,
    }


def hop_1ms(tmp: Path, repeat: int) -> dict[str, Any]:
    deployment = _deployment(_write(tmp, "chain", 1000, 0.001))

    async def bare() -> float:
        started = time.monotonic()
        for _ in range(1000):
            await asyncio.sleep(0.001)
        return time.monotonic() - started

    madeus, loops = [], []
    for _ in range(repeat):
        madeus.append(_simulate(deployment).makespan)
        loops.append(asyncio.run(bare()))
    return {
        "makespan_s": min(madeus),
        "bare_loop_s": min(loops),
        "ratio": min(madeus) / min(loops),
        "target_s": 1.2,
        "ok": min(madeus) <= 1.2,
    }


# `madeus` in a fresh interpreter of this Python (the package as this checkout has it).
_CLI = [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())"]


def hop_1ms_cli(tmp: Path, repeat: int) -> dict[str, Any]:
    """The `hop_1ms` chain through the command line (`madeus deploy --simulate`: its journal
    written as it goes) beside the library without a journal, alternating, best of each."""
    path = _write(tmp, "chain", 1000, 0.001)
    deployment = _deployment(path)
    trace = tmp / "hop-cli-trace.json"
    command = [*_CLI, "deploy", str(path), "--simulate", "--no-verify", "-q", "--trace", str(trace)]
    library, cli = [], []
    for _ in range(repeat):
        library.append(_simulate(deployment).makespan)
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True, cwd=tmp)
        cli.append(json.loads(trace.read_text())["makespan"])
    return {
        "library_makespan_s": min(library),
        "cli_makespan_s": min(cli),
        "ratio": min(cli) / min(library),
        "target_s": 1.2,
        "ok": min(cli) <= 1.2,
    }


def hop_zero(tmp: Path, repeat: int) -> dict[str, Any]:
    deployment = _deployment(_write(tmp, "chain", 10000))
    spans = [_simulate(deployment).makespan for _ in range(repeat)]
    return {
        "makespan_s": min(spans),
        "per_hop_us": min(spans) / 10000 * 1e6,
        "target_s": 1.0,
        "ok": min(spans) <= 1.0,
    }


_ENGINE_CHILD = """
import asyncio, json, resource, sys, time
from madeus.frontend import load_file
from madeus.resolve import resolve
from madeus.plan import build_plan
from madeus.engine import deploy
started = time.perf_counter()
deployment = resolve(load_file(sys.argv[1]).assembly)
plan = build_plan(deployment)
loaded = time.perf_counter()
result = asyncio.run(deploy(deployment, plan=plan, simulate=True))
done = time.perf_counter()
json.dump({"load_and_plan_s": loaded - started, "deploy_s": done - loaded,
           "makespan_s": result.makespan, "events": len(result.trace.events),
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
          sys.stdout)
"""


def throughput(tmp: Path, repeat: int) -> dict[str, Any]:
    path = _write(tmp, "layers", 10000)
    child = subprocess.run(
        [sys.executable, "-c", _ENGINE_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    engine = json.loads(child.stdout)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [*_CLI, "deploy", str(path), "--simulate", "--no-verify"],
        stdout=subprocess.DEVNULL,
        check=True,
        cwd=tmp,
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN is the largest child so far: only trust it if this child set it.
    cli_rss = peak / 1024 if peak > before else None
    return {
        "transitions": engine["events"],
        "cli_wall_s": wall,
        "cli_peak_rss_mib": cli_rss,
        "engine": engine,
        "target_s": 10.0,
        "target_rss_mib": 1024,
        "ok": wall <= 10.0 and (cli_rss or 0) <= 1024 and engine["peak_rss_mib"] <= 1024,
    }


def fanout(tmp: Path, repeat: int) -> dict[str, Any]:
    deployment = _deployment(_independent(tmp, 1000, 1.0))
    spans = [_simulate(deployment).makespan for _ in range(repeat)]
    return {"makespan_s": min(spans), "target_s": 1.1, "ok": min(spans) <= 1.1}


def baseline(tmp: Path, repeat: int) -> dict[str, Any]:
    from madeus.plan import build_plan

    bare = _module("bare_asyncio")
    deployment = _deployment(_write(tmp, "layers", 10000))
    plan = build_plan(deployment)
    plan_json = plan.to_json()
    madeus_s, bare_s, makespans = [], [], []
    for _ in range(repeat):
        started = time.perf_counter()
        result = _simulate(deployment, plan=plan)
        madeus_s.append(time.perf_counter() - started)
        makespans.append(result.makespan)
        started = time.perf_counter()
        asyncio.run(bare.run(plan_json))
        bare_s.append(time.perf_counter() - started)
    return {
        "transitions": len(plan.transitions),
        "madeus_deploy_s": min(madeus_s),
        "madeus_trace_makespan_s": min(makespans),
        "bare_asyncio_s": min(bare_s),
        "ratio": min(madeus_s) / min(bare_s),
        "target": 1.5,
        "ok": min(madeus_s) / min(bare_s) <= 1.5,
    }


def scheduling(tmp: Path, repeat: int) -> dict[str, Any]:
    scale = 0.01
    deployment = _deployment(OPENSTACK)
    out: dict[str, Any] = {"max_parallel": 2, "time_scale": scale}
    for mode in ("critical-path", "fifo"):
        spans = [
            _simulate(deployment, time_scale=scale, max_parallel=2, scheduling=mode).makespan
            for _ in range(repeat)
        ]
        out[mode] = {"makespan_model_s": min(spans) / scale, "makespan_s": min(spans)}
    out["fifo_over_critical_path"] = (
        out["fifo"]["makespan_model_s"] / out["critical-path"]["makespan_model_s"]
    )
    out["ok"] = out["critical-path"]["makespan_model_s"] < out["fifo"]["makespan_model_s"]
    return out


CASES: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "fidelity": fidelity,
    "hop_1ms": hop_1ms,
    "hop_1ms_cli": hop_1ms_cli,
    "hop_zero": hop_zero,
    "throughput": throughput,
    "fanout": fanout,
    "baseline": baseline,
    "scheduling": scheduling,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "command": "python bench/bench_engine.py" + (f" --repeat {args.repeat}"),
    }
    with tempfile.TemporaryDirectory(prefix="madeus-bench-") as tmp:
        for name in args.only or CASES:
            results[name] = CASES[name](Path(tmp), args.repeat)
            print(f"{name}: done", file=sys.stderr)
    results["all_ok"] = all(v.get("ok", True) for v in results.values() if isinstance(v, dict))
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
