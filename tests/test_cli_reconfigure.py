"""`madeus reconfigure`, `madeus destroy` and `madeus plan --reconfigure` on OpenStack, under
--simulate: exit codes, traces checked against the safety rule, the journal updated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.engine.journal import read_journal
from madeus.reconfig import deployed
from madeus.reconfig.check import check_trace
from madeus.trace import load

REPO = Path(__file__).resolve().parent.parent
OPENSTACK = REPO / "assemblies" / "openstack" / "openstack.mad"
UPDATE = REPO / "assemblies" / "openstack" / "reconfigure" / "update-mariadb.py"
USERS = ("glance", "neutron", "nova", "keystone")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI; its standard error without the note on running without an inventory
    (tests/test_cli.py checks it)."""
    import re

    code = main(argv)
    out, err = capsys.readouterr()
    note = r"^note: no inventory \(-i\): every target \(.*\) is this machine\n"
    return code, out, re.sub(note, "", err, count=1)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def deployed_openstack(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run(["deploy", str(OPENSTACK), "--simulate", "--time-scale", "0.001"], capsys)
    assert code == 0, err
    return workdir


def _state() -> object:
    from madeus.frontend import load_file
    from madeus.resolve import resolve

    module = load_file(OPENSTACK)
    assert module.assembly is not None
    return deployed(resolve(module.assembly))


def _markings() -> dict[str, frozenset[str]]:
    state, _, _ = read_journal(OPENSTACK, None, simulate=True)
    return dict(state.markings)


def test_the_mariadb_update_runs_verified_and_updates_the_journal(
    deployed_openstack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        [
            "reconfigure",
            str(OPENSTACK),
            str(UPDATE),
            "--simulate",
            "--time-scale",
            "0.002",
            "--trace",
            "update.json",
            "--gantt",
            "update.html",
        ],
        capsys,
    )
    assert code == 0, err
    assert "reconfigured (simulated) openstack: 15/15 jobs ok" in out
    assert "predicted: 0.117 s (58.500 s x 0.002)" in out
    trace = load("update.json")
    assert {e.behaviour for e in trace.events} == {"stop", "update"}
    assert check_trace(_state(), trace) == []  # type: ignore[arg-type]
    ends = {e.id: e.end for e in trace.events}
    starts = {e.id: e.start for e in trace.events}
    # Paused in order: the services, then Keystone, then MariaDB; resumed the other way.
    assert all(starts["keystone.stop"] >= ends[f"{s}.stop"] for s in USERS[:3])
    assert starts["mariadb.stop"] >= ends["keystone.stop"]
    assert starts["keystone.start"] >= ends["mariadb.start"]
    assert all(starts[f"{s}.start"] >= ends["keystone.start"] for s in USERS[:3])
    assert Path("update.html").read_text().startswith("<!doctype html>")
    markings = _markings()
    assert all(markings[name] == {"deployed"} for name in (*USERS, "mariadb"))
    # Again, from what the journal says now.
    code, out, err = run(
        ["reconfigure", "--simulate", str(OPENSTACK), str(UPDATE), "--time-scale", "0.001"],
        capsys,
    )
    assert code == 0, err


def test_an_unsafe_program_is_refused_before_anything_runs(
    deployed_openstack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = Path("stop-mariadb.py")
    script.write_text('def reconfigure(r):\n    r.push("mariadb", "stop")\n    r.wait_all()\n')
    before = read_journal(OPENSTACK, None, simulate=True)[0]
    code, out, err = run(
        ["reconfigure", str(OPENSTACK), str(script), "--simulate", "--time-scale", "0.001"],
        capsys,
    )
    assert code == 1
    assert out == ""
    first = err.splitlines()[0]
    assert first.startswith(
        'stop-mariadb.py:2:5: error: the program can block: "mariadb" cannot leave place '
        '"deployed" (behaviour "stop", towards "mariadb.stop"): provide port "mariadb.db" would '
        "become inactive while "
    )
    assert "note: step 1: push('mariadb', 'stop')" in err
    assert "components/mariadb.mad:" in err
    assert err.rstrip().endswith(
        "madeus: error: refusing to run a program that does not verify "
        "(--no-verify to run it anyway)"
    )
    assert "Traceback" not in err
    assert read_journal(OPENSTACK, None, simulate=True)[0].runs == before.runs


def test_script_errors_are_reported_at_their_line(
    deployed_openstack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("typo.py").write_text('def reconfigure(r):\n    r.push("mariadb", "stopp")\n')
    code, _, err = run(["reconfigure", str(OPENSTACK), "typo.py", "--simulate"], capsys)
    assert code == 1
    assert err.splitlines()[0] == (
        'typo.py:2:5: error: component "MariaDB" (instance "mariadb") has no behaviour '
        '"stopp" (it has: deploy, stop, update, uninstall)'
    )
    Path("boom.py").write_text("def reconfigure(r):\n    raise RuntimeError('no')\n")
    code, _, err = run(["reconfigure", str(OPENSTACK), "boom.py", "--simulate"], capsys)
    assert code == 1
    assert err.splitlines()[0] == "boom.py:2:5: error: RuntimeError: no"
    assert "Traceback" not in err


def test_nothing_deployed_needs_assume_deployed(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["reconfigure", str(OPENSTACK), str(UPDATE), "--simulate"], capsys)
    assert code == 1
    assert "records no deployment: deploy it first" in err
    code, _, err = run(
        [
            "reconfigure",
            str(OPENSTACK),
            str(UPDATE),
            "--simulate",
            "--time-scale",
            "0.001",
            "--assume-deployed",
        ],
        capsys,
    )
    assert code == 0, err


def test_destroy_uninstalls_in_reverse_dependency_order(
    deployed_openstack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["destroy", str(OPENSTACK), "--simulate", "--time-scale", "0.002", "--trace", "d.json"],
        capsys,
    )
    assert code == 0, err
    assert "destroyed (simulated) openstack: 22/22 jobs ok" in out
    trace = load("d.json")
    assert check_trace(_state(), trace) == []  # type: ignore[arg-type]
    start = {e.id: e.start for e in trace.events}
    end = {e.id: e.end for e in trace.events}
    assert all(start["keystone.shutdown"] >= end[f"{s}.shutdown"] for s in USERS[:3])
    assert start["mariadb.shutdown"] >= end["keystone.shutdown"]
    assert start["haproxy.shutdown"] >= end["mariadb.shutdown"]
    assert start["memcached.shutdown"] < end["glance.shutdown"]  # no one waits for it
    markings = _markings()
    assert markings["mariadb"] == {"initiated"} and markings["facts"] == {"initiated"}
    # Everything is uninstalled: a second destroy has nothing to run.
    code, out, err = run(["destroy", str(OPENSTACK), "--simulate"], capsys)
    assert code == 0
    assert "runs no transition" in err


def test_plan_predicts_a_reconfiguration(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", str(OPENSTACK), "--reconfigure", str(UPDATE)], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        f"program {UPDATE}, from a complete deployment (the journal records none)"
    )
    assert "predicted makespan: 58.5 s" in out
    assert out.rstrip().endswith(
        "critical path (*):  nova.stop -> keystone.stop -> mariadb.stop -> "
        "mariadb.reconfigure -> mariadb.start -> keystone.start -> neutron.start"
    )
    code, out, err = run(
        ["plan", str(OPENSTACK), "--reconfigure", str(UPDATE), "--format", "json"], capsys
    )
    data = json.loads(out)
    assert data["predicted_makespan"] == 58.5
    assert data["sequential"] == 126.9
    assert len(data["transitions"]) == 15


def test_usage_errors(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["reconfigure", str(OPENSTACK)], capsys)
    assert exited.value.code == 2
    assert "error: the following arguments are required: SCRIPT.py" in capsys.readouterr().err
    code, _, err = run(["reconfigure", str(OPENSTACK), str(UPDATE), "--gantt", "x.png"], capsys)
    assert code == 2 and "--gantt takes a .svg or .html file" in err
    with pytest.raises(SystemExit) as exited:
        run(["destroy"], capsys)
    assert exited.value.code == 2
    assert "error: the following arguments are required: FILE" in capsys.readouterr().err
    # A bare --simulate before FILE is --simulate=local, never a mode named FILE.
    with pytest.raises(SystemExit) as exited:
        run(["destroy", "--simulate=nowhere", str(OPENSTACK)], capsys)
    assert "argument --simulate: invalid mode 'nowhere' (choose local or remote)" in (
        capsys.readouterr().err
    )


def test_an_unverified_program_that_blocks_stops_with_what_blocks(
    deployed_openstack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("stop.py").write_text('def reconfigure(r):\n    r.push("mariadb", "stop")\n')
    code, out, err = run(
        ["reconfigure", str(OPENSTACK), "stop.py", "--simulate", "--no-verify"], capsys
    )
    assert code == 1
    assert "reconfigured (simulated) openstack: 0/0 jobs ok" in out
    assert 'error: the program blocked: "mariadb" cannot leave place "deployed"' in err


def test_simulate_remote_sleeps_through_the_hosts_backend(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = REPO / "assemblies" / "examples" / "behaviours.mad"
    Path("restart.py").write_text(
        'def reconfigure(r):\n    r.push("server", "stop")\n    r.push("server", "deploy")\n'
    )
    code, _out, err = run(
        [
            "reconfigure",
            "--simulate=remote",
            str(example),
            "restart.py",
            "--assume-deployed",
            "--time-scale",
            "0.1",
            "--trace",
            "t.json",
        ],
        capsys,
    )
    assert code == 0, err
    events = {e.id: e for e in load("t.json").events}
    assert events["server.stop"].duration >= 0.02  # `sleep 0.02` ran (locally here)
    assert events["server.start"].start >= events["server.stop"].end


def test_outputs_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """The same inputs give the same bytes whatever PYTHONHASHSEED (iterating a set once made
    `plan --reconfigure` list its steps in a different order from run to run)."""
    import os
    import subprocess
    import sys

    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    update = REPO / "assemblies" / "openstack" / "reconfigure" / "update-mariadb.py"
    commands = [
        ["plan", str(OPENSTACK), "--reconfigure", str(update)],
        ["plan", str(OPENSTACK), "--reconfigure", str(update), "--format", "json"],
        ["plan", str(OPENSTACK), "--format", "json"],
        ["graph", str(OPENSTACK), "--view", "net", "-o", "-"],
    ]
    outputs: list[list[str]] = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        seen = []
        for n, argv in enumerate(commands):
            if argv[-1] == "-":
                argv = [*argv[:-1], str(tmp_path / f"{seed}-{n}.dot")]
            done = subprocess.run(
                [sys.executable, "-c", script, *argv],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                check=True,
            )
            dot = tmp_path / f"{seed}-{n}.dot"
            seen.append(done.stdout + (dot.read_text() if dot.exists() else ""))
        outputs.append(seen)
    assert outputs[0] == outputs[1] == outputs[2]


FAILING_UNINSTALL = """
component Svc {
    places off*, on, on2
    transition start: off -> on  shell "true"
    transition remove: on -> off  shell "echo cannot remove >&2; exit 4"  behaviour uninstall
    transition restart: on -> on2  shell "echo no restart >&2; exit 5"  behaviour update
}
assembly one { s = Svc }
"""


@pytest.mark.parametrize("verb", ["reconfigure", "destroy"])
def test_a_failing_action_ends_reconfigure_and_destroy_with_a_message(
    verb: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "one.mad").write_text(FAILING_UNINSTALL)
    (workdir / "update.py").write_text("def reconfigure(r):\n    r.push('s', 'update')\n")
    argv = [verb, "one.mad", *(["update.py"] if verb == "reconfigure" else [])]
    code, out, err = run([*argv, "--assume-deployed"], capsys)
    assert code == 1
    assert "Traceback" not in out + err
    transition, status, said = (
        ("s.restart", 5, "no restart")
        if verb == "reconfigure"
        else ("s.remove", 4, "cannot remove")
    )
    assert f'transition "{transition}" failed on host "localhost" (exit status {status})' in err
    (log,) = (workdir / ".madeus" / "runs").glob("*/*.err")
    assert log.read_text() == f"{said}\n"
