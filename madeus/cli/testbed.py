"""`madeus testbed up|down|status`: emulated multi-site hosts on this machine (needs root)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from madeus.cli._common import EXIT_ERRORS, EXIT_OK, reports_errors


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "testbed",
        help="emulate a multi-site testbed on this machine (network namespaces, sshd, delays)",
        description="Build, inspect and remove a local testbed: one network namespace, "
        "copy-on-write root and sshd per host, latency through delay proxies. Needs root.",
    )
    sub = p.add_subparsers(dest="testbed_verb", metavar="SUBVERB")
    sub.required = True

    up = sub.add_parser("up", help="create the hosts of TESTBED.yml; write DIR/inventory.yml")
    up.add_argument("spec", metavar="TESTBED.yml")
    up.add_argument("-o", "--output", required=True, metavar="DIR", help="state, keys, inventory")
    up.set_defaults(func=run_up)

    down = sub.add_parser("down", help="remove everything the testbed in DIR created")
    down.add_argument("dir", metavar="DIR")
    down.set_defaults(func=run_down)

    for verb, what in (("cut", "partition"), ("heal", "reconnect")):
        link = sub.add_parser(
            verb,
            help=f"{what} two sites, or a site and the controller (`controller`: this machine)",
        )
        link.add_argument("dir", metavar="DIR")
        link.add_argument("a", metavar="SITE")
        link.add_argument("b", metavar="SITE|controller")
        link.set_defaults(func=run_cut if verb == "cut" else run_heal)

    st = sub.add_parser("status", help="each host: processes alive, SSH answering and how fast")
    st.add_argument("dir", metavar="DIR")
    st.add_argument("--no-ssh", action="store_true", help="do not try an SSH command")
    st.set_defaults(func=run_status)


def _progress(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


@reports_errors
def run_up(args: argparse.Namespace) -> int:
    from madeus.testbed import load_spec, up

    state = up(load_spec(args.spec), args.output, progress=_progress)
    for h in state.hosts:
        print(f"{h.name:16} {h.group:12} {h.site:12} {h.address:15} 127.0.0.1:{h.proxy_port}")
    print(f"inventory: {state.dir}/inventory.yml")
    return EXIT_OK


@reports_errors
def run_down(args: argparse.Namespace) -> int:
    from madeus.testbed import down

    down(args.dir, progress=_progress)
    return EXIT_OK


@reports_errors
def run_cut(args: argparse.Namespace) -> int:
    from madeus.testbed import cut

    cut(args.dir, args.a, args.b)
    return EXIT_OK


@reports_errors
def run_heal(args: argparse.Namespace) -> int:
    from madeus.testbed import heal

    heal(args.dir, args.a, args.b)
    return EXIT_OK


@reports_errors
def run_status(args: argparse.Namespace) -> int:
    from madeus.testbed import load_state, status

    state = load_state(args.dir)
    hosts = status(args.dir, ssh=not args.no_ssh)
    print(f"testbed {state.id} ({state.status}) in {state.dir}, {state.subnet} on {state.bridge}")
    print(f"{'host':16} {'group':12} {'site':12} {'address':15} {'proxy':>6}  sshd  proxy  ssh")

    def alive(flag: bool) -> str:
        return "up" if flag else "DOWN"

    healthy = True
    for h in hosts:
        if args.no_ssh:
            ssh = "-"
        elif h.ssh_ok and h.ssh_seconds is not None:
            ssh = f"ok {h.ssh_seconds * 1000:.0f} ms"
        else:
            ssh = f"FAILED ({h.ssh_error})"
        healthy = healthy and h.sshd_alive and h.proxy_alive and (args.no_ssh or h.ssh_ok)
        port = str(h.proxy_port) if h.proxy_port is not None else "-"
        print(
            f"{h.name:16} {h.group:12} {h.site:12} {h.address:15} {port:>6}  "
            f"{alive(h.sshd_alive):4}  {alive(h.proxy_alive):5}  {ssh}"
        )
    return EXIT_OK if healthy else EXIT_ERRORS
