#!/usr/bin/env python3
"""Madeus against a Kolla-Ansible-style sequential deployment, on the same hosts.

    python bench/bench_kolla_style.py (-i TB/inventory.yml | --testbed [--delay 25ms])
        [--time-scale 0.05] [--repeat N] [-o OUT.json]
        [--mad assemblies/openstack/openstack.mad | --plan PLAN.json] [--skip-madeus]

Both sides run the same transitions, each a `sleep` of its declared duration times
`--time-scale` on the transition's hosts, over SSH:

- Kolla-style: a generated `site.yml` with one play per component, in the order of
  Kolla-Ansible's own `ansible/site.yml`, each play's tasks the component's transitions one
  after another (`command: sleep D`), run by `ansible-playbook` with the linear strategy,
  10 forks, pipelining and ControlPersist. Plays run one after another; inside a play each task
  runs on all the play's hosts at once.
- Madeus: `madeus deploy FILE -i INV --simulate=remote --time-scale X --trace T.json`: every
  transition as soon as its dependencies allow.

The plan (transitions, durations, hosts) comes from `madeus plan FILE -i INV --format json`
(or `--plan`). Prints one JSON object with both makespans (medians over `--repeat` runs, the
two sides alternating) and their ratio (the journal paper measured 529 s for Kolla-Ansible and
150 s for Madeus on real hardware: a ratio of 3.5).

The inventory is copied into the work directory first (with its `known_hosts`, and private key
paths made absolute); Madeus and `ansible-playbook` both read that copy. The OpenStack assembly
places each service on Kolla-Ansible's service groups: Madeus also reads
`assemblies/openstack/kolla-groups.yml`, so a testbed's inventory (control, network, compute)
works as it is.

`--testbed` brings a testbed up for the run (control, network and compute, one host each,
`--delay` one way; needs root) and tears it down at the end, in place of `-i`.
"""

from __future__ import annotations

import argparse
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
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAD = ROOT / "assemblies" / "openstack" / "openstack.mad"
# Kolla-Ansible's service groups, which the OpenStack assembly places its services on.
KOLLA_GROUPS = ROOT / "assemblies" / "openstack" / "kolla-groups.yml"

# The order of plays in Kolla-Ansible's ansible/site.yml (openstack/kolla-ansible, commit
# 000b3474316c7d79960a0a4b5ff7a95edb21ce59): gather-facts.yml; "Group hosts based on
# configuration"; prechecks; common; chrony; loadbalancer (haproxy and keepalived); collectd;
# zookeeper; influxdb; telegraf; redis; mariadb; memcached; prometheus; iscsi; multipathd;
# rabbitmq; rabbitmq (outward); qdrouterd; etcd; keystone; elasticsearch; kibana; kafka;
# storm; swift; glance; ironic; cinder; placement; nova.yml (import_playbook); openvswitch;
# ovs-dpdk; ovn; neutron; kuryr; hacluster; heat; horizon; ... Our component names map to
# these plays (`facts` is gather-facts.yml, `haproxy` the loadbalancer play).
KOLLA_ORDER = (
    "facts",
    "common",
    "chrony",
    "haproxy",
    "collectd",
    "zookeeper",
    "influxdb",
    "telegraf",
    "redis",
    "mariadb",
    "memcached",
    "prometheus",
    "iscsi",
    "multipathd",
    "rabbitmq",
    "qdrouterd",
    "etcd",
    "keystone",
    "elasticsearch",
    "kibana",
    "kafka",
    "storm",
    "swift",
    "glance",
    "ironic",
    "cinder",
    "placement",
    "nova",
    "openvswitch",
    "ovs-dpdk",
    "ovn",
    "neutron",
    "kuryr",
    "hacluster",
    "heat",
    "horizon",
)
ALIASES = {"loadbalancer": "haproxy", "gather-facts": "facts", "gather_facts": "facts"}


def madeus_cmd() -> list[str]:
    exe = shutil.which("madeus", path=str(Path(sys.executable).parent)) or shutil.which("madeus")
    return (
        [exe]
        if exe
        else [sys.executable, "-c", "import sys, madeus.cli; sys.exit(madeus.cli.main())"]
    )


def prepare_inventory(source: Path, work: Path) -> tuple[Path, Path, Path | None]:
    """Copy the inventory into `work` (`inventory.yml`, for Madeus and ansible-playbook alike:
    madeus's additions are variables of `all`). Returns its path twice and the known_hosts file
    copied beside it, if any."""
    data: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    base = source.parent

    def absolute_keys(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ansible_ssh_private_key_file" and isinstance(value, str):
                    path = Path(value).expanduser()
                    node[key] = str(path if path.is_absolute() else base / path)
                else:
                    absolute_keys(value)

    absolute_keys(data)
    madeus_inv = ansible_inv = work / "inventory.yml"
    madeus_inv.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    known = base / "known_hosts"
    if known.is_file():
        shutil.copy(known, work / "known_hosts")  # the SSH backend looks beside the inventory
        return madeus_inv, ansible_inv, work / "known_hosts"
    return madeus_inv, ansible_inv, None


def load_plan(args: argparse.Namespace, inventory: Path) -> dict[str, Any]:
    if args.plan:
        return dict(json.loads(Path(args.plan).read_text(encoding="utf-8")))
    cmd = [*madeus_cmd(), "plan", str(args.mad), "-i", str(inventory), "-i", str(KOLLA_GROUPS)]
    cmd += ["--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"madeus plan failed ({shlex.join(cmd)}):\n{done.stdout}{done.stderr}")
    return dict(json.loads(done.stdout))


def component_of(transition: dict[str, Any]) -> str:
    instance = str(transition.get("instance") or transition["id"].split(".")[0])
    name = instance.split("[")[0].lower()
    return ALIASES.get(name, name)


def ordered_within(transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A component's transitions in an order that respects their `after` (a role's tasks run
    in sequence; parallel transitions of one component become consecutive tasks)."""
    ids = {t["id"] for t in transitions}
    done: set[str] = set()
    ordered: list[dict[str, Any]] = []
    pending = list(transitions)
    while pending:
        for t in pending:
            if all(a in done or a not in ids for a in t.get("after", [])):
                ordered.append(t)
                done.add(t["id"])
                pending.remove(t)
                break
        else:  # a cycle cannot happen in a verified plan; keep the plan's order
            ordered.extend(pending)
            break
    return ordered


def site_yml(plan: dict[str, Any], scale: float) -> tuple[list[dict[str, Any]], list[str]]:
    by_component: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in plan["transitions"]:
        if t.get("behaviour", "deploy") == "deploy":
            by_component[component_of(t)].append(t)
    rank = {name: i for i, name in enumerate(KOLLA_ORDER)}
    first_seen = {name: i for i, name in enumerate(by_component)}
    order = sorted(by_component, key=lambda c: (rank.get(c, len(rank)), first_seen[c]))
    plays = []
    for component in order:
        transitions = ordered_within(by_component[component])
        hosts = list(dict.fromkeys(h for t in transitions for h in t["hosts"]))
        tasks = []
        for t in transitions:
            seconds = float(t.get("duration") or 0) * scale
            task: dict[str, Any] = {
                "name": t["id"],
                "ansible.builtin.command": f"sleep {seconds:.3f}",
            }
            if set(t["hosts"]) != set(hosts):
                task["when"] = f"inventory_hostname in {sorted(t['hosts'])!r}"
            tasks.append(task)
        plays.append(
            {
                "name": f"Apply role {component}",
                "hosts": ":".join(hosts),
                "gather_facts": False,
                "tasks": tasks,
            }
        )
    return plays, order


def ansible_cfg(known_hosts: Path | None, forks: int) -> str:
    ssh_args = "-o ControlMaster=auto -o ControlPersist=60s"
    if known_hosts is not None:
        ssh_args += f" -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    return "\n".join(
        [
            "[defaults]",
            f"forks = {forks}",
            "strategy = linear",
            "gathering = explicit",
            "retry_files_enabled = False",
            "interpreter_python = auto_silent",
            f"host_key_checking = {known_hosts is not None}",
            "",
            "[ssh_connection]",
            "pipelining = True",
            f"ssh_args = {ssh_args}",
            "",
        ]
    )


def run_kolla(
    work: Path, plays: list[dict[str, Any]], inventory: Path, known: Path | None, forks: int
) -> dict[str, Any]:
    site = work / "site.yml"
    site.write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    cfg = work / "ansible.cfg"
    cfg.write_text(ansible_cfg(known, forks), encoding="utf-8")
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    if playbook is None:
        sys.exit(f"ansible-playbook not found in {Path(sys.executable).parent}")
    cmd = [playbook, "-i", str(inventory), str(site)]
    env = {**os.environ, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_NOCOLOR": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / "ansible-playbook.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"ansible-playbook failed ({shlex.join(cmd)}), see {work}/ansible-playbook.log")
    return {"command": f"ANSIBLE_CONFIG={cfg} {shlex.join(cmd)}", "makespan_s": round(wall, 3)}


def run_madeus(work: Path, mad: Path, inventory: Path, scale: float) -> dict[str, Any]:
    trace = work / "madeus-trace.json"
    cmd = [
        *madeus_cmd(),
        "deploy",
        str(mad),
        "-i",
        str(inventory),
        "-i",
        str(KOLLA_GROUPS),
        "--simulate=remote",
        "--time-scale",
        repr(scale),
        "--trace",
        str(trace),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / "madeus-deploy.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"madeus deploy failed ({shlex.join(cmd)}), see {work}/madeus-deploy.log")
    makespan = json.loads(trace.read_text(encoding="utf-8"))["makespan"]
    return {"command": shlex.join(cmd), "makespan_s": makespan, "wall_s": round(wall, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-i", "--inventory", type=Path, help="run on these hosts")
    where.add_argument(
        "--testbed", action="store_true", help="bring a testbed up for the run (needs root)"
    )
    parser.add_argument("--delay", default="25ms", help="--testbed: one-way delay (25ms)")
    parser.add_argument("--mad", type=Path, default=DEFAULT_MAD, help="the assembly (.mad)")
    parser.add_argument("--plan", help="plan JSON (default: `madeus plan --format json`)")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (default 1)")
    parser.add_argument("--skip-madeus", action="store_true")
    parser.add_argument("--skip-kolla", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the generated files here")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="madeus-kolla-"))
    work.mkdir(parents=True, exist_ok=True)
    testbed_dir = work / "tb" if args.testbed else None
    try:
        if testbed_dir is not None:
            from madeus.testbed import load_spec_text, up

            spec = (
                "resources: {control: 1, network: 1, compute: 1}\n"
                f"network_constraints: {{default_delay: {args.delay}, default_rate: 1gbit}}\n"
            )
            up(load_spec_text(spec, "kolla-style-testbed.yml"), testbed_dir)
            args.inventory = testbed_dir / "inventory.yml"
        report = compare(args, work)
    finally:
        if testbed_dir is not None:
            from madeus.testbed import down

            down(testbed_dir)
    return emit(report, args, work)


def emit(report: dict[str, Any], args: argparse.Namespace, work: Path) -> int:
    """Print the report (and write it to `--output`); remove the work directory unless kept
    (`--workdir`, MADEUS_KEEP_WORKDIR)."""
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    if args.workdir is None and not os.environ.get("MADEUS_KEEP_WORKDIR"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    madeus_inv, ansible_inv, known = prepare_inventory(args.inventory, work)
    plan = load_plan(args, madeus_inv)
    plays, order = site_yml(plan, args.time_scale)
    report: dict[str, Any] = {
        "benchmark": "kolla-style",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "inventory": "testbed: control, network, compute, " + args.delay + " one way"
        if args.testbed
        else str(args.inventory),
        "assembly": plan.get("assembly"),
        "time_scale": args.time_scale,
        "transitions": len(plan["transitions"]),
        "predicted_makespan_s": round(float(plan["predicted_makespan"]) * args.time_scale, 3),
        "sequential_sum_s": round(
            sum(float(t.get("duration") or 0) for t in plan["transitions"]) * args.time_scale, 3
        ),
        "play_order": order,
        "plays": len(plays),
        "tasks": sum(len(p["tasks"]) for p in plays),
    }
    kolla_runs: list[dict[str, Any]] = []
    madeus_runs: list[dict[str, Any]] = []
    for _ in range(args.repeat):  # alternate, so that load drifts hit both sides alike
        if not args.skip_kolla:
            kolla_runs.append(run_kolla(work, plays, ansible_inv, known, args.forks))
        if not args.skip_madeus:
            madeus_runs.append(run_madeus(work, args.mad.resolve(), madeus_inv, args.time_scale))
    for name, runs in (("kolla_style", kolla_runs), ("madeus", madeus_runs)):
        if runs:
            report[name] = {
                "command": runs[0]["command"],
                "makespans_s": [r["makespan_s"] for r in runs],
                "makespan_s": statistics.median(r["makespan_s"] for r in runs),
            }
    if madeus_runs:
        # The whole command, as for ansible-playbook: start-up, verification, connections.
        report["madeus"]["wall_s"] = statistics.median(r["wall_s"] for r in madeus_runs)
    if kolla_runs and madeus_runs:
        kolla = report["kolla_style"]["makespan_s"]
        report["ratio"] = round(kolla / report["madeus"]["makespan_s"], 2)
        report["ratio_wall_clock"] = round(kolla / report["madeus"]["wall_s"], 2)
        report["target"] = "madeus at least 3x faster"
        report["target_met"] = report["ratio"] >= 3
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


if __name__ == "__main__":
    sys.exit(main())
