#!/usr/bin/env python3
"""Rehearsal fidelity: how close `--simulate=remote` on real hosts comes to the plan.

    python bench/bench_rehearsal.py [--repeat 3] [--time-scale 0.05] [--delay 25ms]
        [--compare] [--mad assemblies/openstack/openstack.mad] [-o OUT.json]

Brings a testbed up (`madeus testbed`: control, network and compute, one host each, `--delay`
one way between this machine and every host; needs root), runs

    madeus deploy MAD -i DIR/inventory.yml -i assemblies/openstack/kolla-groups.yml \
        --simulate=remote --time-scale X --trace T.json

`--repeat` times (every action is `sleep duration x X` on its hosts, over SSH), checks each trace
with `madeus trace check`, then tears the testbed down (also on failure or Ctrl-C). Prints one
JSON object: per run the makespan and the fidelity ratio makespan / (X x predicted makespan),
and where the difference goes along the critical path: the first transition (it opens the SSH
connection) and the median cost of each later one over its sleep (about one network round trip
is the floor: the command must reach the host and its exit status come back).

`--compare` also runs the same deployment in-process (`madeus.engine.deploy`), with the SSH
backend's spare channels (the default) and without them (`spare_channels=0`: a channel opened
for every command, as before the optimisation), to show what they change.

Exit 0 when the median ratio meets the target (at most 1.10), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAD = ROOT / "assemblies" / "openstack" / "openstack.mad"
# Kolla-Ansible's service groups, which the OpenStack assembly places its services on: the
# testbed's inventory has control, network and compute only.
KOLLA_GROUPS = ROOT / "assemblies" / "openstack" / "kolla-groups.yml"
TARGET = 1.10


def madeus_cmd() -> list[str]:
    exe = shutil.which("madeus", path=str(Path(sys.executable).parent)) or shutil.which("madeus")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())"]


def testbed_yaml(delay: str) -> str:
    return (
        "resources: {control: 1, network: 1, compute: 1}\n"
        f"network_constraints: {{default_delay: {delay}, default_rate: 1gbit}}\n"
        "sites: {site1: [control], site2: [network], site3: [compute]}\n"
    )


def breakdown(trace: dict[str, Any], plan: dict[str, Any], scale: float) -> dict[str, Any]:
    """Observed minus declared (scaled) duration along the plan's critical path."""
    declared = {t["id"]: float(t["duration"]) * scale for t in plan["transitions"]}
    events = {(e["id"], e["host"]): e for e in trace["events"]}
    rows = []
    for tid in plan["critical_path"]:
        mine = [e for (i, _), e in events.items() if i == tid]
        last = max(mine, key=lambda e: e["end"])
        took = last["end"] - last["start"]
        rows.append(
            {
                "id": tid,
                "host": last["host"],
                "start_s": round(last["start"], 3),
                "took_s": round(took, 3),
                "over_s": round(took - declared[tid], 3),
            }
        )
    later = [r["over_s"] for r in rows[1:]]
    # What the run lost between transitions of the path (the engine's own latency).
    gaps = [
        round(b["start_s"] - (a["start_s"] + a["took_s"]), 3) for a, b in itertools.pairwise(rows)
    ]
    return {
        "critical_path": rows,
        "first_transition_over_s": rows[0]["over_s"],
        "later_transitions_over_ms_median": round(statistics.median(later) * 1000, 1),
        "gaps_between_path_transitions_ms_max": round(max(gaps) * 1000, 1) if gaps else 0.0,
        "total_over_s": round(trace["makespan"] - float(plan["predicted_makespan"]) * scale, 3),
    }


def run_cli(
    mad: Path, inventory: Path, scale: float, work: Path, plan_path: Path, i: int
) -> dict[str, Any]:
    trace_path = work / f"trace-{i}.json"
    cmd = [*madeus_cmd(), "deploy", str(mad), "-i", str(inventory), "-i", str(KOLLA_GROUPS)]
    cmd += ["--simulate=remote"]
    cmd += ["--time-scale", repr(scale), "--trace", str(trace_path)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"madeus deploy failed ({shlex.join(cmd)}):\n{done.stdout}{done.stderr}")
    check = [*madeus_cmd(), "trace", "check", str(trace_path), "--plan", str(plan_path)]
    checked = subprocess.run(check, cwd=work, capture_output=True, text=True)
    trace = json.loads(trace_path.read_text(encoding="utf-8"))
    return {
        "command": shlex.join(cmd),
        "makespan_s": trace["makespan"],
        "wall_s": round(wall, 3),
        "trace_check": checked.stdout.strip() or checked.stderr.strip(),
        "trace_valid": checked.returncode == 0,
        "trace": trace,
    }


async def run_library(
    mad: Path, inventory_path: Path, scale: float, spare_channels: int
) -> dict[str, Any]:
    from madeus.backends.router import BackendConfig, Router
    from madeus.backends.ssh import SshBackend
    from madeus.engine import deploy
    from madeus.inventory import load_inventory

    inventory = load_inventory([str(inventory_path), str(KOLLA_GROUPS)])
    ssh = SshBackend(inventory, spare_channels=spare_channels)
    router = Router(BackendConfig(inventory, "remote", scale), backends={"ssh": ssh})
    try:
        result = await deploy(
            mad, inventory=inventory, simulate="remote", time_scale=scale, backend=router
        )
    finally:
        await router.aclose()
        await ssh.aclose()
    return {
        "spare_channels": spare_channels,
        "makespan_s": result.makespan,
        "connections_opened": ssh.connections_opened,
        "spares_used": ssh.spares_used,
        "trace": result.trace.to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mad", type=Path, default=DEFAULT_MAD, help="the assembly (.mad)")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--delay", default="25ms", help="one-way delay to every host (25ms)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--compare", action="store_true", help="also with spare_channels=0")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args(argv)

    from madeus.testbed import down, load_spec_text, up

    work = Path(tempfile.mkdtemp(prefix="madeus-rehearsal-"))
    tb_dir = work / "tb"
    scale = args.time_scale
    report: dict[str, Any] = {
        "benchmark": "rehearsal",
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "assembly": str(args.mad.relative_to(ROOT) if args.mad.is_relative_to(ROOT) else args.mad),
        "testbed": f"control, network, compute (1 host each), {args.delay} one way, 1gbit",
        "time_scale": scale,
    }
    try:
        start = time.perf_counter()
        up(load_spec_text(testbed_yaml(args.delay), "rehearsal-testbed.yml"), tb_dir)
        report["testbed_up_s"] = round(time.perf_counter() - start, 2)
        inventory = tb_dir / "inventory.yml"
        plan_path = work / "plan.json"
        cmd = [*madeus_cmd(), "plan", str(args.mad), "-i", str(inventory)]
        cmd += ["-i", str(KOLLA_GROUPS), "--format", "json"]
        subprocess.run([*cmd, "-o", str(plan_path)], check=True)
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        predicted = float(plan["predicted_makespan"]) * scale
        report["predicted_makespan_s"] = round(predicted, 3)
        report["critical_path_length"] = len(plan["critical_path"])
        runs = []
        for i in range(args.repeat):
            run = run_cli(args.mad, inventory, scale, work, plan_path, i)
            trace = run.pop("trace")
            run["ratio"] = round(run["makespan_s"] / predicted, 4)
            run.update(breakdown(trace, plan, scale))
            runs.append(run)
            print(f"run {i + 1}: makespan {run['makespan_s']:.3f} s, ratio {run['ratio']:.3f}",
                  file=sys.stderr)  # fmt: skip
        report["runs"] = runs
        ratios = [r["ratio"] for r in runs]
        report["ratio_median"] = round(statistics.median(ratios), 4)
        report["ratio_min"] = min(ratios)
        report["ratio_max"] = max(ratios)
        report["target"] = TARGET
        report["target_met"] = report["ratio_median"] <= TARGET
        report["all_traces_valid"] = all(r["trace_valid"] for r in runs)
        if args.compare:
            compare = []
            for _ in range(args.repeat):
                for spares in (0, 4):
                    row = asyncio.run(run_library(args.mad, inventory, scale, spares))
                    row["ratio"] = round(row["makespan_s"] / predicted, 4)
                    over = breakdown(row.pop("trace"), plan, scale)
                    row["first_transition_over_s"] = over["first_transition_over_s"]
                    row["later_transitions_over_ms_median"] = over[
                        "later_transitions_over_ms_median"
                    ]
                    compare.append(row)
            report["in_process"] = compare
            for spares in (0, 4):
                ratios = [r["ratio"] for r in compare if r["spare_channels"] == spares]
                report[f"in_process_ratio_median_spares_{spares}"] = statistics.median(ratios)
    finally:
        start = time.perf_counter()
        down_report = down(tb_dir)
        report["testbed_down_s"] = round(time.perf_counter() - start, 2)
        report["testbed_removed"] = down_report.found
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0 if report.get("target_met") else 1


if __name__ == "__main__":
    sys.exit(main())
