#!/usr/bin/env python3
"""Overheads of the remote backends: what one action costs on top of the work it does.

    python bench/bench_remote.py [-n 200] [--parallel 64] [--ansible-runs 5] [-o OUT.json]
    python bench/bench_remote.py --inventory tb/inventory.yml --host control-1

Without `--inventory`, a real sshd is started on 127.0.0.1 (tests/sshd_helpers.py; needs root)
with two host names pointing at it. Prints one JSON object:

- `tcp_connect_ms`: TCP connect time to the host's SSH port (one round trip, when nothing
  stands in between: a testbed's delay proxy answers the connect itself);
- `ssh_echo_rtt_ms`: one round trip through the SSH connection (a line echoed by `cat`);
- `ssh_connect_ms`: median time of a first job on a fresh backend (TCP, SSH handshake, auth,
  one command);
- `ssh_action_ms`: `true` run N times one after another over one connection, through
  `SshBackend.run` (wrapper, log files, outcome): median, mean, p95; each command goes out on
  a spare channel (opened ahead), so this is about one round trip;
- `ssh_action_no_spares_ms`: the same with `spare_channels=0` (a channel opened per command:
  about two round trips);
- `raw_channel_ms`: the same with bare asyncssh `conn.run("true")`, the floor for one channel;
- `parallel`: M jobs at once on one host (channels capped by `max_sessions`): wall time,
  jobs per second, connections opened;
- `connections_per_run`: connections opened by a run of many jobs over the hosts;
- `ansible_action_s`: one job of the Ansible backend (a play, forked by its worker) of a
  one-task play (`command: true`), over SSH and on the local host: first run and median of
  the next ones (the worker started, ControlPersist warm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # sshd_helpers

from madeus.backends.base import Job  # noqa: E402
from madeus.inventory import Inventory, load_inventory  # noqa: E402
from madeus.model import AnsibleAction, ShellAction  # noqa: E402


def summary(samples: list[float], scale: float = 1000.0) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered) * scale, 3),
        "mean": round(statistics.fmean(ordered) * scale, 3),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * scale, 3),
        "min": round(ordered[0] * scale, 3),
        "n": len(ordered),
    }


def tcp_connect_times(address: str, port: int, n: int = 50) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection((address, port), timeout=10):
            times.append(time.perf_counter() - start)
    return times


def make_job(inventory: Inventory, host: str, action: Any, logs: Path, i: int = 0) -> Job:
    return Job(
        id=f"bench.t{i}",
        instance="bench",
        transition=f"t{i}",
        behaviour="deploy",
        action=action,
        host=inventory.hosts[host],
        stdout_path=logs / f"bench.t{i}@{host}.out",
        stderr_path=logs / f"bench.t{i}@{host}.err",
        workdir=logs,
    )


async def bench_ssh(
    inventory: Inventory, hosts: list[str], n: int, parallel: int, logs: Path
) -> dict[str, Any]:
    from madeus.backends.ssh import SshBackend

    host = hosts[0]
    true_job = make_job(inventory, host, ShellAction("true"), logs)
    results: dict[str, Any] = {}

    firsts = []
    for _ in range(5):
        backend = SshBackend(inventory)
        start = time.perf_counter()
        outcome = await backend.run(true_job)
        firsts.append(time.perf_counter() - start)
        assert outcome.ok, outcome
        await backend.aclose()
    results["ssh_connect_ms"] = summary(firsts)

    backend = SshBackend(inventory)
    assert (await backend.run(true_job)).ok  # connect first: measure actions only
    # One network round trip as SSH sees it (a TCP connect is no measure behind a proxy):
    # a line sent to a remote `cat` and read back, on an open channel.
    conn = backend._connections[host].conn
    echo = await conn.create_process("cat")
    rtts = []
    for _ in range(20):
        start = time.perf_counter()
        echo.stdin.write("x\n")
        await echo.stdout.readline()
        rtts.append(time.perf_counter() - start)
    echo.stdin.write_eof()
    await echo.wait_closed()
    results["ssh_echo_rtt_ms"] = summary(rtts)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        outcome = await backend.run(true_job)
        times.append(time.perf_counter() - start)
        assert outcome.ok, outcome
    results["ssh_action_ms"] = summary(times)
    results["ssh_action_spares_used"] = backend.spares_used

    # The same without spare channels: a channel opened for every command (two round trips).
    cold = SshBackend(inventory, spare_channels=0)
    assert (await cold.run(true_job)).ok
    times = []
    for _ in range(n):
        start = time.perf_counter()
        outcome = await cold.run(true_job)
        times.append(time.perf_counter() - start)
        assert outcome.ok, outcome
    results["ssh_action_no_spares_ms"] = summary(times)
    await cold.aclose()

    # The floor: a bare channel with the same connection, no wrapper, no logs.
    raw = []
    for _ in range(n):
        start = time.perf_counter()
        completed = await conn.run("true", check=False)
        raw.append(time.perf_counter() - start)
        assert completed.exit_status == 0
    results["raw_channel_ms"] = summary(raw)
    await backend.aclose()

    backend = SshBackend(inventory)
    jobs = [replace(true_job, id=f"bench.p{i}") for i in range(parallel)]
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(backend.run(job) for job in jobs))
    wall = time.perf_counter() - start
    assert all(o.ok for o in outcomes)
    results["parallel"] = {
        "jobs": parallel,
        "max_sessions": backend.max_sessions,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(parallel / wall, 1),
        "connections_opened": backend.connections_opened,
    }
    await backend.aclose()

    backend = SshBackend(inventory)
    many = [
        make_job(inventory, hosts[i % len(hosts)], ShellAction("true"), logs, i)
        for i in range(10 * len(hosts))
    ]
    outcomes = await asyncio.gather(*(backend.run(job) for job in many))
    assert all(o.ok for o in outcomes)
    results["connections_per_run"] = {
        "hosts": len(hosts),
        "jobs": len(many),
        "connections_opened": backend.connections_opened,
    }
    await backend.aclose()
    return results


async def bench_ansible(inventory: Inventory, host: str, runs: int, logs: Path) -> dict[str, Any]:
    from madeus.backends.ansible import AnsibleBackend

    (logs / "one.yml").write_text("- ansible.builtin.command: 'true'\n")
    results: dict[str, Any] = {}
    for label, inv, name in (
        ("ssh", inventory, host),
        ("local", Inventory.local_default(), "localhost"),
    ):
        backend = AnsibleBackend(inv)
        times = []
        for i in range(runs + 1):
            job = make_job(inv, name, AnsibleAction(tasks="one.yml"), logs, i)
            start = time.perf_counter()
            outcome = await backend.run(job)
            times.append(time.perf_counter() - start)
            assert outcome.ok, outcome
        await backend.aclose()
        results[label] = {
            "first_s": round(times[0], 3),
            "next_s": summary(times[1:], scale=1.0),
        }
    return results


@contextmanager
def loopback_hosts(tmp: Path, clean_home: bool) -> Iterator[tuple[Inventory, list[str]]]:
    from sshd_helpers import running_sshd

    with running_sshd(tmp, hosts=("node-1", "node-2"), clean_home=clean_home) as sshd:
        if not clean_home:
            # root's ~/.bashrc puts pyenv shims first on PATH, and Ansible's interpreter
            # discovery would pick a shim of a Python that is not installed.
            sshd.extra_host_vars["ansible_python_interpreter"] = "/usr/bin/python3"
        yield sshd.inventory(), list(sshd.host_names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", "-i", help="use these hosts instead of a loopback sshd")
    parser.add_argument("--host", help="the host to measure (default: the first one)")
    parser.add_argument("-n", type=int, default=200, help="sequential actions (default 200)")
    parser.add_argument("--parallel", type=int, default=64, help="parallel jobs (default 64)")
    parser.add_argument("--ansible-runs", type=int, default=5, help="Ansible runs (default 5)")
    parser.add_argument(
        "--login-rc",
        action="store_true",
        help="loopback sshd: keep root's real HOME, so bash reads ~/.bashrc for every command",
    )
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="madeus-bench-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        report: dict[str, Any] = {
            "benchmark": "remote",
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        }

        def run_all(inventory: Inventory, hosts: list[str]) -> None:
            host = args.host or hosts[0]
            target = inventory.hosts[host]
            report["target"] = f"{host} ({target.address}:{target.port})"
            report["tcp_connect_ms"] = summary(tcp_connect_times(target.address, target.port))
            ordered = [host, *[h for h in hosts if h != host]]
            report.update(asyncio.run(bench_ssh(inventory, ordered, args.n, args.parallel, logs)))
            if args.ansible_runs > 0:
                report["ansible_action_s"] = asyncio.run(
                    bench_ansible(inventory, host, args.ansible_runs, logs)
                )

        if args.inventory:
            inventory = load_inventory(args.inventory)
            hosts = [h for h, v in inventory.hosts.items() if v.connection == "ssh"]
            report["setup"] = f"inventory {args.inventory}"
            run_all(inventory, hosts)
        else:
            report["setup"] = "loopback sshd (OpenSSH), " + (
                "login shell reads root's ~/.bashrc" if args.login_rc else "empty HOME"
            )
            with loopback_hosts(tmp, clean_home=not args.login_rc) as (inventory, hosts):
                run_all(inventory, hosts)

    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
