#!/usr/bin/env python3
"""Site agents against the controller alone, on a WAN testbed (needs root).

    sudo python bench/bench_agents.py [--sites 10] [--hosts-per-site 10] [--repeat 3] [-o OUT.json]

The testbed: `reg-1` (site `central`, 10 ms one way from the controller) and S sites of H hosts
each, 10 to 150 ms one way (evenly spread). The assembly: a `Registry` on reg-1 (`sleep 1`), and
on every other host an `Agent` (one instance per host) of five shell transitions, `sleep 1`,
`sleep 1.5`, `sleep 1` (which uses the registry: a cross-site dependency), `sleep 1.5`,
`sleep 1.5`: predicted makespan 6.5 s. Each repetition runs `madeus deploy` without agents
(every job from the controller, over its SSH connections) and with `--agents` (one agent per
site), alternating, each on fresh state.

Prints one JSON object; per mode, the medians of:
- `wall_s`: the command's wall time; `makespan_s`: the trace's;
- `predicted_s`: the plan's makespan; `bound_s`: the prediction plus the relay's latency on the
  critical path (`latency_bound`: each site's part starts when "start" reaches its agent, and a
  transition waiting for another party's learns of its end after both one-way delays; the
  delays are the ones the trace records); `makespan_over_bound` (target: at most 1.08 with
  agents) and `wall_minus_makespan_s` (target: at most 1 s);
- `controller_cpu_s` (user + system of the madeus process and what it waited for: the agents
  run on the hosts, not in it), `controller_cpu_ms_per_host` (target: at most 2 ms with agents);
- `controller_max_rss_mib` (target: at most 300 MiB);
- `trace_valid`: `madeus trace check` accepted every trace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ansible_scale import machine
from bench_kolla_style import emit, madeus_cmd

REGISTRY = """\
component Registry {
    places off*, on
    transition start: off -> on  shell "sleep 1"  ~1s
    provide service registry: reg at on
}
component Agent {
    places a*, b, c, d, e, f
    transition install:   a -> b  shell "sleep 1"    ~1s
    transition configure: b -> c  shell "sleep 1.5"  ~1.5s
    transition register:  c -> d  shell "sleep 1"    ~1s
    transition start:     d -> e  shell "sleep 1.5"  ~1.5s
    transition check:     e -> f  shell "sleep 1.5"  ~1.5s
    use service registry: reg for register
}
"""


def testbed(sites: int, per_site: int) -> str:
    delays = [10 + 140 * i // max(sites - 1, 1) for i in range(sites)]
    return yaml.safe_dump(
        {
            "resources": {"reg": 1, **{f"edge{i}": per_site for i in range(sites)}},
            "network_constraints": {
                "default_delay": "10ms",
                "default_rate": "1gbit",
                "constraints": [
                    {"dst": f"edge{i}", "delay": f"{d}ms"} for i, d in enumerate(delays)
                ],
            },
            "sites": {"central": ["reg"], **{f"site{i}": [f"edge{i}"] for i in range(sites)}},
        },
        sort_keys=False,
    )


def assembly(sites: int) -> str:
    families = "".join(
        f"    for h in hosts of edge{i} {{\n"
        f"        a{i}[h] = Agent on h\n"
        f"        connect a{i}[h].registry -> registry.registry\n"
        "    }\n"
        for i in range(sites)
    )
    return REGISTRY + "assembly edge {\n    registry = Registry on reg\n" + families + "}\n"


def latency_bound(plan: dict[str, Any], trace: dict[str, Any]) -> float:
    """The plan's makespan with the relay's latency added (see the module docstring)."""
    party: dict[str, tuple[str, float]] = {}
    for agent in trace.get("agents") or ():
        for instance in agent["instances"]:
            party[instance] = (agent["site"], float(agent["delay"]))
    end: dict[str, float] = {}
    for t in plan["transitions"]:  # plan order is topological
        here = party.get(t["instance"], ("", 0.0))
        start = here[1]
        waits = list(t.get("after") or ())
        for entry in t.get("after_one_of") or ():
            waits.append(min(entry, key=lambda alt: max(end[d] for d in alt))[0])
        for dep in waits:
            there = party.get(dep.rpartition(".")[0], ("", 0.0))
            hop = 0.0 if there[0] == here[0] else there[1] + here[1]
            start = max(start, end[dep] + hop)
        end[t["id"]] = start + float(t["duration"])
    return max(end.values(), default=0.0)


def run(cmd: list[str], cwd: Path, log: Path) -> dict[str, float]:
    """Wall time, CPU and peak memory of the command alone (`wait4`)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({' '.join(cmd)}): see {log}")
    return {
        "wall_s": round(wall, 3),
        "controller_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "controller_max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def measure(
    mode: str, n: int, work: Path, mad: Path, inventory: Path, hosts: int
) -> dict[str, Any]:
    state = work / f"{mode}-{n}"
    state.mkdir()
    trace = state / "trace.json"
    cmd = [*madeus_cmd(), "deploy", str(mad), "-i", str(inventory), "--trace", str(trace),
           "--state", str(state / "state"), "-q"]  # fmt: skip
    if mode == "agents":
        cmd.append("--agents")
    got: dict[str, Any] = run(cmd, state, state / "deploy.log")
    document = json.loads(trace.read_text())
    run_dirs = sorted((state / ".madeus" / "runs").iterdir())
    plan_file = run_dirs[-1] / "plan.json"
    plan = json.loads(plan_file.read_text())
    check = subprocess.run(
        [*madeus_cmd(), "trace", "check", str(trace), "--plan", str(plan_file)],
        capture_output=True,
        text=True,
    )
    bound = latency_bound(plan, document)
    got.update(
        makespan_s=document["makespan"],
        predicted_s=plan["predicted_makespan"],
        bound_s=round(bound, 3),
        makespan_over_bound=round(document["makespan"] / bound, 3),
        wall_minus_makespan_s=round(got["wall_s"] - document["makespan"], 3),
        controller_cpu_ms_per_host=round(got["controller_cpu_s"] * 1000 / hosts, 2),
        trace_valid=check.returncode == 0,
    )
    if check.returncode != 0:
        got["trace_problems"] = check.stderr.strip().splitlines()[:5]
    print(f"{mode} {n + 1}: {got}", file=sys.stderr)
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--hosts-per-site", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="direct,agents", help="comma-separated")
    parser.add_argument("--workdir", type=Path, help="keep the generated files here")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_agents.py brings up a testbed: run it as root")
    from madeus.testbed import down, load_spec_text, up

    work = args.workdir or Path(tempfile.mkdtemp(prefix="madeus-agents-"))
    work.mkdir(parents=True, exist_ok=True)
    tb = work / "tb"
    mad = work / "edge.mad"
    mad.write_text(assembly(args.sites))
    hosts = 1 + args.sites * args.hosts_per_site
    modes = args.modes.split(",")
    load_start = os.getloadavg()[0]
    up(load_spec_text(testbed(args.sites, args.hosts_per_site), "agents-testbed.yml"), tb)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    try:
        for n in range(args.repeat):
            for mode in modes:
                runs[mode].append(measure(mode, n, work, mad, tb / "inventory.yml", hosts))
    finally:
        down(tb)
    report: dict[str, Any] = {"hosts": hosts, "sites": args.sites + 1, "runs": runs}
    for mode, got in runs.items():
        report[mode] = {
            key: round(statistics.median(r[key] for r in got), 3)
            for key in got[0]
            if isinstance(got[0][key], float) and not isinstance(got[0][key], bool)
        }
        report[mode]["trace_valid"] = all(r["trace_valid"] for r in got)
    report["machine"] = machine(load_start)
    return emit(report, args, work)


if __name__ == "__main__":
    sys.exit(main())
