"""Deployments on a real multi-site testbed (`madeus testbed`): SSH, Ansible, faults, rehearsal.

One testbed for the module (control, network and compute, one host each, 25 ms one way between
this machine and every host), brought up once and torn down at the end, checking that nothing
of it is left. Every deployment runs `madeus deploy` as a subprocess, as an operator would, and
its effects are checked inside the hosts (over SSH), and checked absent from this machine.

Needs root, iproute2 and OpenSSH (CI machines are root); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from madeus.testbed import (
    State,
    down,
    link_down,
    link_up,
    load_spec_text,
    load_state,
    ssh_argv,
    up,
)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "assemblies" / "demo" / "demo.mad"
OPENSTACK = REPO / "assemblies" / "openstack" / "openstack.mad"
# The testbed's inventory has control, network and compute; Kolla's service groups come second.
KOLLA_GROUPS = REPO / "assemblies" / "openstack" / "kolla-groups.yml"
GREETER = REPO / "tests" / "data" / "ansible" / "greeter.mad"
HOSTS = ("control-1", "network-1", "compute-1")
TESTBED = """\
resources:
  control: 1
  network: 1
  compute: 1
network_constraints:
  default_delay: 25ms
  default_rate: 1gbit
sites:
  site1: [control]
  site2: [network]
  site3: [compute]
"""

HAVE_TESTBED = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and shutil.which("ip") is not None
    and Path("/usr/sbin/sshd").is_file()
    and shutil.which("ssh") is not None
)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_TESTBED, reason="needs root, iproute2 and OpenSSH"),
]


def madeus(
    *args: str, cwd: Path, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`madeus ARGS...` in a fresh interpreter, from `cwd` (where .madeus/runs/ goes)."""
    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, f"madeus {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def rel(path: str | Path, cwd: Path) -> str:
    return os.path.relpath(path, cwd)


def on_host(state: State, host: str, command: str, timeout: float = 30) -> str:
    """Run `command` on a testbed host (in root's home there) and return its output."""
    done = subprocess.run(
        ssh_argv(state, host, command),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{host}: {command}: {done.stderr}"
    return done.stdout


def leftovers(state: State, pids: Sequence[int]) -> list[str]:
    """Everything of the testbed still on this machine: namespaces, links, mounts, processes,
    files (empty once `down` did its job)."""
    tag = f"mdtb-{state.id}-"
    left: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {line.split()[0]}" for line in netns.splitlines() if tag in line]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [f"link {line.split()[1]}" for line in links.splitlines() if tag in line]
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    left += [f"mount {line.split()[4]}" for line in mounts.splitlines() if state.dir in line]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state_word = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if state_word == "Z":
            continue  # reaped by init in a moment (docs/testbed.md, Limits)
        if int(proc.name) in pids or state.dir in cmdline or tag in cmdline:
            left.append(f"process {proc.name}: {cmdline.strip()}")
    if Path(state.dir).exists():
        left.append(f"files {sorted(os.listdir(state.dir))}")
    return left


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    directory = tmp_path_factory.mktemp("integration") / "tb"
    state = up(load_spec_text(TESTBED, "integration-testbed.yml"), directory)
    try:
        yield state
    finally:
        recorded = load_state(directory)
        pids = [r.pid for r in recorded.resources if r.kind == "process" and r.pid is not None]
        report = down(directory)
        assert report.found
        assert leftovers(state, pids) == []


@pytest.fixture
def inventory(testbed: State) -> str:
    return str(Path(testbed.dir) / "inventory.yml")


def unchanged_on_this_machine(path: Path) -> tuple[float, int] | None:
    """What `path` is on this machine (None: absent), to check a deployment left it alone."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime, info.st_size


def test_the_inventory_has_every_host(testbed: State, inventory: str) -> None:
    assert [h.name for h in testbed.hosts] == list(HOSTS)
    assert [h.delay for h in testbed.hosts] == [0.025] * 3
    assert "control-1:" in Path(inventory).read_text()


def test_demo_deploys_inside_each_host(testbed: State, inventory: str, tmp_path: Path) -> None:
    here = Path("/root/demo-site/index.html")  # where the hosts have it (root's home)
    before = unchanged_on_this_machine(here)
    # Relative paths, as operators type them.
    done = madeus("deploy", rel(DEMO, tmp_path), "-i", rel(inventory, tmp_path), cwd=tmp_path)
    assert "deployed demo: 21/21 jobs ok\n" in done.stdout
    for host in HOSTS:
        name, index, news = on_host(
            testbed,
            host,
            "hostname; echo @; cat demo-site/index.html; echo @; cat demo-site/pages/news.html",
        ).split("\n@\n")
        assert name == host
        assert "<h1>Madeus demo</h1>" in index
        assert '<li><a href="pages/news.html">news</a></li>' in index
        assert f"by {host}." in news  # `{host.name}`, substituted for each host
    # Nothing was written on this machine: not in the same path, not where madeus ran.
    assert unchanged_on_this_machine(here) == before
    assert not (tmp_path / "demo-site").exists()
    (run_dir,) = (tmp_path / ".madeus" / "runs").iterdir()
    assert (run_dir / "site.check@compute-1.out").read_text() == (
        "site ready: /root/demo-site/index.html\n"
    )


def test_ansible_playbook_role_and_task_file_run_inside_each_host(
    testbed: State, inventory: str, tmp_path: Path
) -> None:
    where = Path("/root/madeus-ansible")
    before = unchanged_on_this_machine(where)
    # Relative paths, as operators type them (a relative inventory once made every Ansible job
    # fail with "Host key verification failed").
    done = madeus("deploy", rel(GREETER, tmp_path), "-i", rel(inventory, tmp_path), cwd=tmp_path)
    assert "deployed greeter: 9/9 jobs ok\n" in done.stdout
    for host in HOSTS:
        files = on_host(testbed, host, "cd /root/madeus-ansible && ls && cat *.txt")
        assert files == (
            "checked.txt\nconfigured-by-role.txt\nmessage.txt\n"
            "checked\n"
            f"configured {host}\n"
            # An extra variable is data: quotes kept, `{{ }}` not templated.
            'hello from madeus; it\'s "quoted" {{ not a template }}\n'
        )
    assert unchanged_on_this_machine(where) == before


def test_a_host_cut_off_gives_a_clear_error(testbed: State, inventory: str, tmp_path: Path) -> None:
    link_down(testbed.dir, "compute-1")
    try:
        start = time.monotonic()
        done = madeus("deploy", str(DEMO), "-i", inventory, cwd=tmp_path, check=False)
        elapsed = time.monotonic() - start
    finally:
        link_up(testbed.dir, "compute-1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    port = testbed.host("compute-1").proxy_port
    # Hosts are connected to before anything runs: the run stops before it starts.
    assert done.stderr == (
        f"madeus: error: cannot connect to compute-1 (127.0.0.1:{port}): "
        "connection timed out after 10 s\n"
    )
    assert elapsed < 30  # the 10 s connect timeout, not a hang
    # Reconnected, the host answers again.
    assert on_host(testbed, "compute-1", "echo back") == "back\n"


def test_a_host_lost_mid_run_is_detected_by_keepalives(
    testbed: State, inventory: str, tmp_path: Path
) -> None:
    seconds = f"60.{uuid.uuid4().int % 10**6:06d}"  # a `sleep` only this test runs
    mad = tmp_path / "slow.mad"
    mad.write_text(
        "component Slow {\n"
        "    places a*, b\n"
        f'    transition go: a -> b  shell "sleep {seconds}"  ~60s\n'
        "}\n"
        "assembly slow {\n"
        "    slow = Slow on compute\n"
        "}\n"
    )
    argv = ["deploy", str(mad), "-i", inventory]
    argv += ["--ssh-keepalive-interval", "1", "--ssh-keepalive-count-max", "2"]
    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    with subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            while not _running(f"sleep {seconds}") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _running(f"sleep {seconds}"), "the remote command never started"
            link_down(testbed.dir, "compute-1")
            start = time.monotonic()
            out, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - start
        finally:
            link_up(testbed.dir, "compute-1")
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    port = testbed.host("compute-1").proxy_port
    assert (
        'madeus: error: transition "slow.go" failed on host "compute-1": lost the connection '
        f"to compute-1 (127.0.0.1:{port}): Server not responding to keepalive\n"
    ) in err
    assert elapsed < 10  # 2 keepalives 1 s apart, not the 60 s of the command


def _running(pattern: str) -> bool:
    """The testbed has no PID namespace: a host's processes show on this machine."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_openstack_rehearsal_on_the_hosts_follows_the_semantics(
    testbed: State, inventory: str, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    sources = ("-i", inventory, "-i", str(KOLLA_GROUPS))
    madeus("plan", str(OPENSTACK), *sources, "--format", "json", "-o", str(plan), cwd=tmp_path)
    trace = tmp_path / "trace.json"
    done = madeus(
        "deploy",
        str(OPENSTACK),
        *sources,
        "--simulate=remote",
        "--time-scale",
        "0.01",
        "--trace",
        str(trace),
        cwd=tmp_path,
    )
    assert "simulated openstack: 46/46 jobs ok\n" in done.stdout
    events = json.loads(trace.read_text())["events"]
    assert {e["host"] for e in events} == set(HOSTS)  # facts, common, Neutron on every host
    checked = madeus("trace", "check", str(trace), "--plan", str(plan), cwd=tmp_path)
    assert checked.stdout.startswith(f"{trace}: valid (46 events, makespan ")
    # Each remote sleep costs at least one round trip (50 ms) over its duration, never less.
    durations = {t["id"]: t["duration"] * 0.01 for t in json.loads(plan.read_text())["transitions"]}
    for e in events:
        assert e["end"] - e["start"] >= durations[e["id"]] + 0.045, e


def test_reconfiguration_and_destroy_rehearse_on_the_hosts(
    testbed: State, inventory: str, tmp_path: Path
) -> None:
    rehearse = (
        *("-i", rel(inventory, tmp_path), "-i", rel(KOLLA_GROUPS, tmp_path)),
        *("--simulate=remote", "--time-scale", "0.005"),
    )
    madeus("deploy", rel(OPENSTACK, tmp_path), *rehearse, cwd=tmp_path)
    update = OPENSTACK.parent / "reconfigure" / "update-mariadb.py"
    for verb, extra, out in (
        ("reconfigure", (str(update),), tmp_path / "update.json"),
        ("destroy", (), tmp_path / "destroy.json"),
    ):
        madeus(verb, rel(OPENSTACK, tmp_path), *extra, *rehearse, "--trace", str(out), cwd=tmp_path)
        events = json.loads(out.read_text())["events"]
        assert events and {e["status"] for e in events} == {"ok"}, verb
        assert {e["host"] for e in events} <= set(HOSTS)
    # Destroy ran every instance's uninstall behaviour, on the testbed's hosts.
    uninstalled = {e["id"].split(".")[0] for e in events if e.get("behaviour") == "uninstall"}
    assert len(uninstalled) == 11
