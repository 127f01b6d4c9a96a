#!/usr/bin/env python3
"""A real OpenStack (assemblies/openstack-lab) deployed by Madeus, against the same
transitions run one after another in Kolla-Ansible's order, on the same emulated testbed.

    sudo python bench/bench_openstack_lab.py [--madeus-runs 3] [--no-smoke] [-o OUT.json]

Needs root and a machine prepared by `assemblies/openstack-lab/prepare`. Every run gets a
fresh testbed (`assemblies/openstack-lab/testbed.yml`: control, network, compute, 25 ms one
way), fresh random passwords, a real deployment through the engine and the same SSH and
Ansible backends, the smoke check (`assemblies/openstack-lab/smoke-check`: unless
`--no-smoke`), and `down`. In this order:

1. Madeus, run 1: every transition as soon as its dependencies allow (`madeus deploy`).
2. Kolla-Ansible's order: the components in the order of Kolla-Ansible's `ansible/site.yml`
   (common, mariadb, memcached, rabbitmq, keystone, glance, placement, nova and nova-cell
   (`nova.yml`), neutron), each component's transitions in the order of its lifecycle (the
   order they are declared in), one at a time: each transition waits for the previous one.
   As in an Ansible play, a task of `common` runs on all the play's hosts at once (the three
   Common instances' `tools`, then their `pull`). The engine runs it, given this chain as its
   plan (`deploy(..., plan=...)`); the order is checked to respect every real dependency.
3. Madeus, runs 2 to N (N = --madeus-runs). The prediction made by calibrating the plan with
   the traces of runs 1 to N-1 (`madeus.plan.calibrate`: the median duration of each
   transition, as `madeus plan --durations-from T1 --durations-from T2 ...`) is compared with
   the makespan measured in run N (target: within 10 %).

Prints one JSON object (makespans, the ratio Kolla-order / Madeus, the reduction, predicted
against measured, each run's trace summary) and writes it to `-o`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "assemblies" / "openstack-lab"
MAD = LAB / "openstack-lab.mad"
TESTBED = LAB / "testbed.yml"
CACHE = Path("/var/cache/madeus-openstack-lab")
PASSWORDS = (
    "OSLAB_DB_PASSWORD",
    "OSLAB_RABBIT_PASSWORD",
    "OSLAB_ADMIN_PASSWORD",
    "OSLAB_KEYSTONE_DB_PASSWORD",
    "OSLAB_GLANCE_PASSWORD",
    "OSLAB_PLACEMENT_PASSWORD",
    "OSLAB_NEUTRON_PASSWORD",
    "OSLAB_NOVA_PASSWORD",
)

# Kolla-Ansible's ansible/site.yml (openstack/kolla-ansible, commit 000b3474) applies, among
# the roles this lab has: common, mariadb, memcached, rabbitmq, keystone, glance, placement,
# then nova.yml (nova, then nova-cell: the compute hosts), then neutron. Each instance of the
# assembly belongs to one of those roles.
KOLLA_ROLES = (
    ("common", ("common_control", "common_network", "common_compute")),
    ("mariadb", ("mariadb",)),
    ("memcached", ("memcached",)),
    ("rabbitmq", ("rabbitmq",)),
    ("keystone", ("keystone",)),
    ("glance", ("glance",)),
    ("placement", ("placement",)),
    ("nova", ("nova",)),
    ("nova-cell", ("nova_compute",)),
    ("neutron", ("neutron",)),
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load(inventory: Path):  # type: ignore[no-untyped-def]
    from madeus.frontend import load_file
    from madeus.inventory import load_inventory
    from madeus.plan import build_plan
    from madeus.resolve import resolve

    module = load_file(MAD)
    assert module.assembly is not None
    deployment = resolve(module.assembly, load_inventory(inventory))
    return deployment, build_plan(deployment)


def kolla_steps(deployment: Any) -> list[list[str]]:
    """Kolla-Ansible's order as steps: the transitions of a step start together (one task on
    all the hosts of a play), each step after the previous one has ended."""
    instances = {i.name: i for i in deployment.instances}
    placed = {name for _, names in KOLLA_ROLES for name in names}
    if placed != set(instances):
        raise SystemExit(f"KOLLA_ROLES does not cover the assembly: {placed ^ set(instances)}")
    steps: list[list[str]] = []
    for _, names in KOLLA_ROLES:
        lifecycle = [t.name for t in instances[names[0]].component.transitions_of("deploy")]
        for transition in lifecycle:
            steps.append([f"{name}.{transition}" for name in names])
    return steps


def sequential_plan(plan: Any, steps: list[list[str]]) -> Any:
    """The plan whose only dependencies are the chain of steps, after checking that the chain
    respects every dependency of the real plan (else the run would be meaningless)."""
    from madeus.plan import schedule

    position = {tid: k for k, step in enumerate(steps) for tid in step}
    assert set(position) == {t.id for t in plan.transitions}
    for t in plan.transitions:
        here = position[t.id]
        late = [a for a in t.after if position[a] >= here]
        late += [
            " | ".join("+".join(a) for a in entry)
            for entry in t.alternatives()
            if min(max(position[m] for m in a) for a in entry) >= here
        ]
        if late:
            raise SystemExit(f"Kolla's order runs {t.id} before {late}: not a valid order")
    chained = [
        replace(
            t,
            after=tuple(steps[position[t.id] - 1]) if position[t.id] else (),
            after_any=(),
            after_one_of=(),
        )
        for t in plan.transitions
    ]
    return schedule(plan.assembly, chained)


def one_run(label: str, work: Path, *, kolla: bool, smoke: bool) -> dict[str, Any]:
    from madeus.engine import deploy_sync
    from madeus.testbed import down, load_spec, up

    directory = work / f"tb-{label}"
    env = {**os.environ, **{name: secrets.token_hex(16) for name in PASSWORDS}}
    log(f"{label}: testbed up")
    up(load_spec(TESTBED), directory)
    try:
        inventory = directory / "inventory.yml"
        deployment, plan = load(inventory)
        if kolla:
            plan = sequential_plan(plan, kolla_steps(deployment))
        log(f"{label}: deploying ({'Kolla-Ansible order, one at a time' if kolla else 'Madeus'})")
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        result = deploy_sync(deployment, plan=plan, environ=env, run_dir=work / f"run-{label}")
        wall = time.monotonic() - started
        result.trace.write(work / f"trace-{label}.json")
        log(f"{label}: deployed in {result.trace.makespan:.1f} s")
        smoke_out = None
        if smoke:
            done = subprocess.run(
                [sys.executable, str(LAB / "smoke-check"), str(inventory)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise SystemExit(f"{label}: the smoke check failed:\n{done.stderr}")
            smoke_out = done.stdout.strip().splitlines()[-1]
            log(f"{label}: {smoke_out}")
        return {
            "label": label,
            "order": "kolla-ansible" if kolla else "madeus",
            "makespan": round(result.trace.makespan, 3),
            "wall_time": round(wall, 3),
            "jobs": len(result.trace.events),
            # The machine may be shared: the 1-minute load average before and after the run.
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "smoke_check": smoke_out,
            "trace": result.trace,
        }
    finally:
        log(f"{label}: testbed down")
        down(directory)


def cpu_summary() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--madeus-runs", type=int, default=3, help="Madeus runs (at least 2)")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke checks")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    parser.add_argument("--keep", type=Path, help="keep traces and run logs in this directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (the testbed)")
    if not (CACHE / "venv" / ".oslab-ready").is_file():
        parser.error("run assemblies/openstack-lab/prepare first")
    if args.madeus_runs < 2:
        parser.error("--madeus-runs must be at least 2 (the last one is predicted)")

    from madeus.plan import calibrate

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-oslab-"))
    work.mkdir(parents=True, exist_ok=True)
    smoke = not args.no_smoke
    runs = [one_run("madeus-1", work, kolla=False, smoke=smoke)]
    runs.append(one_run("kolla", work, kolla=True, smoke=smoke))
    for n in range(2, args.madeus_runs + 1):
        runs.append(one_run(f"madeus-{n}", work, kolla=False, smoke=smoke))

    _, declared = load_plan_without_inventory()
    madeus_runs = [r for r in runs if r["order"] == "madeus"]
    kolla_run = next(r for r in runs if r["order"] == "kolla-ansible")
    madeus_ms = statistics.median(r["makespan"] for r in madeus_runs)
    # Calibrated on the runs before the last one, predicting the last one.
    calibrated = calibrate(declared, *(r["trace"] for r in madeus_runs[:-1]))
    measured_last = madeus_runs[-1]["makespan"]
    from_kolla = calibrate(declared, kolla_run["trace"])
    result = {
        "benchmark": "openstack-lab: real deployment, Madeus vs Kolla-Ansible order",
        "testbed": "control 1, network 1, compute 1; 25 ms one way (madeus testbed)",
        "transitions": len(declared.transitions),
        "madeus_makespans": [r["makespan"] for r in madeus_runs],
        "madeus_makespan_median": round(madeus_ms, 3),
        "kolla_order_makespan": kolla_run["makespan"],
        "ratio_kolla_over_madeus": round(kolla_run["makespan"] / madeus_ms, 3),
        "reduction": round(1 - madeus_ms / kolla_run["makespan"], 3),
        "prediction": {
            "declared": round(declared.predicted_makespan, 3),
            "calibrated_on_runs": [r["label"] for r in madeus_runs[:-1]],
            "calibrated": round(calibrated.predicted_makespan, 3),
            "measured": measured_last,
            "measured_run": madeus_runs[-1]["label"],
            "error": round((calibrated.predicted_makespan - measured_last) / measured_last, 4),
            "calibrated_on_kolla_run": round(from_kolla.predicted_makespan, 3),
            "kolla_sum_of_durations": round(sum(t.duration for t in from_kolla.transitions), 3),
        },
        "runs": [{k: v for k, v in r.items() if k != "trace"} for r in runs],
        "machine": cpu_summary(),
        "work_dir": str(work),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


def load_plan_without_inventory():  # type: ignore[no-untyped-def]
    """The plan with the declared durations (hosts do not change durations)."""
    from madeus.frontend import load_file
    from madeus.plan import build_plan
    from madeus.resolve import resolve

    module = load_file(MAD)
    assert module.assembly is not None
    deployment = resolve(module.assembly, None)
    return deployment, build_plan(deployment)


if __name__ == "__main__":
    sys.exit(main())
