#!/usr/bin/env python3
"""How the verifier scales: sound `layers` assemblies and `deadlock` rings of growing size,
generated with bench/generate.py, verified with `madeus.verify.analyze` (parse and resolve are
timed apart and not counted).

    python bench/bench_verify.py [--layers 100 300 1000 3000 10000] [--deadlock 100 1000]
                                 [--repeat 1] [--monolithic-up-to 1000]

Prints one JSON document: a row per assembly with the verdict, the verification time (best of
`--repeat`), what z3 was given (cyclic components, queries), the length of the reported cycle,
and, up to `--monolithic-up-to` components, the time z3 takes on the whole wait graph at once
(no decomposition: the comparison that motivates it). The targets (docs/semantics.md): a
1,000-component `layers` in at most 5 s, 10,000 in at most 60 s, a 1,000-component `deadlock`
refused with its cycle in at most 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGETS = {("layers", 1000): 5.0, ("layers", 10000): 60.0, ("deadlock", 1000): 5.0}


def run(kind: str, n: int, directory: Path, repeat: int, monolithic_up_to: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import generate  # bench/generate.py

    from madeus.frontend import load_file
    from madeus.resolve import resolve
    from madeus.verify import analyze
    from madeus.verify.deploy import feasible_monolithic

    path = directory / f"{kind}-{n}.mad"
    with path.open("w", encoding="utf-8") as out:
        counts = generate.generate(kind, n, 0.0, out)
    started = time.perf_counter()
    module = load_file(str(path))
    assert module.assembly is not None
    deployment = resolve(module.assembly)
    parse = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        analysis = analyze(deployment)
        diagnostics = analysis.diagnostics
        best = min(best, time.perf_counter() - started)
    cycles = [p for p in analysis.deploy.problems if p.kind == "deadlock"]
    row: dict[str, Any] = {
        "kind": kind,
        "components": n,
        "transitions": counts.transitions,
        "parse_resolve_s": round(parse, 3),
        "verify_s": round(best, 3),
        "sound": analysis.sound,
        "diagnostics": [d.code for d in diagnostics],
        "cycle_transitions": [
            sum(1 for m in p.nodes if analysis.graph.nodes[m].kind == "transition") for p in cycles
        ],
        "wait_graph_nodes": len(analysis.graph),
        "cyclic_components_to_z3": analysis.deploy.cyclic_components,
        "z3_queries": analysis.deploy.z3_queries + analysis.safety.z3_queries,
    }
    target = TARGETS.get((kind, n))
    if target is not None:
        row["target_s"] = target
        row["target_met"] = best <= target
    if n <= monolithic_up_to:
        started = time.perf_counter()
        verdict = feasible_monolithic(analysis.graph)
        row["monolithic_z3_s"] = round(time.perf_counter() - started, 3)
        assert verdict == analysis.deploy.sound
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="*", default=[100, 300, 1000, 3000, 10000])
    parser.add_argument("--deadlock", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--monolithic-up-to", type=int, default=1000, metavar="N")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="madeus-bench-verify-") as tmp:
        for kind, sizes in (("layers", args.layers), ("deadlock", args.deadlock)):
            for n in sizes:
                rows.append(run(kind, n, Path(tmp), args.repeat, args.monolithic_up_to))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    import z3

    report = {
        "benchmark": "verify",
        "python": platform.python_version(),
        "z3": z3.get_version_string(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
        "targets_met": all(r.get("target_met", True) for r in rows),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
