"""The state of record (`madeus.state`): where it is, what it holds, and what `madeus plan` and
`madeus deploy` make of it. Real deployments on this machine (shell actions), the CLI as an
operator runs it."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from madeus import state
from madeus.cli import main

SOURCE = """
component Server(port: int = 8080, motto: str = "hi", key: secret = env("STATE_TEST_KEY")) {
    places off*, on
    transition start: off -> on  shell "echo {port} >> started-{port}.txt"  ~0.01s
    transition stop: on -> off  shell "echo stop >> stopped.txt"  ~0.01s  behaviour uninstall
    provide service api at on
}
component Client(token: secret = "literal-token") {
    places idle*, ready
    transition attach: idle -> ready  shell "echo attach >> attached.txt"  ~0.01s
    transition detach: ready -> idle
        shell "echo detach >> attached.txt"  ~0.01s  behaviour uninstall
    use service api for attach, ready
}
assembly pair {
    server = Server(port = 8080)
    client = Client
    connect client.api -> server.api
}
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An assembly in `tmp/project/`, madeus run from `tmp/elsewhere/`, the default location
    of states (beside the assembly: the suite's $MADEUS_STATE unset)."""
    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.setenv("STATE_TEST_KEY", f"K3y-{uuid.uuid4().hex}")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pair.mad").write_text(SOURCE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return project


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def deploy(file: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str, str]:
    return cli(["deploy", str(file), "--no-verify", "-q", *more], capsys)


def only_state_dir(project: Path) -> Path:
    (directory,) = (project / ".madeus" / "state").iterdir()
    return directory


def test_the_state_is_beside_the_assembly_whatever_the_working_directory(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    assert not (Path.cwd() / ".madeus" / "state").exists()
    directory = only_state_dir(here)
    record = state.load(directory)
    assert record is not None
    assert record.complete and record.assembly == "pair"
    assert record.file == str(file.resolve())
    by_name = {i.name: i for i in record.instances}
    assert by_name["server"].type == "Server"
    assert by_name["server"].hosts == ("localhost",)
    assert by_name["server"].places == ("on",)
    assert by_name["client"].places == ("ready",)
    assert by_name["server"].params["port"] == 8080
    assert [str(c) for c in record.connections] == ["client.api -> server.api"]
    assert [r["status"] for r in record.runs] == ["ok"]
    # From a third directory, status reads the same state.
    third = here.parent / "third"
    third.mkdir()
    monkeypatch.chdir(third)
    code, out, _ = cli(["status", str(file)], capsys)
    assert code == 0
    assert f"journal:  {directory}/journal.jsonl\n" in out
    assert "2 done" in out


def test_the_state_file_is_private_whole_and_holds_no_secret(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0o002)  # a lax umask: the tool must not rely on it
    try:
        assert deploy(here / "pair.mad", capsys)[0] == 0
    finally:
        os.umask(old)
    directory = only_state_dir(here)
    path = directory / state.STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["journal.jsonl", "lock", "state.json"]
    text = path.read_text()
    assert os.environ["STATE_TEST_KEY"] not in text and "literal-token" not in text
    raw = json.loads(text)
    assert raw["format"] == "madeus-state" and raw["version"] == 1
    params = {i["name"]: i["params"] for i in raw["instances"]}
    assert params["server"]["key"] == {"secret": "env:STATE_TEST_KEY"}
    assert params["client"]["token"] == {"secret": "literal"}


def test_deploying_again_unchanged_does_nothing_and_plan_says_so(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    ran = Path.cwd() / "attached.txt"
    assert ran.read_text() == "attach\n"
    code, out, err = deploy(file, capsys)
    directory = only_state_dir(here)
    assert (code, err) == (0, "")
    assert out.startswith(
        f"No changes: the deployment matches its state of record ({directory}/state.json, "
    )
    assert ran.read_text() == "attach\n"  # nothing ran
    code, out, _ = cli(["plan", str(file), "--detailed-exitcode"], capsys)
    assert code == 0
    assert out.endswith("No changes: the deployment matches its state of record.\n")
    code, out, _ = cli(["plan", str(file), "--format", "json"], capsys)
    document = json.loads(out)
    assert (document["transitions"], document["critical_path"]) == ([], [])
    assert document["changes"]["add"] == [] and document["changes"]["complete"] is True
    assert deploy(file, capsys, "--redeploy")[0] == 0
    assert ran.read_text() == "attach\nattach\n"


def test_nothing_deployed_yet_everything_is_to_do(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    code, out, _ = cli(["plan", str(file), "--detailed-exitcode", "--format", "json"], capsys)
    assert code == 2
    document = json.loads(out)
    assert "changes" not in document  # the plan JSON alone: everything is to do
    assert [t["id"] for t in document["transitions"]] == ["server.start", "client.attach"]


def test_plan_shows_what_changed_as_terraform_does(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    hostile = '$(touch pwned) \\"quoted\\"\\nnext'  # in the file: quotes and a newline escaped
    changed = SOURCE.replace("Server(port = 8080)", f'Server(port = 9090, motto = "{hostile}")')
    changed = changed.replace(
        "    client = Client\n    connect client.api -> server.api\n",
        "    other = Client\n    connect other.api -> server.api\n",
    )
    file.write_text(changed)
    code, out, err = cli(["plan", str(file), "--detailed-exitcode"], capsys)
    assert (code, err) == (2, "")
    head = out.split("\n\n")[0]
    assert head.splitlines()[1:] == [
        "changes: 1 to add, 1 to change, 1 to remove; 1 connections to add, 1 to remove",
        "  + other (Client) on localhost",
        "  ~ server (Server)",
        '      motto: "hi" -> "$(touch pwned) \\"quoted\\"\\nnext"',
        "      port: 8080 -> 9090",
        "  - client (Client)",
        "  + connect other.api -> server.api",
        "  - connect client.api -> server.api",
    ]
    assert not (Path.cwd() / "pwned").exists()
    document = json.loads(cli(["plan", str(file), "--format", "json"], capsys)[1])
    assert document["changes"] == {
        "state": str(only_state_dir(here) / "state.json"),
        "complete": True,
        "add": ["other"],
        "change": {
            "server": ['motto: "hi" -> "$(touch pwned) \\"quoted\\"\\nnext"', "port: 8080 -> 9090"]
        },
        "remove": ["client"],
        "connect": ["other.api -> server.api"],
        "disconnect": ["client.api -> server.api"],
    }
    # deploy runs the change: the server has no `on change of`, so it is redeployed; the
    # client it serves uninstalls first, and the new user deploys once the server runs again
    code, out, err = deploy(file, capsys)
    assert code == 0, err
    assert "server: motto, port changed and Server declares no `on change of` for it" in out
    assert (Path.cwd() / "stopped.txt").read_text() == "stop\n"
    assert (Path.cwd() / "attached.txt").read_text() == "attach\ndetach\nattach\n"
    assert (Path.cwd() / "started-9090.txt").exists()
    assert cli(["plan", str(file), "--detailed-exitcode"], capsys)[0] == 0


def test_a_run_that_did_not_complete_leaves_something_to_do(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys, "--inject-failure", "client.attach")[0] == 1
    record = state.load(only_state_dir(here))
    assert record is not None and not record.complete
    assert {i.name: i.places for i in record.instances} == {"server": ("on",), "client": ("idle",)}
    code, out, _ = cli(["plan", str(file), "--detailed-exitcode"], capsys)
    assert code == 2
    assert "No changes to the files, but the last run did not complete (failed)" in out
    assert deploy(file, capsys, "--resume")[0] == 0
    assert cli(["plan", str(file), "--detailed-exitcode"], capsys)[0] == 0


def test_state_and_madeus_state_name_another_place(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = here / "pair.mad"
    chosen = here.parent / "states"
    assert deploy(file, capsys, "--state", str(chosen))[0] == 0
    assert not (here / ".madeus").exists()
    (directory,) = chosen.iterdir()
    assert (directory / "state.json").exists()
    monkeypatch.setenv("MADEUS_STATE", str(chosen))
    assert cli(["plan", str(file), "--detailed-exitcode"], capsys)[0] == 0


def test_a_state_in_the_working_directory_is_refused_with_where_to_move_it(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    # Where madeus kept states before: .madeus/state under the working directory.
    assert deploy(file, capsys, "--state", ".madeus/state")[0] == 0
    (old,) = (Path(".madeus") / "state").iterdir()
    new = here / ".madeus" / "state" / old.name
    for verb in (["plan"], ["deploy", "--no-verify"], ["status"]):
        code, out, err = cli([verb[0], str(file), *verb[1:]], capsys)
        assert (code, out) == (1, "")
        assert err == (
            f"{file}: error: this deployment's state is in {old}/ (under the working "
            f"directory, where madeus kept states before); states are now kept beside the "
            f"assembly: move it to {new}/, or pass --state .madeus/state\n"
        )
    (here / ".madeus").mkdir()
    old.parent.rename(here / ".madeus" / "state")
    assert cli(["plan", str(file), "--detailed-exitcode"], capsys)[0] == 0


def test_a_journal_without_a_state_file_is_read_as_its_state(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    (only_state_dir(here) / "state.json").unlink()  # a journal an earlier madeus wrote
    code, out, _ = cli(["plan", str(file), "--detailed-exitcode"], capsys)
    assert code == 0, out


def test_a_damaged_state_file_is_an_error_not_a_traceback(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    path = only_state_dir(here) / "state.json"
    path.write_text('{"format": "madeus-state", "version": 1, "assembly": "pair"}')
    code, out, err = cli(["plan", str(file)], capsys)
    assert (code, out) == (1, "")
    assert err == f"{path}: error: a damaged state file (KeyError: 'file')\n"
    path.write_text('{"format": "madeus-state", "version": 7}')
    code, _, err = cli(["plan", str(file)], capsys)
    assert err == f"{path}: error: state format version 7: this madeus reads version 1\n"
    path.write_text("{not json")
    code, _, err = cli(["plan", str(file)], capsys)
    assert code == 1 and err.startswith(f"{path}: error: cannot read the state: ")


def test_destroy_records_where_it_left_the_instances(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    assert deploy(file, capsys)[0] == 0
    code, _, err = cli(["destroy", str(file), "--no-verify", "-q"], capsys)
    assert code == 0, err
    record = state.load(only_state_dir(here))
    assert record is not None and not record.complete
    assert {i.name: i.places for i in record.instances} == {"server": ("off",), "client": ("idle",)}
    assert [r["status"] for r in record.runs] == ["ok", "ok"]
    code, out, _ = cli(["plan", str(file), "--detailed-exitcode"], capsys)
    assert code == 2
    assert "No changes to the files, but not every instance is deployed" in out


def test_what_a_program_adds_keeps_its_hosts_parameters_and_connections(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    inventory = here / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost: {ansible_connection: local}\n"
        "    edge1: {ansible_connection: local}\n"
    )
    script = here / "grow.py"
    script.write_text(
        "from madeus.model import EnvRef\n\n\n"
        "def reconfigure(r):\n"
        '    r.add("extra", "Client", "edge1", token=EnvRef("STATE_TEST_KEY"))\n'
        '    r.connect("extra.api", "server.api")\n'
        '    r.push("extra", "deploy")\n'
        '    r.wait("extra")\n'
    )
    base = [str(file), "-i", str(inventory)]
    assert cli(["deploy", *base, "--no-verify", "-q"], capsys)[0] == 0
    code, _, err = cli(["reconfigure", *base, str(script), "--no-verify", "-q"], capsys)
    assert code == 0, err
    (directory,) = (here / ".madeus" / "state").iterdir()
    record = state.load(directory)
    assert record is not None
    extra = next(i for i in record.instances if i.name == "extra")
    assert (extra.type, extra.hosts, extra.places) == ("Client", ("edge1",), ("ready",))
    assert extra.params == {"token": {"secret": "env:STATE_TEST_KEY"}}
    assert "extra.api -> server.api" in [str(c) for c in record.connections]
    # The next program starts from there: on edge1, with its connection (the journal alone
    # keeps the type only: the local machine, no connection).
    shrink = here / "shrink.py"
    shrink.write_text(
        'def reconfigure(r):\n    r.push("extra", "uninstall")\n    r.wait("extra")\n'
    )
    code, out, err = cli(["plan", *base, "--reconfigure", str(shrink), "--format", "json"], capsys)
    assert code == 0, err
    hosts = {t["id"]: t["hosts"] for t in json.loads(out)["transitions"]}
    assert hosts == {"extra.detach": ["edge1"]}


def test_a_limited_run_updates_only_its_part_of_the_record(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = here / "pair.mad"
    file.write_text(
        SOURCE.replace("Server(port = 8080)", "Server(port = 8080) on all").replace(
            "client = Client", "client = Client on h1"
        )
    )
    inventory = here / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    h1: {ansible_connection: local}\n    h2: {ansible_connection: local}\n"
    )
    base = [str(file), "-i", str(inventory)]
    assert cli(["deploy", *base, "--no-verify", "-q"], capsys)[0] == 0
    code, _, err = cli(["deploy", *base, "--no-verify", "-q", "-l", "h2", "--redeploy"], capsys)
    assert code == 0, err
    assert "note: --limit h2: left out client (not needed there); server not on h1" in err
    (directory,) = (here / ".madeus" / "state").iterdir()
    record = state.load(directory)
    assert record is not None
    assert {i.name: i.hosts for i in record.instances} == {
        "server": ("h1", "h2"),
        "client": ("h1",),
    }
    assert [str(c) for c in record.connections] == ["client.api -> server.api"]
    code, out, _ = cli(["plan", *base, "--detailed-exitcode"], capsys)
    assert code == 0, out
