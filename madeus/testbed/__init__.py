"""The local multi-site testbed: emulated hosts (namespaces, overlay roots, sshd) on one machine.

    spec = load_spec("testbed.yml")
    state = up(spec, "tb")            # needs root; writes tb/inventory.yml and tb/known_hosts
    status("tb")                      # per host: processes alive, SSH answers (and how fast)
    link_down("tb", "compute-1")      # fault injection, undone by link_up
    cut("tb", "site3", "controller")  # a partition between two ends, undone by heal
    down("tb")                        # removes everything up created, even after a crash

Stages: spec.py (TESTBED.yml -> TestbedSpec), up.py (TestbedSpec -> resources + State),
state.py (the recorded State, queries), down.py (State -> nothing left), proxy.py (the delay
proxy each host's SSH goes through). See docs/testbed.md.
"""

from __future__ import annotations

from madeus.testbed.down import DownReport, down
from madeus.testbed.spec import (
    Delay,
    HostSpec,
    NetworkConstraints,
    Rate,
    TestbedError,
    TestbedSpec,
    load_spec,
    load_spec_text,
    parse_delay,
    parse_rate,
)
from madeus.testbed.state import (
    CONTROLLER,
    HostState,
    HostStatus,
    State,
    cut,
    heal,
    link_down,
    link_up,
    load_state,
    ssh_argv,
    status,
)
from madeus.testbed.up import up

__all__ = [
    "CONTROLLER",
    "Delay",
    "DownReport",
    "HostSpec",
    "HostState",
    "HostStatus",
    "NetworkConstraints",
    "Rate",
    "State",
    "TestbedError",
    "TestbedSpec",
    "cut",
    "down",
    "heal",
    "link_down",
    "link_up",
    "load_spec",
    "load_spec_text",
    "load_state",
    "parse_delay",
    "parse_rate",
    "ssh_argv",
    "status",
    "up",
]
