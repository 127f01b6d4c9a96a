"""The `check`, `plan` and `graph` verbs: exit codes, diagnostics, outputs, start-up cost."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from madeus.cli import main

ROOT = Path(__file__).resolve().parent.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
OPENSTACK_INVENTORY = ROOT / "assemblies" / "openstack" / "inventory.yml"
DEMO = ROOT / "assemblies" / "demo" / "demo.mad"


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")

REFERENCE_CRITICAL_PATH = [
    "mariadb.pull",
    "mariadb.bootstrap",
    "mariadb.restart",
    "mariadb.register",
    "mariadb.check",
    "nova.create_db",
    "nova.upgrade_db",
    "nova.restart",
    "nova.cell_setup",
]

PAIR = """\
component Server(password: secret = "s3cr3t-value") {
    places off*, on
    transition start: off -> on  shell "true"  ~2s
    provide service api: http at on
}

component Client {
    places idle*, ready, done
    transition prepare: idle -> ready  ~1s
    transition attach: ready -> done  shell "true"  ~0.5s
    use service api: http for attach
}

assembly pair {
    server = Server on control
    client = Client on control
    connect client.api -> server.api
}
"""

# Each instance's first transition waits for the other's service: nothing can start.
CYCLE = """\
component Node {
    places a*, b
    transition go: a -> b  ~1s
    provide service out: svc at b
    use service inp: svc for go
}

assembly ring {
    x = Node
    y = Node
    connect x.inp -> y.out
    connect y.inp -> x.out
}
"""

INVENTORY = """\
all:
  children:
    control:
      hosts:
        c1: {ansible_host: 192.0.2.1}
"""


LOCAL_NOTE = re.compile(r"^note: no inventory \(-i\): every target \(.*\) is this machine\n")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI; its standard error without the note that an assembly naming groups gets
    without an inventory (test_without_an_inventory_targets_are_this_machine_and_it_says_so
    checks that note)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, LOCAL_NOTE.sub("", err, count=1)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    path = tmp_path / "pair.mad"
    path.write_text(PAIR)
    return path


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return path


# --- check ----------------------------------------------------------------------------------


def test_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "nope/missing.mad"], capsys) == (
        1,
        "",
        "nope/missing.mad: error: no such file\n",
    )


def test_check_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", str(tmp_path)], capsys)
    assert (code, out, err) == (1, "", f"{tmp_path}: error: not a file (a directory?)\n")


def test_check_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the following arguments are required: FILE" in usage_error(["check"], capsys)
    assert "unrecognized arguments: --bogus" in usage_error(["check", "x.mad", "--bogus"], capsys)
    assert "unknown verb 'nope'" in usage_error(["nope"], capsys)


def test_usage_errors_suggest_and_show_the_verbs_own_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = usage_error(["deplyo", "x.mad"], capsys)
    assert "unknown verb 'deplyo' (did you mean deploy?)" in said
    said = usage_error(["-W", "once", "staus", "x.mad"], capsys)
    assert "unknown verb 'staus' (did you mean status?)" in said
    said = usage_error(["deploy", "x.mad", "--chek"], capsys)
    assert said.startswith("usage: madeus deploy ")  # the verb's own usage, not madeus's
    assert "madeus deploy: error: unrecognized arguments: --chek (did you mean --check?)" in said
    said = usage_error(["plan", "x.mad", "--limt=web"], capsys)
    assert said.startswith("usage: madeus plan ")
    assert "--limt=web (did you mean --limit?)" in said
    said = usage_error(["check", "x.mad", "--zzzzzz"], capsys)
    assert said.endswith("unrecognized arguments: --zzzzzz\n")  # nothing close: no guess


def test_check_ok(pair: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "--no-verify", str(pair)], capsys) == (
        0,
        f"{pair}: ok (2 instances, 3 transitions to deploy)\n",
        "",
    )


def test_check_ok_with_verifier_if_any(pair: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", str(pair)], capsys)
    assert (code, out) == (0, f"{pair}: ok (2 instances, 3 transitions to deploy)\n")


def test_check_with_inventory(
    pair: Path, inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["check", "--no-verify", str(pair), "-i", str(inventory)], capsys)
    assert (code, out, err) == (0, f"{pair}: ok (2 instances, 3 transitions to deploy)\n", "")


def test_check_unknown_target_in_inventory(
    tmp_path: Path, inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.mad"
    path.write_text(PAIR.replace("client = Client on control", "client = Client on nowhere"))
    code, out, err = run(["check", "--no-verify", str(path), "-i", str(inventory)], capsys)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert re.fullmatch(
        rf"{re.escape(str(path))}:16:24: error: unknown target \"nowhere\": no such group or "
        rf"host in inventory {re.escape(str(inventory))}",
        lines[0],
    )
    assert lines[1] == "    client = Client on nowhere"
    assert re.fullmatch(r" +\^~*", lines[2])
    assert len(lines) == 3


def test_check_syntax_error_in_spec_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.mad"
    path.write_text(PAIR.replace("transition start: off -> on", "transition start: off -> "))
    code, out, err = run(["check", str(path)], capsys)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    # PATH:LINE:COL: error: MESSAGE, then the source line, then a caret under the column.
    head = re.fullmatch(rf"{re.escape(str(path))}:(\d+):(\d+): error: (.+)", lines[0])
    assert head is not None, err
    line, col = int(head.group(1)), int(head.group(2))
    assert lines[1] == path.read_text().splitlines()[line - 1]
    assert lines[2].index("^") == col - 1
    assert "Traceback" not in err


def test_check_blocked_deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ring.mad"
    path.write_text(CYCLE)
    code, out, err = run(["check", "--no-verify", str(path)], capsys)
    assert (code, out) == (1, "")
    heads = [line for line in err.splitlines() if ": error: " in line]
    assert [h.split(": error: ", 1)[1] for h in heads] == [
        'transition "x.go" can never start: it waits for y.go',
        'transition "y.go" can never start: it waits for x.go',
    ]
    assert all(h.startswith(f"{path}:3:") for h in heads)
    assert err.splitlines()[-1] == "2 errors"
    # With the verifier (when there is one), still exit 1.
    assert run(["check", str(path)], capsys)[0] == 1


def test_check_demo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--no-verify", str(DEMO)], capsys)
    assert (code, out, err) == (0, f"{DEMO}: ok (3 instances, 7 transitions to deploy)\n", "")


OTHERS = "other behaviours: stop, uninstall, update"


def test_check_openstack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--no-verify", str(OPENSTACK)], capsys)
    ok = f"{OPENSTACK}: ok (11 instances, 31 transitions to deploy; {OTHERS})\n"
    assert (code, out, err) == (0, ok, "")
    code, out, _ = run(["check", str(OPENSTACK), "-i", str(OPENSTACK_INVENTORY)], capsys)
    assert (code, out) == (0, ok)


# --- plan -----------------------------------------------------------------------------------


def test_plan_text(pair: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", str(pair)], capsys)
    assert (code, err) == (0, "")
    assert out == (
        "   transition      hosts      start  duration  end\n"
        "*  server.start    localhost    0.0       2.0  2.0\n"
        "   client.prepare  localhost    0.0       1.0  1.0\n"
        "*  client.attach   localhost    2.0       0.5  2.5\n"
        "\n"
        "predicted makespan: 2.5 s\n"
        "sequential time:    3.5 s (the sum of the 3 durations)\n"
        "critical path (*):  server.start -> client.attach\n"
    )


def test_plan_json(pair: Path, inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", str(pair), "-i", str(inventory), "--format", "json"], capsys)
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "assembly": "pair",
        "transitions": [
            {
                "id": "server.start",
                "instance": "server",
                "name": "start",
                "behaviour": "deploy",
                "duration": 2.0,
                "hosts": ["c1"],
                "after": [],
                "after_any": [],
                "after_one_of": [],
            },
            {
                "id": "client.prepare",
                "instance": "client",
                "name": "prepare",
                "behaviour": "deploy",
                "duration": 1.0,
                "hosts": ["c1"],
                "after": [],
                "after_any": [],
                "after_one_of": [],
            },
            {
                "id": "client.attach",
                "instance": "client",
                "name": "attach",
                "behaviour": "deploy",
                "duration": 0.5,
                "hosts": ["c1"],
                "after": ["client.prepare", "server.start"],
                "after_any": [],
                "after_one_of": [],
            },
        ],
        "predicted_makespan": 2.5,
        "critical_path": ["server.start", "client.attach"],
    }


def test_plan_output_file(pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "plan.json"
    assert run(["plan", str(pair), "--format", "json", "-o", str(out_path)], capsys) == (0, "", "")
    assert json.loads(out_path.read_text())["predicted_makespan"] == 2.5
    bad = tmp_path / "no" / "plan.json"
    code, out, err = run(["plan", str(pair), "-o", str(bad)], capsys)
    assert (code, out, err) == (1, "", f"{bad}: error: cannot write: No such file or directory\n")


def test_plan_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["plan", "x.mad", "--format", "yaml"], capsys)
    assert "argument --format: invalid choice: 'yaml' (choose from 'text', 'json')" in err


def test_plan_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["plan", "missing.mad"], capsys) == (1, "", "missing.mad: error: no such file\n")


def test_plan_openstack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["plan", str(OPENSTACK), "-i", str(OPENSTACK_INVENTORY), "--format", "json"], capsys
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == {"assembly", "transitions", "predicted_makespan", "critical_path"}
    assert data["assembly"] == "openstack"
    assert len(data["transitions"]) == 31
    assert data["predicted_makespan"] == pytest.approx(148.8)
    assert data["critical_path"] == REFERENCE_CRITICAL_PATH
    keys = {"id", "instance", "name", "behaviour", "duration", "hosts", "after", "after_any"}
    keys.add("after_one_of")
    assert all(set(t) == keys for t in data["transitions"])
    by_id = {t["id"]: t for t in data["transitions"]}
    assert by_id["mariadb.bootstrap"]["after"] == ["mariadb.pull", "mariadb.config"]
    assert by_id["mariadb.bootstrap"]["hosts"] == ["control-1"]
    assert by_id["facts.deploy"]["hosts"] == ["control-1", "network-1", "compute-1"]
    assert by_id["nova.create_db"]["after"] == ["mariadb.check"]
    code, out, _ = run(["plan", str(OPENSTACK)], capsys)
    assert code == 0
    assert "predicted makespan: 148.8 s\n" in out
    assert "sequential time:    654.8 s (the sum of the 31 durations)\n" in out
    assert out.endswith("critical path (*):  " + " -> ".join(REFERENCE_CRITICAL_PATH) + "\n")


# --- graph ----------------------------------------------------------------------------------

VIEWS = ["assembly", "net", "plan", "component:Client"]


@pytest.mark.parametrize("view", VIEWS)
def test_graph_dot(
    view: str, pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.dot"
    assert run(["graph", str(pair), "--view", view, "-o", str(out)], capsys) == (0, "", "")
    text = out.read_text()
    assert text.startswith("digraph ")
    assert "s3cr3t-value" not in text


@needs_dot
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_graph_rendered(
    view: str, suffix: str, pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"g.{suffix}"
    assert run(["graph", str(pair), "--view", view, "-o", str(out)], capsys) == (0, "", "")
    data = out.read_bytes()
    if suffix == "svg":
        assert b"<svg" in data
        assert b"s3cr3t-value" not in data
    else:
        assert data.startswith(b"\x89PNG")


@needs_dot
@pytest.mark.parametrize("view", ["assembly", "net", "plan", "component:Nova"])
def test_graph_openstack(view: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.svg"
    argv = ["graph", str(OPENSTACK), "-i", str(OPENSTACK_INVENTORY), "--view", view]
    assert run([*argv, "-o", str(out)], capsys) == (0, "", "")
    assert b"<svg" in out.read_bytes()


def test_graph_without_dot_program(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A PATH without `dot` (the console script and python are not needed: we call main()).
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, "graph", str(pair), "-o", str(tmp_path / "g.svg")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "madeus: error: the `dot` program (graphviz) is not installed; write .dot instead or "
        "install "
        "graphviz\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "graph", str(pair), "-o", str(tmp_path / "g.dot")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (done.returncode, done.stdout, LOCAL_NOTE.sub("", done.stderr)) == (0, "", "")


def test_graph_unknown_component(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["graph", str(pair), "--view", "component:Nope", "-o", str(tmp_path / "g.dot")]
    assert run(argv, capsys) == (
        1,
        "",
        f'{pair}: error: no component type "Nope" in assembly pair '
        "(component types: Client, Server)\n",
    )


def test_graph_highlight_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ring.mad"
    path.write_text(CYCLE)
    out = tmp_path / "g.dot"
    code, _, err = run(
        ["graph", str(path), "--view", "net", "--highlight-problems", "-o", str(out)], capsys
    )
    assert code == 0
    from madeus.cli.check import find_verifier

    if find_verifier("problem_elements") is None:
        assert err == "madeus: note: the verifier is not available: nothing highlighted\n"
    else:
        assert 'color="#d62728"' in out.read_text()


def test_graph_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["graph", "x.mad", "--view", "sideways", "-o", "g.svg"], capsys)
    assert (
        "argument --view: invalid view 'sideways' (choose assembly, net, plan or component:NAME)"
        in err
    )
    err = usage_error(["graph", "x.mad", "-o", "g.txt"], capsys)
    assert "argument -o/--output: invalid output 'g.txt': it must end in .svg, .png or .dot" in err
    assert "the following arguments are required: -o/--output" in usage_error(
        ["graph", "x.mad"], capsys
    )


# --- start-up -------------------------------------------------------------------------------

HEAVY = ("z3", "ansible", "asyncssh", "graphviz")

PROBE = """\
import sys, time
began = time.perf_counter()
from madeus.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
elapsed = time.perf_counter() - began
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(repr((code, heavy, elapsed)), file=sys.stderr)
"""


def _probe(argv: list[str]) -> tuple[int, list[str], float]:
    """Run the CLI in a fresh interpreter: exit code, heavy modules imported, seconds spent
    from the first madeus import to the end of main (interpreter start-up excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: tuple[int, list[str], float] = eval(done.stderr.strip().splitlines()[-1])
    return result


def _fastest(argv: list[str]) -> tuple[int, list[str], float]:
    # Best of three: a loaded test machine only ever adds time.
    runs = [_probe(argv) for _ in range(3)]
    return min(runs, key=lambda r: r[2])


def test_help_is_fast_and_light() -> None:
    code, heavy, seconds = _fastest(["--help"])
    assert (code, heavy) == (0, [])
    assert seconds < 0.5


def test_check_no_verify_is_fast_and_light() -> None:
    code, heavy, seconds = _fastest(["check", "--no-verify", str(DEMO)])
    assert (code, heavy) == (0, [])
    assert seconds < 0.5


def test_console_script_help() -> None:
    """The `madeus` console script pip installs beside the interpreter."""
    exe = str(Path(sys.executable).parent / "madeus")
    began = time.perf_counter()
    done = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for verb in ("check", "plan", "graph"):
        assert re.search(rf"^\s+{verb}\s", done.stdout, re.MULTILINE)
    assert time.perf_counter() - began < 5  # sanity only: interpreter start-up varies


def test_third_party_warnings_are_hidden_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncssh with a recent cryptography warns about DSA at import: an operator must not see
    Python source lines before a real message. `madeus -W ACTION` and Python's own -W /
    PYTHONWARNINGS still show them; madeus's own warnings always show."""
    import warnings

    from madeus.cli import filter_warnings

    def shown(module: str, actions: list[str]) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            filter_warnings(actions)
            warnings.warn_explicit("DSA is deprecated", DeprecationWarning, "x.py", 1, module)
        return bool(caught)

    monkeypatch.setattr(sys, "warnoptions", [])
    assert not shown("asyncssh.crypto.dsa", [])
    assert shown("madeus.engine", [])
    assert shown("asyncssh.crypto.dsa", ["default"])
    monkeypatch.setattr(sys, "warnoptions", ["default"])  # python -W default, PYTHONWARNINGS
    assert shown("asyncssh.crypto.dsa", [])


def test_the_warning_option_comes_before_the_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-W", "default", "check", str(DEMO)]) == 0
    with pytest.raises(SystemExit) as caught:
        main(["-W", "loud", "check", str(DEMO)])
    assert caught.value.code == 2
    assert "argument -W: invalid choice: 'loud'" in capsys.readouterr().err


def test_a_library_of_component_types_checks_and_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of component types and no assembly is checked as a library; its types can be
    drawn; views that need an assembly say so."""
    library = ROOT / "assemblies" / "openstack" / "components" / "mariadb.mad"
    assert main(["check", str(library)]) == 0
    assert capsys.readouterr().out == f"{library}: ok (library: 1 component type: MariaDB)\n"
    out = tmp_path / "mariadb.dot"
    assert main(["graph", str(library), "--view", "component:MariaDB", "-o", str(out)]) == 0
    assert out.read_text().startswith("digraph")
    assert main(["graph", str(library), "--view", "component:Nope", "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f'{library}: error: no component type "Nope" in file {library} (component types: MariaDB)\n'
    )
    assert main(["graph", str(library), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"madeus: error: {library} defines no assembly, only component types (`madeus check` "
        "checks them; `madeus graph --view component:NAME` draws one)\n"
    )
    broken = tmp_path / "broken.mad"
    broken.write_text("component A {\n    places a*, b\n    transition t: a -> c\n}\n")
    assert main(["check", str(broken)]) == 1
    assert 'unknown place "c"' in capsys.readouterr().err


def test_without_an_inventory_targets_are_this_machine_and_it_says_so(
    pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--no-verify", str(pair)]) == 0
    err = capsys.readouterr().err
    assert err == "note: no inventory (-i): every target (control) is this machine\n"
    assert main(["check", "--no-verify", str(DEMO)]) == 0  # only `all`: no note
    assert capsys.readouterr().err == ""
