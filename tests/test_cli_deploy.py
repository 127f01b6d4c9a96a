"""`madeus deploy` end to end: the demo, OpenStack simulated, failures, limits, run logs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.engine.validate import validate
from madeus.trace import load

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assemblies" / "demo" / "demo.mad"
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
INVENTORY = ROOT / "assemblies" / "openstack" / "inventory.yml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run writes `.madeus/runs/` (and the demo its site) in the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / ".madeus" / "runs").iterdir()
    return run_dir


def openstack_plan() -> object:
    from madeus import load_file, load_inventory, resolve
    from madeus.plan import build_plan

    assembly = load_file(OPENSTACK).assembly
    assert assembly is not None
    return build_plan(resolve(assembly, load_inventory(INVENTORY)))


def test_demo_deploys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(DEMO)]) == 0
    site = tmp_path / "demo-site"
    for page in (
        "index.html",
        "style.css",
        "pages/about.html",
        "pages/news.html",
        "pages/contact.html",
    ):
        assert (site / page).stat().st_size > 0, page
    assert "Madeus demo" in (site / "index.html").read_text()
    out = capsys.readouterr().out
    assert "] start content.prepare @ localhost\n" in out
    assert "] ok    site.check @ localhost (" in out
    run_dir = only_run_dir(tmp_path)
    assert f"logs:      .madeus/runs/{run_dir.name}/\n" in out
    assert "deployed demo: 7/7 jobs ok\n" in out
    # The check's output is in its log, the trace and the plan beside it.
    assert (run_dir / "site.check@localhost.out").read_text().startswith("site ready: ")
    assert {p.name for p in run_dir.iterdir()} >= {"trace.json", "plan.json"}
    for path in (tmp_path / ".madeus", tmp_path / ".madeus" / "runs", run_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_openstack_simulated_trace_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "deploy",
            str(OPENSTACK),
            "-i",
            str(INVENTORY),
            "--simulate",
            "--time-scale",
            "0.01",
            "--trace",
            "os.json",
            "--gantt",
            "os.html",
            "--no-verify",
        ]
    )
    assert code == 0
    trace = load(tmp_path / "os.json")
    assert validate(trace, openstack_plan()) == []  # type: ignore[arg-type]
    assert len(trace.events) == 46  # Kolla's groups: facts, common and Neutron on all 3 hosts
    assert trace.makespan == pytest.approx(1.488, rel=0.05)
    assert (tmp_path / "os.html").read_text().startswith("<!doctype html>")
    out = capsys.readouterr().out
    assert "predicted: 1.488 s (148.800 s x 0.01), ratio " in out
    assert "gantt:     os.html\n" in out


def test_max_parallel_is_respected(tmp_path: Path) -> None:
    code = main(
        [
            "deploy",
            str(OPENSTACK),
            "--simulate",
            "--time-scale",
            "0.005",
            "--max-parallel",
            "2",
            "--trace",
            "os.json",
            "--no-verify",
        ]
    )
    assert code == 0
    trace = load(tmp_path / "os.json")
    points = sorted([(e.start, 1) for e in trace.events] + [(e.end, -1) for e in trace.events])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    plan = json.loads((only_run_dir(tmp_path) / "plan.json").read_text())
    from madeus.plan import Plan

    assert validate(trace, Plan.from_json(plan), max_parallel=2) == []


FAILING = """
component Step {
    places a*, b, c
    transition prepare: a -> b  shell "echo preparing"  ~0.1s
    transition boom: b -> c  shell "echo working; echo 'disk is full' >&2; exit 7"  ~0.1s
    transition slow: b -> c  shell "sleep 30"  ~0.1s
    provide service done at c
}

component Later {
    places a*, b
    transition never: a -> b  shell "touch never-ran"  ~0.1s
    use service step for never
}

assembly failing {
    s = Step
    l = Later
    connect l.step -> s.done
}
"""


def test_failure_reports_host_exit_status_and_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "failing.mad"
    source.write_text(FAILING)
    code = main(["deploy", str(source), "--trace", "t.json", "--no-verify"])
    assert code == 1
    captured = capsys.readouterr()
    err = captured.err
    assert 'madeus: error: transition "s.boom" failed on host "localhost" (exit status 7)\n' in err
    assert "stderr (last lines):\n  disk is full\n" in err
    run_dir = only_run_dir(tmp_path)
    assert f"log: .madeus/runs/{run_dir.name}/s.boom@localhost.err\n" in err
    statuses = {(e.id, e.status) for e in load(tmp_path / "t.json").events}
    assert statuses == {("s.prepare", "ok"), ("s.boom", "failed"), ("s.slow", "cancelled")}
    assert not (tmp_path / "never-ran").exists()
    assert "] failed s.boom @ localhost (" in captured.out
    saved = json.loads((run_dir / "trace.json").read_text())
    assert {(e["id"], e["status"]) for e in saved["events"]} == statuses


def test_unset_environment_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MADEUS_TEST_TOKEN", raising=False)
    source = tmp_path / "env.mad"
    source.write_text("""
component Api(token: secret = env("MADEUS_TEST_TOKEN")) {
    places a*, b
    transition go: a -> b  shell "touch ran"
}
assembly env { api = Api }
""")
    assert main(["deploy", str(source), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert (
        'error: instance "api": parameter "token" reads environment variable '
        '"MADEUS_TEST_TOKEN", which is not set' in err
    )
    assert not (tmp_path / "ran").exists()


def test_simulate_may_come_before_the_file(tmp_path: Path) -> None:
    assert main(["deploy", "--simulate", str(DEMO), "--time-scale", "0.01"]) == 0
    assert not (tmp_path / "demo-site").exists()


@pytest.mark.parametrize("verb", ["deploy", "reconfigure", "destroy"])
def test_time_scale_without_simulate_is_refused(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --simulate a real run takes its real time: a --time-scale there would be
    silently ignored, so it is a usage error and nothing runs."""
    script = tmp_path / "noop.py"
    script.write_text("def reconfigure(r):\n    pass\n")
    argv = [verb, str(DEMO), *([str(script)] if verb == "reconfigure" else [])]
    assert main([*argv, "--time-scale", "0.01"]) == 2
    assert capsys.readouterr().err == (
        f"madeus {verb}: error: --time-scale only applies with --simulate (a real run takes "
        "the time it takes)\n"
    )
    assert not (tmp_path / ".madeus").exists()
    assert not (tmp_path / "demo-site").exists()


@pytest.mark.parametrize("option", ["--trace", "--gantt"])
@pytest.mark.parametrize("verb", ["deploy", "reconfigure", "destroy"])
def test_an_unwritable_output_is_refused_before_anything_runs(
    verb: str, option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "noop.py"
    script.write_text("def reconfigure(r):\n    pass\n")
    argv = [verb, str(DEMO), *([str(script)] if verb == "reconfigure" else [])]
    argv += [] if verb == "deploy" else ["--assume-deployed"]
    (tmp_path / "taken.svg").mkdir()
    for target, reason in [
        ("missing-dir/out.svg", "No such file or directory"),
        ("taken.svg", "Is a directory"),
    ]:
        assert main([*argv, option, target]) == 1
        assert capsys.readouterr().err == (
            f"madeus: error: cannot write {option} {target}: {reason} (nothing ran)\n"
        )
    assert not (tmp_path / ".madeus").exists()
    assert not (tmp_path / "demo-site").exists()


def test_gantt_needs_svg_or_html(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(DEMO), "--gantt", "chart.png"]) == 2
    assert capsys.readouterr().err == "madeus deploy: error: --gantt takes a .svg or .html file\n"


def test_ctrl_c_exits_130_with_the_trace_and_no_process_left(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    source = tmp_path / "hang.mad"
    source.write_text(f"""
component Hang {{
    places a*, b
    transition wait: a -> b  shell "sleep 60 & echo $! > {fifo}; wait"  ~60s
}}
assembly hang {{ h = Hang }}
""")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from madeus.cli import main; sys.exit(main())",
            "deploy",
            str(source),
            "--trace",
            "t.json",
            "--no-verify",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = int(fifo.read_text())  # the action runs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: running transitions were cancelled\n" in err
    assert [(e.id, e.status) for e in load(tmp_path / "t.json").events] == [("h.wait", "cancelled")]
    stat_file = Path(f"/proc/{pid}/stat")
    assert not stat_file.exists() or stat_file.read_text().rsplit(")", 1)[1].split()[0] == "Z"


REMOTE = """
component Node {
    places a*, b, c
    transition hello: a -> b  shell "echo hello from {host.name}"  ~0.4s
    transition bye: b -> c  shell "echo bye"  ~0.2s
}
assembly remote { n = Node on nodes }
"""


def test_over_ssh_and_remote_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sshd_helpers import running_sshd

    source = tmp_path / "remote.mad"
    source.write_text(REMOTE)
    with running_sshd(tmp_path, hosts=("node-1", "node-2")) as sshd:
        inventory = str(sshd.write_inventory())
        assert main(["deploy", str(source), "-i", inventory, "--trace", "real.json"]) == 0
        run_dir = only_run_dir(tmp_path)
        assert (run_dir / "n.hello@node-2.out").read_text() == "hello from node-2\n"
        code = main(
            [
                "deploy",
                str(source),
                "-i",
                inventory,
                "--simulate=remote",
                "--time-scale",
                "0.5",
                "--trace",
                "sim.json",
            ]
        )
        assert code == 0, capsys.readouterr().err
    real = load(tmp_path / "real.json")
    assert sorted((e.id, e.host) for e in real.events) == [
        ("n.bye", "node-1"),
        ("n.bye", "node-2"),
        ("n.hello", "node-1"),
        ("n.hello", "node-2"),
    ]
    simulated = load(tmp_path / "sim.json")
    for event in simulated.events:  # a remote `sleep` of duration x 0.5, over SSH
        expected = {"n.hello": 0.2, "n.bye": 0.1}[event.id]
        assert event.status == "ok"
        assert event.end - event.start >= expected


def _hanging(tmp_path: Path, fifo: Path, prefix: str = "") -> Path:
    source = tmp_path / "hang.mad"
    source.write_text(f"""
component Hang {{
    places a*, b
    transition wait: a -> b  shell "{prefix}sleep 60 & echo $! > {fifo}; wait"  ~60s
}}
assembly hang {{ h = Hang }}
""")
    return source


def _start_deploy(source: Path, *extra: str) -> object:
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from madeus.cli import main; sys.exit(main())",
            "deploy",
            str(source),
            "--no-verify",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _gone(pid: int) -> bool:
    stat_file = Path(f"/proc/{pid}/stat")
    return not stat_file.exists() or stat_file.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_sigterm_cancels_cleanly_and_the_journal_says_so(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from madeus.engine.journal import read_journal

    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    source = _hanging(tmp_path, fifo)
    proc = _start_deploy(source, "--trace", "t.json")
    assert isinstance(proc, subprocess.Popen)
    pid = int(fifo.read_text())  # the action runs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert (
        "madeus: SIGTERM: cancelling the running transitions (send it again to exit at once)\n"
        in err
    )
    assert "interrupted: running transitions were cancelled\n" in err
    assert [(e.id, e.status) for e in load(tmp_path / "t.json").events] == [("h.wait", "cancelled")]
    assert _gone(pid)
    state, holder, _ = read_journal(source)
    assert holder is None  # released
    assert state.running == {("h.wait", "localhost")}
    assert state.jobs[("h.wait", "localhost")].status == "cancelled"
    assert state.runs[-1].status == "interrupted"


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    from madeus.engine.journal import read_journal

    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    # The action ignores SIGTERM: cancelling it waits for the 5 s grace before SIGKILL.
    source = _hanging(tmp_path, fifo, prefix="trap '' TERM; ")
    proc = _start_deploy(source)
    assert isinstance(proc, subprocess.Popen)
    pid = int(fifo.read_text())
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 2.5  # not the 5 s grace
        assert proc.returncode == 130, err
        assert "madeus: SIGINT again: exiting now\n" in err
        state, holder, _ = read_journal(source)
        assert holder is None  # the lock dies with the process
        assert state.running == {("h.wait", "localhost")}  # started, never ended
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)  # forcing leaves the action behind, by design


def test_sigterm_cancels_an_ansible_run(tmp_path: Path) -> None:
    """The first SIGTERM reaches the Ansible run: the task's process on the host is gone."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "ansible-task.pid"
    (tmp_path / "slow.yml").write_text(
        f"- ansible.builtin.shell: echo $$ > {pid_file}; exec sleep 60\n"
    )
    source = tmp_path / "slow.mad"
    source.write_text("""
component Slow {
    places a*, b
    transition wait: a -> b  ansible tasks "slow.yml"
}
assembly slow { s = Slow }
""")
    proc = _start_deploy(source, "--trace", "t.json")
    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + 90
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert [(e.id, e.status) for e in load(tmp_path / "t.json").events] == [
            ("s.wait", "cancelled")
        ]
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_closed_standard_output_never_stops_a_deployment(tmp_path: Path) -> None:
    """`madeus deploy ... | head -2`: the reader goes away after two lines; the deployment
    goes on to its end, and no traceback reaches the terminal."""
    import subprocess
    import sys

    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    pipeline = (
        f"{sys.executable} -c '{script}' deploy {DEMO} | head -2 >/dev/null;"
        " echo status=${PIPESTATUS[0]} >&2"
    )
    done = subprocess.run(
        ["bash", "-c", pipeline], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stderr == "status=0\n"
    assert (tmp_path / "demo-site" / "pages" / "contact.html").exists()
    trace = json.loads((only_run_dir(tmp_path) / "trace.json").read_text())
    assert {e["status"] for e in trace["events"]} == {"ok"}
    assert len(trace["events"]) == 7
    # The same for a verb that only prints.
    status = subprocess.run(
        ["bash", "-c", f"{sys.executable} -c '{script}' status {DEMO} | head -1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (status.returncode, status.stderr) == (0, "")
    assert status.stdout.startswith("journal:")
