"""Real faults, on the local testbed (root, iproute2, OpenSSH): a host's link cut in the middle
of a deployment, sshd killed during a transition, a remote command failing, the deployment
interrupted, and a journal directory that cannot be written.

One testbed of three hosts (alpha-1, beta-1, gamma-1; 2 ms one way) serves the module; gamma-1
loses its sshd in the last testbed test. Every deployment is a `madeus deploy` process, run in a
directory of its own. Remote actions that must outlive a cut write their PID into the host's
filesystem (`DIR/hosts/<host>/root/var/tmp/`, seen from the machine) and are killed at the end:
the hosts share the machine's PID namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from madeus.engine.journal import read_journal
from madeus.testbed import State, down, link_down, link_up, load_spec_text, up
from madeus.testbed.state import find_tool
from madeus.trace import Trace, load

pytestmark = pytest.mark.integration

IS_ROOT = sys.platform == "linux" and os.geteuid() == 0
HAVE_TESTBED = IS_ROOT and all(
    find_tool(t) for t in ("ip", "sshd", "ssh", "ssh-keygen", "nsenter", "unshare")
)
needs_testbed = pytest.mark.skipif(not HAVE_TESTBED, reason="needs root, iproute2 and OpenSSH")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")

SPEC = """
resources:
  alpha: 1
  beta: 1
  gamma: 1
network_constraints:
  default_delay: 2ms
"""
# Lost after 0.5 s x 2 unanswered keepalives (the default is 5 s x 3).
KEEPALIVE = ["--ssh-keepalive-interval", "0.5", "--ssh-keepalive-count-max", "2"]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    if not HAVE_TESTBED:
        pytest.skip("needs root, iproute2 and OpenSSH")
    directory = tmp_path_factory.mktemp("faults") / "tb"
    state = up(load_spec_text(SPEC), directory)
    try:
        yield state
    finally:
        for host in ("alpha-1", "beta-1", "gamma-1"):
            _kill_recorded(state, host)
        down(directory)


def _host_file(state: State, host: str, name: str) -> Path:
    return Path(state.dir) / "hosts" / host / "root" / "var" / "tmp" / name


def _kill_recorded(state: State, host: str) -> None:
    """Kill the remote actions that recorded their PID (`*.pid` in the host's /var/tmp)."""
    directory = _host_file(state, host, "")
    for pid_file in directory.glob("madeus-*.pid"):
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if cmdline.startswith(b"sleep\0"):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _deploy(cwd: Path, source: Path, state: State, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from madeus.cli import main; sys.exit(main())",
            "deploy",
            str(source),
            "-i",
            str(Path(state.dir) / "inventory.yml"),
            "--no-verify",
            *extra,
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _inventory(state: State) -> Path:
    return Path(state.dir) / "inventory.yml"


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """Wait until a remote action has written its PID into `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"madeus ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _statuses(trace: Trace) -> dict[str, str]:
    return {f"{e.id}@{e.host}": e.status for e in trace.events}


def _faults_mad(directory: Path, tag: str, *, idempotent: bool = False) -> Path:
    """`steady` on alpha runs a chain of three, its second long; `cut` on beta has a second
    transition that records its PID, then sleeps (or, once the PID file exists, ends at once:
    the resume does not wait for it again)."""
    flag = " idempotent" if idempotent else ""
    pid = f"/var/tmp/madeus-{tag}.pid"
    source = directory / f"{tag}.mad"
    source.write_text(f"""
component Steady {{
    places a*, b, c, d
    transition one: a -> b    shell "sleep 0.3"
    transition two: b -> c    shell "sleep 4"{flag}
    transition three: c -> d  shell "true"
}}
component Cut {{
    places a*, b, c, d
    transition one: a -> b    shell "true"
    transition two: b -> c    shell "test -e {pid} && exit 0; echo $$ > {pid}; exec sleep 30"
    transition three: c -> d  shell "true"
}}
assembly {tag} {{
    steady = Steady on alpha
    cut = Cut on beta
}}
""")
    return source


@needs_testbed
@pytest.mark.parametrize("keep_going", [True, False], ids=["keep-going", "stop"])
def test_a_host_cut_off_mid_deployment_then_resumed(
    testbed: State, tmp_path: Path, keep_going: bool
) -> None:
    tag = "keep" if keep_going else "stop"
    # Stopping cancels steady.two half-way: declared idempotent, the resume runs it again.
    source = _faults_mad(tmp_path, tag, idempotent=not keep_going)
    policy = ["--keep-going"] if keep_going else []
    proc = _deploy(tmp_path, source, testbed, *KEEPALIVE, *policy, "--trace", "t1.json")
    pid = _wait_for(_host_file(testbed, "beta-1", f"madeus-{tag}.pid"), proc)
    link_down(testbed.dir, "beta-1")
    cut_at = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
        failed_after = time.monotonic() - cut_at
    finally:
        link_up(testbed.dir, "beta-1")
    assert proc.returncode == 1, err
    assert 'madeus: error: transition "cut.two" failed on host "beta-1": lost the connection ' in (
        err
    )
    first = load(tmp_path / "t1.json")
    statuses = _statuses(first)
    assert statuses["cut.one@beta-1"] == "ok"
    assert statuses["cut.two@beta-1"] == "failed"
    assert "cut.three@beta-1" not in statuses  # it depends on the failure
    if keep_going:
        # Everything that does not depend on the failure ran to the end.
        assert {k: v for k, v in statuses.items() if k.startswith("steady.")} == {
            "steady.one@alpha-1": "ok",
            "steady.two@alpha-1": "ok",
            "steady.three@alpha-1": "ok",
        }
        assert failed_after < 4 + 3  # the keepalives, or steady's own 4 s, whichever is last
    else:
        assert statuses["steady.two@alpha-1"] == "cancelled"
        assert "steady.three@alpha-1" not in statuses
        assert failed_after < 3  # about 0.5 s x 2 keepalives
    ended = {k for k, v in statuses.items() if v == "ok"}

    # The link is back. Whether cut.two did its work while the link was down is unknown (a
    # lost connection is an uncertain outcome, like a cancellation): the resume asks.
    proc = _deploy(tmp_path, source, testbed, *KEEPALIVE, "--resume")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert 'transition "cut.two" lost its connection on host "beta-1" when run ' in err
    # Told to run it again, the resume skips what ended and runs the rest.
    settle = ["--rerun", "cut.two@beta-1"]
    proc = _deploy(tmp_path, source, testbed, *KEEPALIVE, "--resume", *settle, "--trace", "t2.json")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    second = _statuses(load(tmp_path / "t2.json"))
    assert {k for k, v in second.items() if v == "skipped"} == ended
    assert {k for k, v in second.items() if v == "ok"} == set(second) - ended
    assert "cut.two@beta-1" in set(second) - ended
    state, _, _ = read_journal(source, _inventory(testbed), base=tmp_path / ".madeus" / "state")
    assert len(state.ended) == 6 and not state.running
    assert _alive(pid)  # the first cut.two still sleeps on beta-1: nothing could kill it
    os.kill(pid, signal.SIGKILL)


@needs_testbed
def test_a_failing_remote_command_names_host_status_and_stderr(
    testbed: State, tmp_path: Path
) -> None:
    source = tmp_path / "failing.mad"
    source.write_text("""
component Broken {
    places a*, b
    transition go: a -> b  shell "echo starting; echo \\"disk is full on $(hostname)\\" >&2; exit 5"
}
assembly failing { x = Broken on alpha }
""")
    proc = _deploy(tmp_path, source, testbed)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert (
        'madeus: error: transition "x.go" failed on host "alpha-1" (exit status 5): command '
        "failed on alpha-1 (127.0.0.1:"
    ) in err
    assert ") with exit status 5\nstderr (last lines):\n  disk is full on alpha-1\nlog: " in err
    assert "Traceback" not in err


@needs_testbed
def test_sigterm_kills_the_remote_command_and_keeps_the_journal(
    testbed: State, tmp_path: Path
) -> None:
    pid_file = _host_file(testbed, "alpha-1", "madeus-term.pid")
    source = tmp_path / "term.mad"
    source.write_text("""
component Long {
    places a*, b
    transition wait: a -> b  shell "echo $$ > /var/tmp/madeus-term.pid; exec sleep 30"
}
assembly term { x = Long on alpha }
""")
    proc = _deploy(tmp_path, source, testbed, "--trace", "t.json")
    pid = _wait_for(pid_file, proc)
    assert _alive(pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # Killed on the host, not left running. The signal reaches the whole process group at
    # once, but the session's channel may close as the wrapper shell dies, a moment before
    # `sleep` itself is gone: allow that moment, far less than the 30 s it would otherwise run.
    assert _gone_within(pid, 5.0), err
    assert _statuses(load(tmp_path / "t.json")) == {"x.wait@alpha-1": "cancelled"}
    state, holder, _ = read_journal(
        source, _inventory(testbed), base=tmp_path / ".madeus" / "state"
    )
    assert holder is None
    assert state.jobs[("x.wait", "alpha-1")].status == "cancelled"
    assert state.runs[-1].status == "interrupted"


@needs_testbed
def test_sshd_killed_during_a_transition(testbed: State, tmp_path: Path) -> None:
    """The last testbed test: gamma-1 has no sshd afterwards."""
    pid_file = _host_file(testbed, "gamma-1", "madeus-sshd.pid")
    source = tmp_path / "sshd.mad"
    source.write_text("""
component Long {
    places a*, b
    transition wait: a -> b  shell "echo $$ > /var/tmp/madeus-sshd.pid; exec sleep 30"
}
assembly sshd { x = Long on gamma }
""")
    proc = _deploy(tmp_path, source, testbed, *KEEPALIVE, "--trace", "t.json")
    _wait_for(pid_file, proc)
    sshd = testbed.host("gamma-1").sshd_pid
    assert sshd is not None
    # The listening sshd and the per-connection sshd processes it forked.
    victims = [sshd, *_children(sshd)]
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert time.monotonic() - killed_at < 5
    assert (
        'madeus: error: transition "x.wait" failed on host "gamma-1": lost the connection to '
        in (err)
    )
    assert "Traceback" not in err
    assert _statuses(load(tmp_path / "t.json")) == {"x.wait@gamma-1": "failed"}


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
            found.extend(_children(int(stat.parent.name)))
    return found


# --- a journal that cannot be written -------------------------------------------------------------

LOCAL = """
component Touch {
    places a*, b
    transition go: a -> b  shell "touch ran"
}
assembly unwritable { x = Touch }
"""


def _deploy_locally(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from madeus.cli import main; sys.exit(main())",
            "deploy",
            "unwritable.mad",
            "--no-verify",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_root
@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
def test_an_immutable_journal_directory_stops_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "unwritable.mad").write_text(LOCAL)
    state = tmp_path / ".madeus" / "state"
    state.mkdir(parents=True)
    # Root ignores permission bits: the immutable attribute stops root too.
    made = subprocess.run(["chattr", "+i", str(state)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.strip()}")
    try:
        done = _deploy_locally(tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"madeus: error: cannot use the journal directory {tmp_path}/.madeus/state/unwritable-"
    )
    assert done.stderr.endswith(": Operation not permitted\n")
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / ".madeus" / "runs").exists()


@needs_root
def test_a_read_only_journal_directory_stops_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "unwritable.mad").write_text(LOCAL)
    state = tmp_path / ".madeus" / "state"
    state.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        done = _deploy_locally(tmp_path)
    finally:
        subprocess.run(["umount", str(state)], check=True)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"madeus: error: cannot use the journal directory {tmp_path}/.madeus/state/unwritable-"
    )
    assert done.stderr.endswith(": Read-only file system\n")
    assert not (tmp_path / "ran").exists()
