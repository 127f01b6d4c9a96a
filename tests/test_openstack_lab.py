"""A real OpenStack control plane deployed by Madeus on `madeus testbed` (issue 8).

`madeus testbed up` (control, network, compute, 25 ms one way), then
`madeus deploy assemblies/openstack-lab/openstack-lab.mad -i DIR/inventory.yml --trace ...`
for real over SSH and Ansible, then `madeus reconfigure` with
`reconfigure/rotate-keystone-keys.py` (the services pause, Keystone rotates its keys and
restarts, the services restart), then `assemblies/openstack-lab/smoke-check` (token, catalog,
image round trip, Placement, a server reaching ACTIVE), then `madeus testbed down`; nothing of
the testbed, and no OpenStack process, may be left running. About a minute and a half.

It needs root and the machine prepared by `assemblies/openstack-lab/prepare` (Debian's
MariaDB, memcached and RabbitMQ, and the OpenStack virtualenv in
/var/cache/madeus-openstack-lab). With `MADEUS_OPENSTACK_LAB=1` (CI sets it after running
`prepare`) it always runs, and a missing prerequisite is a failure, not a skip; without the
variable it runs when the prerequisites are there, and `MADEUS_OPENSTACK_LAB=0` skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "assemblies" / "openstack-lab"
CACHE = Path(os.environ.get("MADEUS_OSLAB_CACHE", "/var/cache/madeus-openstack-lab"))
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
# What the deployment starts on the hosts (the hosts share this machine's PID space).
SERVICE_PATTERNS = ("mariadbd", "memcached", "beam.smp", "epmd", "/opt/oslab/venv/")


def missing_prerequisites() -> list[str]:
    missing = []
    if sys.platform != "linux" or os.geteuid() != 0:
        missing.append("root on Linux")
    for tool in ("ip", "ssh", "mariadbd", "memcached"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing.append(tool)
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        missing.append("rabbitmq-server")
    if not (CACHE / "venv" / ".oslab-ready").is_file():
        missing.append(f"the prepared virtualenv {CACHE}/venv")
    return missing


GATE = os.environ.get("MADEUS_OPENSTACK_LAB", "")
MISSING = missing_prerequisites()
# The marks of every test that needs the prepared lab (test_openstack_edge.py too).
LAB_MARKS = [
    pytest.mark.integration,
    pytest.mark.skipif(GATE == "0", reason="MADEUS_OPENSTACK_LAB=0"),
    pytest.mark.skipif(
        GATE != "1" and bool(MISSING),
        reason="needs " + ", ".join(MISSING) + " (run assemblies/openstack-lab/prepare as root)",
    ),
]
pytestmark = LAB_MARKS


def run(
    *argv: str | Path, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def madeus(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120):  # type: ignore[no-untyped-def]
    """`madeus ARGS...` in a fresh interpreter, as an operator would run it."""
    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    return run(sys.executable, "-c", script, *args, cwd=cwd, env=env, timeout=timeout)


def processes_in_hosts(directory: Path) -> dict[int, str]:
    """The processes living in the testbed's hosts (their network namespaces): the lab's
    services among them. Other testbeds on the machine (other test runs) are not counted."""
    from madeus.testbed import load_state

    found: dict[int, str] = {}
    for host in load_state(directory).hosts:
        pids = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True
        ).stdout.split()
        for pid in map(int, pids):
            command = cmdline(pid)
            if command:
                found[pid] = command
    return found


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def alive(pid: int, command: str) -> bool:
    """Still running (not a zombie), and still the same program (PIDs get reused)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X") and cmdline(pid) == command


@pytest.fixture
def testbed(tmp_path: Path, lab_env: dict[str, str]) -> Iterator[Path]:
    if MISSING:
        pytest.fail(
            "MADEUS_OPENSTACK_LAB=1 but the machine is not prepared: missing "
            + ", ".join(MISSING)
            + " (run assemblies/openstack-lab/prepare as root first)"
        )
    directory = tmp_path / "tb"
    done = madeus("testbed", "up", LAB / "testbed.yml", "-o", directory, cwd=tmp_path, env=lab_env)
    assert done.returncode == 0, done.stderr
    running: dict[int, str] = {}
    try:
        yield directory
    finally:
        running = processes_in_hosts(directory)
        down = madeus("testbed", "down", directory, cwd=tmp_path, env=lab_env)
        assert down.returncode == 0, down.stderr
        assert not directory.exists()
    # Every process of the hosts, the lab's services included, went with them.
    services = {pid: cmd for pid, cmd in running.items() if any(p in cmd for p in SERVICE_PATTERNS)}
    assert len(services) >= 10, running  # mariadbd, memcached, rabbitmq, uwsgi x5, nova x3...
    deadline = time.monotonic() + 10
    left = {pid: cmd for pid, cmd in running.items() if alive(pid, cmd)}
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {pid: cmd for pid, cmd in running.items() if alive(pid, cmd)}
    assert left == {}


def test_deploy_openstack_lab_for_real(
    testbed: Path, tmp_path: Path, lab_env: dict[str, str]
) -> None:
    inventory = testbed / "inventory.yml"
    trace_path = tmp_path / "trace.json"
    started = time.monotonic()
    done = madeus(
        "deploy",
        LAB / "openstack-lab.mad",
        "-i",
        inventory,
        "--trace",
        trace_path,
        cwd=tmp_path,
        env=lab_env,
        timeout=600,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "deployed openstack_lab: 64/64 jobs ok" in done.stdout

    # The secrets never reach the output, the logs or the trace.
    texts = [done.stdout, done.stderr, trace_path.read_text()]
    texts += [p.read_text(errors="replace") for p in (tmp_path / ".madeus").rglob("*.out")]
    texts += [p.read_text(errors="replace") for p in (tmp_path / ".madeus").rglob("*.err")]
    for name in PASSWORDS:
        assert not any(lab_env[name] in text for text in texts), name

    trace = json.loads(trace_path.read_text())
    assert {e["status"] for e in trace["events"]} == {"ok"}
    assert len(trace["events"]) == 64
    # Parallel for real: the three hosts pull the virtualenv at once, the five databases
    # are created at once as soon as MariaDB is up.
    starts = {e["id"]: e["start"] for e in trace["events"]}
    ends = {e["id"]: e["end"] for e in trace["events"]}
    pulls = [f"common_{g}.pull" for g in ("control", "network", "compute")]
    assert max(starts[p] for p in pulls) < min(ends[p] for p in pulls)
    dbs = [f"{s}.create_db" for s in ("keystone", "glance", "placement", "nova", "neutron")]
    assert max(starts[d] for d in dbs) < min(ends[d] for d in dbs)
    assert all(starts[d] >= ends["mariadb.register"] for d in dbs)
    assert trace["makespan"] < took

    # The trace follows the semantics (no transition early, none waiting needlessly).
    (plan,) = (tmp_path / ".madeus" / "runs").glob("*/plan.json")
    checked = madeus(
        "trace",
        "check",
        trace_path,
        "--plan",
        plan,
        "--tolerance",
        "0.5",
        cwd=tmp_path,
        env=lab_env,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # A reconfiguration: Keystone's keys rotate while the services that use it pause.
    rotate = madeus(
        "reconfigure",
        LAB / "openstack-lab.mad",
        LAB / "reconfigure" / "rotate-keystone-keys.py",
        "-i",
        inventory,
        cwd=tmp_path,
        env=lab_env,
        timeout=300,
    )
    assert rotate.returncode == 0, rotate.stdout[-3000:] + rotate.stderr[-3000:]
    assert "reconfigured openstack_lab: 11/11 jobs ok" in rotate.stdout

    smoke = run(
        sys.executable, LAB / "smoke-check", inventory, cwd=tmp_path, env=lab_env, timeout=300
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert smoke.stdout.splitlines()[-1].startswith("smoke-check: OpenStack works")
    print(f"\nopenstack-lab: deployed in {trace['makespan']:.1f} s; {smoke.stdout}")
