#!/usr/bin/env python3
"""Ansible actions at scale: madeus against `ansible-playbook` on the same testbed hosts.

    sudo python bench/bench_ansible_scale.py --case openstack [--repeat N] [-o OUT.json]
    sudo python bench/bench_ansible_scale.py --case agents [--repeat N] [-o OUT.json]
    (either with --module raw: see below)

Both cases bring up a testbed of their own (needs root), run the two sides alternately on the
same hosts, tear the testbed down, and print one JSON object.

- `openstack`: 101 hosts, `control-1` (10 ms one way) and 100 `edge` hosts in 10 sites (10 to
  150 ms one way). The OpenStack assembly's 31 deploy transitions and their dependencies
  (`madeus plan assemblies/openstack/openstack.mad`), each action an Ansible task file sleeping
  the transition's reference duration times `--time-scale` (0.05): `facts`, `common` and
  `openvswitch` on all 101 hosts, every other service on `control-1`. Against it, Kolla's
  order run by `ansible-playbook`: one play per component in the order of Kolla-Ansible's
  site.yml, each play the component's tasks (bench_kolla_style.site_yml), forks = hosts.
- `agents`: 21 hosts, `reg-1` and 10 `near` hosts at 10 ms, 10 `far` hosts at 150 ms one way.
  A `Registry` (one role, `sleep 1`) on `reg-1`, an `Agent` on the 20 others: five one-task
  roles of `sleep 1`, two of them in parallel, the last two needing the registry (predicted
  4.0 s). Against it, `ansible-playbook` running the registry's task, then the agents' five
  tasks per host in sequence (strategy free, forks 21).

`--module raw` makes every sleep a `raw` task instead of `command` (both sides): no Python on
the emulated hosts, whose CPU is this machine's, so that what is measured is the orchestration
rather than the hosts' module starts (on real hosts, each has CPUs of its own).

Both sides use pipelining and ControlPersist, with the same inventory and known_hosts; each run
opens its own SSH masters (a control path directory of its own). Per run:
the wall clock of the command, the CPU time of the command and everything it started on this
machine (`RUSAGE_CHILDREN`: Ansible's processes included; the hosts' sshd excluded), and for
madeus the trace's makespan and its prediction. Reported: medians, the ratios, and madeus's
controller CPU per Ansible job (jobs: transitions x hosts) beside `ansible-playbook`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kolla_style import ansible_cfg, emit, madeus_cmd, site_yml

ROOT = Path(__file__).resolve().parent.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
EVERYWHERE = ("facts", "common", "openvswitch")  # on all hosts; the rest on control-1


def openstack_testbed() -> str:
    delays = [10 + 140 * i // 9 for i in range(10)]  # 10 ... 150 ms one way
    resources = {"control": 1, **{f"edge{i}": 10 for i in range(10)}}
    constraints = [{"dst": f"edge{i}", "delay": f"{d}ms"} for i, d in enumerate(delays)]
    sites = {"central": ["control"], **{f"site{i}": [f"edge{i}"] for i in range(10)}}
    return yaml.safe_dump(
        {
            "resources": resources,
            "network_constraints": {
                "default_delay": "10ms",
                "default_rate": "1gbit",
                "constraints": constraints,
            },
            "sites": sites,
        },
        sort_keys=False,
    )


def agents_testbed() -> str:
    return yaml.safe_dump(
        {
            "resources": {"reg": 1, "near": 10, "far": 10},
            "network_constraints": {
                "default_delay": "10ms",
                "default_rate": "1gbit",
                "constraints": [{"dst": "far", "delay": "150ms"}],
            },
            "sites": {"a": ["reg", "near"], "b": ["far"]},
        },
        sort_keys=False,
    )


# --- the openstack case --------------------------------------------------------------------


def openstack_plan() -> dict[str, Any]:
    """The plan of the OpenStack assembly (only its transitions, their durations and
    dependencies are used)."""
    cmd = [*madeus_cmd(), "plan", str(OPENSTACK), "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


SLEEP = {"command": "ansible.builtin.command", "raw": "ansible.builtin.raw"}


def sleep_yaml(name: str, seconds: float, module: str) -> str:
    return f"- name: {name}\n  {SLEEP[module]}: sleep {seconds:.3f}\n"


def openstack_files(work: Path, plan: dict[str, Any], scale: float, module: str) -> Path:
    """An assembly with the plan's transitions and dependencies, each an Ansible task file
    sleeping its duration x `scale`: one component per transition, a service port per
    dependency. Returns the `.mad` file."""
    sleeps = work / "sleeps"
    sleeps.mkdir(exist_ok=True)
    lines = []
    instances = []
    connects = []
    index = {t["id"]: f"t{i}" for i, t in enumerate(plan["transitions"])}
    for t in plan["transitions"]:
        name = index[t["id"]]
        seconds = float(t["duration"]) * scale
        (sleeps / f"{name}.yml").write_text(sleep_yaml(t["id"], seconds, module))
        uses = "".join(
            f"    use service d{j} for run\n" for j, _ in enumerate(t.get("after") or ())
        )
        lines.append(
            f"component C{name} {{\n"
            "    places a*, b\n"
            f'    transition run: a -> b  ansible tasks "sleeps/{name}.yml"  ~{seconds:.3f}s\n'
            "    provide service done at b\n"
            f"{uses}}}\n"
        )
        target = "all" if t["instance"] in EVERYWHERE else "control"
        instances.append(f"    {name} = C{name} on {target}   # {t['id']}")
        for j, after in enumerate(t.get("after") or ()):
            connects.append(f"    connect {name}.d{j} -> {index[after]}.done")
    mad = work / "openstack-sleeps.mad"
    body = "\n".join([*lines, "assembly openstack_sleeps {", *instances, *connects, "}", ""])
    mad.write_text(body)
    return mad


def openstack_site(
    plan: dict[str, Any], hosts: list[str], scale: float, module: str
) -> list[dict[str, Any]]:
    """Kolla's order: bench_kolla_style's site.yml, with the placement above."""
    control = [h for h in hosts if h.startswith("control")]
    placed = {
        **plan,
        "transitions": [
            {**t, "hosts": hosts if t["instance"] in EVERYWHERE else control}
            for t in plan["transitions"]
        ],
    }
    plays, _ = site_yml(placed, scale)
    for play in plays:  # one pattern per play, as short as it can be
        play["hosts"] = "all" if set(play["hosts"].split(":")) == set(hosts) else "control"
        for task in play["tasks"]:
            task[SLEEP[module]] = task.pop(SLEEP["command"])
    return plays


# --- the agents case -----------------------------------------------------------------------


AGENTS_MAD = """\
component Registry() {
    places off*, up
    transition start: off -> up  ansible role "sleep"  ~1s
    provide service registry at up
}

component Agent() {
    places initiated*, installed, configured, running, checked
    transition install: initiated -> installed  ansible role "sleep"  ~1s
    transition conf_a: installed -> configured  ansible role "sleep"  ~1s
    transition conf_b: installed -> configured  ansible role "sleep"  ~1s
    transition start: configured -> running     ansible role "sleep"  ~1s
    transition check: running -> checked       ansible role "sleep"  ~1s
    use service registry for start, check
}

assembly agents {
    registry = Registry on reg
    agent = Agent on "near:far"
    connect agent.registry -> registry.registry
}
"""


def agents_files(work: Path, module: str) -> Path:
    role = work / "roles" / "sleep" / "tasks"
    role.mkdir(parents=True, exist_ok=True)
    (role / "main.yml").write_text(sleep_yaml("sleep", 1, module))
    mad = work / "agents.mad"
    mad.write_text(AGENTS_MAD)
    return mad


def agents_site(module: str) -> list[dict[str, Any]]:
    task = {"name": "sleep", SLEEP[module]: "sleep 1.000"}
    return [
        {"name": "registry", "hosts": "reg", "gather_facts": False, "tasks": [task]},
        {
            "name": "agents",
            "hosts": "near:far",
            "gather_facts": False,
            "strategy": "free",
            "tasks": [dict(task, name=step) for step in ("install", "a", "b", "start", "check")],
        },
    ]


# --- running -------------------------------------------------------------------------------


def machine(load_start: float) -> dict[str, Any]:
    """The machine a testbed benchmark ran on, and its 1-minute load average before the testbed
    came up (`load_start`) and now."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
    }


def busy_cpu_s() -> float:
    """CPU time the whole machine spent not idle so far (/proc/stat): the emulated hosts run
    their tasks on the same cores as the controller."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, float]:
    """Wall clock and CPU (this process's children: the command and all it waited for), and
    the whole machine's busy CPU meanwhile (the hosts' side included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    machine = busy_cpu_s() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"failed ({' '.join(cmd)}): see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "machine_cpu_s": round(machine, 3)}


def run_case(args: argparse.Namespace, work: Path, tb: Path) -> dict[str, Any]:
    inventory = tb / "inventory.yml"
    from madeus.inventory import load_inventory

    hosts = sorted(load_inventory([str(inventory)]).hosts)
    if args.case == "openstack":
        plan = openstack_plan()
        mad = openstack_files(work, plan, args.time_scale, args.module)
        plays = openstack_site(plan, hosts, args.time_scale, args.module)
    else:
        mad = agents_files(work, args.module)
        plays = agents_site(args.module)
    site = work / "site.yml"
    site.write_text(yaml.safe_dump(plays, sort_keys=False))
    known = tb / "known_hosts"
    cfg = work / "ansible.cfg"
    cfg.write_text(ansible_cfg(known if known.is_file() else None, len(hosts)))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PYTHONWARNINGS": "ignore"}
    ansible_env = {**env, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_ROLES_PATH": str(work / "roles")}
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None
    ansible_cmd = [playbook, "-i", str(inventory), str(site)]
    runs: dict[str, list[dict[str, float]]] = {"madeus": [], "ansible": []}
    jobs = 0
    predicted = 0.0
    for n in range(args.repeat):
        trace = work / f"trace-{n}.json"
        madeus = [*madeus_cmd(), "deploy", str(mad), "-i", str(inventory), "--trace", str(trace)]
        state = work / f"state-{n}"
        state.mkdir()
        # Each run opens its own SSH masters: none left by the previous run (ControlPersist
        # keeps them 60 s) may serve the next.
        cold = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / f"cp-madeus-{n}")}
        got = timed(madeus, state, {**env, **cold}, work / f"madeus-{n}.log")
        document = json.loads(trace.read_text())
        got["makespan_s"] = document["makespan"]
        jobs = len(document["events"])
        predicted = _predicted(work / f"madeus-{n}.log")
        runs["madeus"].append(got)
        cold = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / f"cp-ansible-{n}")}
        ansible_log = work / f"ansible-{n}.log"
        runs["ansible"].append(timed(ansible_cmd, work, {**ansible_env, **cold}, ansible_log))
        print(f"run {n + 1}: madeus {got}, ansible-playbook {runs['ansible'][-1]}", file=sys.stderr)

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[side]), 3)

    madeus_wall, ansible_wall = median("madeus", "wall_s"), median("ansible", "wall_s")
    madeus_cpu, ansible_cpu = median("madeus", "cpu_s"), median("ansible", "cpu_s")
    machine = {side: median(side, "machine_cpu_s") for side in runs}
    makespan = median("madeus", "makespan_s")
    return {
        "case": args.case,
        "hosts": len(hosts),
        "jobs": jobs,
        "time_scale": args.time_scale if args.case == "openstack" else None,
        "module": args.module,
        "runs": runs,
        "madeus_wall_s": madeus_wall,
        "madeus_makespan_s": makespan,
        "madeus_predicted_s": predicted,
        "makespan_over_prediction": round(makespan / predicted, 3) if predicted else None,
        "ansible_wall_s": ansible_wall,
        "speedup_wall": round(ansible_wall / madeus_wall, 2),
        "madeus_cpu_s": madeus_cpu,
        "ansible_cpu_s": ansible_cpu,
        "machine_cpu_s": machine,
        "madeus_cpu_per_job_s": round(madeus_cpu / jobs, 4) if jobs else None,
        "extra_cpu_per_job_s": round((madeus_cpu - ansible_cpu) / jobs, 4) if jobs else None,
        "commands": {"madeus": " ".join(madeus), "ansible": " ".join(ansible_cmd)},
    }


def _predicted(log: Path) -> float:
    for line in log.read_text().splitlines():
        if line.startswith("predicted:"):
            return float(line.split()[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("openstack", "agents"), default="openstack")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--module", choices=tuple(SLEEP), default="command")
    parser.add_argument("--workdir", type=Path, help="keep the generated files here")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_ansible_scale.py brings up a testbed: run it as root")
    from madeus.testbed import down, load_spec_text, up

    work = args.workdir or Path(tempfile.mkdtemp(prefix="madeus-ansible-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    tb = work / "tb"
    spec = openstack_testbed() if args.case == "openstack" else agents_testbed()
    load_start = os.getloadavg()[0]
    up(load_spec_text(spec, f"{args.case}-testbed.yml"), tb)
    try:
        report = run_case(args, work, tb)
    finally:
        down(tb)
    report["machine"] = machine(load_start)
    return emit(report, args, work)


if __name__ == "__main__":
    sys.exit(main())
