#!/usr/bin/env python3
"""Reconfiguration: how faithful the prediction is, what parallelism buys, how fast the
verification is. Prints one JSON document.

    python bench/bench_reconfig.py [--time-scale 0.05] [--repeat 3]

On OpenStack (assemblies/openstack), from a complete deployment:
- `update`: the MariaDB update (assemblies/openstack/reconfigure/update-mariadb.py) run by the
  reconfiguration executor under `--simulate` (every action a sleep of its declared duration
  times the time scale, through the same Router as `madeus reconfigure`): measured makespan /
  (time scale x predicted makespan) <= 1.02; the trace checked against the safety rule;
- `sequential`: the same steps one at a time (update-mariadb-sequential.py: a `wait` after
  every push), predicted and measured the same way, for comparison;
- `verify`: z3's verification of each program (termination, port safety): <= 5 s;
- `destroy`: `madeus destroy`'s program (uninstall everywhere), predicted, measured, verified;
- `update_cli`: the MariaDB update through `madeus reconfigure` itself, in a fresh process, with
  the journal (`madeus deploy --simulate` first, in a scratch directory).
Best of `--repeat` runs for times (the machine is shared: the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
SCRIPTS = ROOT / "assemblies" / "openstack" / "reconfigure"


def _cli_update(scale: float, repeat: int, program: Any, state: Any) -> dict[str, Any]:
    """The same update through `madeus reconfigure` itself (a fresh process: parsing, the
    script, verification, the journal written as markings change, logs and trace), from a
    simulated deployment recorded in a scratch directory's journal."""
    import subprocess
    import tempfile

    from madeus.reconfig import check_trace, predict
    from madeus.trace import load

    predicted = predict(state, program).makespan * scale
    runs: list[float] = []
    walls: list[float] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        madeus = [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())"]
        subprocess.run(
            [*madeus, "deploy", str(OPENSTACK), "--simulate", "--time-scale", "0.001"],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for i in range(repeat):
            trace = Path(tmp) / f"update-{i}.json"
            started = time.perf_counter()
            subprocess.run(
                [
                    *madeus,
                    "reconfigure",
                    str(OPENSTACK),
                    str(SCRIPTS / "update-mariadb.py"),
                    "--simulate",
                    "--time-scale",
                    str(scale),
                    "--trace",
                    str(trace),
                ],
                cwd=tmp,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            walls.append(time.perf_counter() - started)
            loaded = load(trace)
            runs.append(loaded.makespan)
            problems.extend(check_trace(state, loaded, program))
    return {
        "command": f"madeus reconfigure openstack.mad update-mariadb.py --simulate "
        f"--time-scale {scale:g} (after madeus deploy --simulate)",
        "predicted_makespan_s": round(predicted, 4),
        "measured_makespan_s": [round(m, 4) for m in runs],
        "ratio_best": round(min(runs) / predicted, 4),
        "ratio_worst": round(max(runs) / predicted, 4),
        "wall_s": [round(w, 3) for w in walls],
        "trace_problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from madeus.frontend import load_file
    from madeus.reconfig import (
        check_trace,
        deployed,
        destroy_program,
        load_program,
        predict,
        reconfigure_sync,
    )
    from madeus.resolve import resolve
    from madeus.verify.behaviours import check_program

    module = load_file(OPENSTACK)
    assert module.assembly is not None
    state = deployed(resolve(module.assembly))
    programs = {
        "update": load_program(SCRIPTS / "update-mariadb.py", state),
        "sequential": load_program(SCRIPTS / "update-mariadb-sequential.py", state),
        "destroy": destroy_program(state),
    }
    results: dict[str, Any] = {}
    for name, program in programs.items():
        prediction = predict(state, program)
        verify_times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            verdict = check_program(state, program)
            verify_times.append(time.perf_counter() - started)
        runs = []
        problems: list[str] = []
        for _ in range(args.repeat):
            result = reconfigure_sync(
                state, program, simulate=True, time_scale=args.time_scale, prediction=prediction
            )
            runs.append(result.makespan)
            problems.extend(check_trace(state, result.trace, program))
        predicted = prediction.makespan * args.time_scale
        best = min(runs)
        results[name] = {
            "instructions": len(program),
            "transitions": len(prediction.steps),
            "predicted_makespan_model_s": round(prediction.makespan, 3),
            "sequential_sum_model_s": round(prediction.sequential, 3),
            "critical_path": list(prediction.critical_ids()),
            "predicted_makespan_s": round(predicted, 4),
            "measured_makespan_s": [round(m, 4) for m in runs],
            "ratio_best": round(best / predicted, 4) if predicted else None,
            "ratio_worst": round(max(runs) / predicted, 4) if predicted else None,
            "trace_problems": problems,
            "verified_sound": verdict.sound,
            "verify_events": verdict.events,
            "verify_s_best": round(min(verify_times), 4),
            "verify_s_worst": round(max(verify_times), 4),
        }
    results["update_cli"] = _cli_update(args.time_scale, args.repeat, programs["update"], state)
    update, sequential = results["update"], results["sequential"]
    report = {
        "benchmark": "reconfiguration",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "time_scale": args.time_scale,
        "repeat": args.repeat,
        "results": results,
        "targets": {
            "update_ratio_at_most_1.02": update["ratio_best"] is not None
            and update["ratio_best"] <= 1.02
            and results["update_cli"]["ratio_best"] <= 1.02,
            "update_verify_at_most_5s": update["verify_s_worst"] <= 5.0,
            "no_trace_problems": not any(r["trace_problems"] for r in results.values()),
        },
        "parallel_vs_sequential": {
            "predicted_speedup": round(
                sequential["predicted_makespan_model_s"] / update["predicted_makespan_model_s"], 3
            ),
            "measured_speedup": round(
                min(sequential["measured_makespan_s"]) / min(update["measured_makespan_s"]), 3
            ),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
