#!/usr/bin/env python3
"""Day two: what `madeus plan` and `madeus apply` cost against redeploying. Prints one JSON
document.

    python bench/bench_apply.py [--sites 10] [--time-scale 0.01] [--components 10000]

- `add_site`: OpenStack for the edge (assemblies/openstack-lab/edge.mad: a central site and a
  family over the sites) deployed on `--sites` edge sites under `--simulate` (one host per
  site, nothing connects), then one more site in the inventory: `madeus plan` (wall time of
  the command, the transitions of the synthesised program), `madeus apply --simulate` (wall,
  makespan, jobs run) against `madeus deploy --simulate --redeploy` of the same files (wall,
  makespan, jobs run). Times of simulated actions are their declared durations x
  `--time-scale`.
- `plan_10k`: a chain of `--components` instances of one type with `on change of`, recorded as
  deployed (the state written by the library: nothing runs), then one parameter changed and one
  instance added: `madeus plan` end to end (parse, resolve, compare, synthesise, verify,
  predict), wall time and peak RSS of the process.
- `rolling`: a service on `--hosts` hosts and a client using it, deployed under `--simulate`,
  then its version changed (`on change of version: stop, update`), once with `serial
  --serial` on the service and once without: the program, whether the client pauses, the
  predicted makespan against the makespan of `madeus apply --simulate`, and the most hosts
  of the service changing at once in the trace.
Each command runs in a fresh process (`python -m madeus.cli`-style), in a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EDGE = ROOT / "assemblies" / "openstack-lab" / "edge.mad"
MADEUS = [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())"]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [*MADEUS, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"madeus {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout


def _inventory(path: Path, sites: int) -> None:
    lines = ["all:", "  hosts:", "    control-1: {ansible_connection: local}"]
    lines += [f"    edge{i}-1: {{ansible_connection: local}}" for i in range(1, sites + 1)]
    lines += ["  vars:", "    madeus_sites:", "      central: [control]"]
    lines += [f"      edge{i}: [edge{i}]" for i in range(1, sites + 1)]
    lines += ["control:", "  hosts:", "    control-1:"]
    for i in range(1, sites + 1):
        lines += [f"edge{i}:", "  hosts:", f"    edge{i}-1:"]
    path.write_text("\n".join(lines) + "\n")


def _trace(out: str, cwd: Path) -> dict[str, Any]:
    line = next(x for x in out.splitlines() if x.startswith("trace:"))
    path = line.split(":", 1)[1].strip().split(",")[0]
    loaded: dict[str, Any] = json.loads((cwd / path).read_text())
    return loaded


def _passwords() -> dict[str, str]:
    """A value for every `env("...")` the lab's components read (nothing runs: simulated)."""
    names: set[str] = set()
    for mad in (EDGE.parent / "components").glob("*.mad"):
        names.update(re.findall(r'env\("([A-Z0-9_]+)"\)', mad.read_text()))
    return {name: "bench-only" for name in sorted(names)}


def add_site(sites: int, scale: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = {**os.environ, **_passwords(), "MADEUS_STATE": str(cwd / "state")}
        inventory = cwd / "inventory.yml"
        _inventory(inventory, sites)
        sim = ["--simulate", "--time-scale", str(scale)]
        _run(["deploy", str(EDGE), "-i", str(inventory), *sim], cwd, env)
        _inventory(inventory, sites + 1)
        plan_wall, out = _run(
            ["plan", str(EDGE), "-i", str(inventory), "--simulate", "--format", "json"], cwd, env
        )
        plan = json.loads(out)
        apply_wall, out = _run(["apply", str(EDGE), "-i", str(inventory), *sim], cwd, env)
        applied = _trace(out, cwd)
        _, out = _run(["plan", str(EDGE), "-i", str(inventory), "--simulate"], cwd, env)
        unchanged = "No changes" in out
        redeploy_wall, out = _run(
            ["deploy", str(EDGE), "-i", str(inventory), *sim, "--redeploy"], cwd, env
        )
        redeployed = _trace(out, cwd)
    return {
        "sites_before": sites,
        "time_scale": scale,
        "plan": {
            "wall_s": round(plan_wall, 3),
            "added": plan["changes"]["add"],
            "program_transitions": len(plan["transitions"]),
            "predicted_makespan_s": plan["predicted_makespan"],
        },
        "apply": {
            "wall_s": round(apply_wall, 3),
            "makespan_s": round(applied["makespan"], 3),
            "jobs": len(applied["events"]),
            "then_plan_says_no_changes": unchanged,
        },
        "redeploy": {
            "wall_s": round(redeploy_wall, 3),
            "makespan_s": round(redeployed["makespan"], 3),
            "jobs": len(redeployed["events"]),
        },
        "ratios": {
            "wall_apply_over_redeploy": round(apply_wall / redeploy_wall, 3),
            "jobs_apply_over_redeploy": round(
                len(applied["events"]) / len(redeployed["events"]), 4
            ),
        },
    }


CHAIN = """
component Svc(v: int = 1) {
    places off*, on, stopped
    transition start: off -> on  shell "true"  ~1s
    transition stop: on -> stopped  shell "true"  ~0.5s  behaviour stop
    transition restart: stopped -> on  shell "true"  ~0.5s  behaviour update
    provide service api at on
    use service up optional for start
    on change of v: stop, update
}
"""


def _chain(n: int, changed: bool) -> str:
    lines = [CHAIN, "assembly chain {"]
    for i in range(n):
        v = "(v = 2)" if changed and i == n // 2 else ""
        lines.append(f"    s{i} = Svc{v}")
        if i:
            lines.append(f"    connect s{i}.up -> s{i - 1}.api")
    if changed:
        lines.append(f"    s{n} = Svc")
        lines.append(f"    connect s{n}.up -> s{n - 1}.api")
    lines.append("}")
    return "\n".join(lines) + "\n"


_RECORD = """
import sys
from madeus import state
from madeus.engine.journal import JournalState, state_dir
from madeus.frontend.load import load_file
from madeus.reconfig.state import deployed
from madeus.resolve import resolve
path, base = sys.argv[1], sys.argv[2]
deployment = resolve(load_file(path).assembly)
record = state.record_of(deployed(deployment), JournalState(), file=path, inventory=None,
                         complete=True)
state.save(record, state_dir(path, None, base=base))
"""


# `madeus` in this process, then its peak RSS (KiB) as the last line of standard error.
_MEASURED = """
import resource, sys
from madeus.cli import main
sys.argv[0] = "madeus"
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def plan_10k(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        file = cwd / "chain.mad"
        file.write_text(_chain(n, changed=False))
        base = cwd / "state"
        subprocess.run([sys.executable, "-c", _RECORD, str(file), str(base)], check=True)
        file.write_text(_chain(n, changed=True))
        env = {**os.environ, "MADEUS_STATE": str(base)}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED, "plan", str(file), "--format", "json"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"madeus plan failed:\n{done.stderr}")
        document = json.loads(done.stdout)
        peak = int(done.stderr.strip().splitlines()[-1])
    return {
        "components": n,
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(peak / 1024, 1),
        "changes": {k: document["changes"][k] for k in ("add", "change")},
        "program": document["program"],
        "predicted_makespan_s": document["predicted_makespan"],
    }


ROLLING = """
component Api(version: str = "1") {
    places off*, serving, stopped
    transition start: off -> serving  shell "true"  ~1s
    transition stop: serving -> stopped  shell "true"  ~1s  behaviour stop
    transition restart: stopped -> serving  shell "true"  ~2s  behaviour update
    provide service api at serving
    on change of version: stop, update
}
component Client {
    places off*, using, paused
    transition start: off -> using  shell "true"  ~1s
    transition pause: using -> paused  shell "true"  ~0.5s  behaviour stop
    transition resume: paused -> using  shell "true"  ~0.5s  behaviour resume
    use service api for start, using
}
assembly rolling {
    api = Api(version = "VERSION") on web SERIAL
    client = Client on client-1
    connect client.api -> api.api
}
"""


def _most_at_once(events: list[dict[str, Any]], instance: str) -> int:
    """The most jobs of `instance` (its batches included) running at the same moment."""
    edges = []
    for e in events:
        if e["id"].split(".")[0].split("#")[0] == instance:
            edges += [(e["start"], 1), (e["end"], -1)]
    most = now = 0
    for _, step in sorted(edges):  # an end before a start at the same time
        now += step
        most = max(most, now)
    return most


def rolling(hosts: int, serial: int, scale: float) -> dict[str, Any]:
    found: dict[str, Any] = {"hosts": hosts, "serial": serial, "time_scale": scale}
    for label, clause in (("with_serial", f"serial {serial}"), ("without_serial", "")):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            env = {**os.environ, "MADEUS_STATE": str(cwd / "state")}
            inventory = cwd / "inventory.yml"
            inventory.write_text(
                "all:\n  hosts:\n    client-1: {ansible_connection: local}\n"
                "  children:\n    web:\n      hosts:\n"
                + "".join(f"        web-{k}: {{ansible_connection: local}}\n" for k in range(hosts))
            )
            file = cwd / "rolling.mad"
            text = ROLLING.replace("SERIAL", clause)
            file.write_text(text.replace("VERSION", "1"))
            sim = ["-i", str(inventory), "--simulate", "--time-scale", str(scale)]
            _run(["deploy", str(file), *sim], cwd, env)
            file.write_text(text.replace("VERSION", "2"))
            plan_wall, out = _run(
                ["plan", str(file), "-i", str(inventory), "--simulate", "--format", "json"],
                cwd,
                env,
            )
            plan = json.loads(out)
            wall, out = _run(["apply", str(file), *sim], cwd, env)
            trace = _trace(out, cwd)
        predicted = plan["predicted_makespan"]
        found[label] = {
            "program": plan["program"],
            "plan_wall_s": round(plan_wall, 3),
            "client_pauses": any("client pauses" in n for n in plan["notes"]),
            "predicted_makespan_s": predicted,
            "apply_wall_s": round(wall, 3),
            "makespan_s": round(trace["makespan"], 3),
            "makespan_over_prediction": round(trace["makespan"] / (predicted * scale), 3),
            "hosts_changing_at_once_max": _most_at_once(trace["events"], "api"),
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--components", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--serial", type=int, default=5)
    parser.add_argument("--only", choices=("add_site", "plan_10k", "rolling"), action="append")
    args = parser.parse_args()
    wanted = args.only or ["add_site", "plan_10k", "rolling"]
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    }
    if "add_site" in wanted:
        result["add_site"] = add_site(args.sites, args.time_scale)
    if "plan_10k" in wanted:
        result["plan_10k"] = plan_10k(args.components)
    if "rolling" in wanted:
        result["rolling"] = rolling(args.hosts, args.serial, args.time_scale)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
