"""Secrets never leave the process: a `secret` parameter whose value is a unique marker is
deployed (failing, then resumed), planned, drawn and inspected; the marker must not appear in
any file under .madeus/ (logs, traces, plans, the journal, the lock), in any output file (trace,
Gantt charts, graphs, plan), in anything printed, in events or in error messages. Files the
tool writes are private (0600 files, 0700 directories)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.engine import DeployError, deploy
from madeus.engine.events import Event
from madeus.engine.journal import state_dir

SOURCE = """
component Db(password: secret, user: str = "admin") {
    places a*, b, c
    transition init: a -> b   shell "echo init {password}; echo warn {password} >&2"  ~0.01s
    transition token: b -> c  shell "echo token-{password}"  ~0.01s
    provide data url = "postgres://{user}:{password}@{host.name}/db" at c
    provide data tok = output of token at c
}
component App {
    places a*, b, c
    transition configure: a -> b  shell "echo using {url}; echo {url} >&2; echo {tok}"  ~0.01s
    transition start: b -> c
        shell "test -e go || {{ echo no go for {url} >&2; exit 3; }}; echo {url} > resumed-url.txt"
    use data url for configure, start
    use data tok for configure
}
assembly secrets {
    db = Db(password = env("MADEUS_SECRET_TEST"))
    app = App
    connect app.url -> db.url
    connect app.tok -> db.tok
}
"""


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.chdir(tmp_path)
    value = f"S3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("MADEUS_SECRET_TEST", value)
    (tmp_path / "secrets.mad").write_text(SOURCE)
    return value


def leaks(root: Path, marker: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and marker.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_a_secret_appears_nowhere(
    tmp_path: Path, marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    printed: list[str] = []

    def run(*argv: str) -> int:
        code = main(list(argv))
        captured = capsys.readouterr()
        printed.extend([captured.out, captured.err])
        return code

    # A failing run: the command's stderr (holding the value) is in the failure report.
    deploy_args = ["deploy", "secrets.mad", "--no-verify"]
    assert run(*deploy_args, "--trace", f"{outputs}/t1.json", "--gantt", f"{outputs}/g.svg") == 1
    assert 'transition "app.start" failed on host "localhost" (exit status 3)' in printed[-1]
    assert "stderr (last lines):\n  no go for ******\n" in printed[-1]  # the whole value
    assert run("status", "secrets.mad") == 0
    # Resumed: the url (derived from the secret, so never journaled) is computed again.
    (tmp_path / "go").touch()
    assert run(*deploy_args, "--resume", "--gantt", f"{outputs}/g.html") == 0
    assert (tmp_path / "resumed-url.txt").read_text() == f"postgres://admin:{marker}@localhost/db\n"
    assert run("status", "secrets.mad", "--format", "json") == 0
    # A rehearsal, an injected failure, a plan, every drawing.
    assert run(*deploy_args, "--simulate", "--inject-failure", "app.start") == 1
    assert run("plan", "secrets.mad") == 0
    assert run("plan", "secrets.mad", "--format", "json", "-o", f"{outputs}/plan.json") == 0
    assert run("check", "secrets.mad", "--no-verify") == 0
    for view in ("assembly", "net", "plan", "component:Db", "component:App"):
        name = view.replace(":", "-")
        assert run("graph", "secrets.mad", "--view", view, "-o", f"{outputs}/{name}.dot") == 0
    assert run("graph", "secrets.mad", "-o", f"{outputs}/assembly.svg") == 0

    assert leaks(tmp_path / ".madeus", marker) == []
    assert leaks(outputs, marker) == []
    assert [text for text in printed if marker in text] == []
    # The logs hold the redacted lines, the journal the redacted output.
    (run_dir, *_) = sorted((tmp_path / ".madeus" / "runs").iterdir())
    assert (run_dir / "db.init@localhost.out").read_text() == "init ******\n"
    assert (run_dir / "db.init@localhost.err").read_text() == "warn ******\n"
    text = (state_dir("secrets.mad") / "journal.jsonl").read_text()
    assert '"out":"token-******"' in text
    assert '"p":"db.url"' not in text  # derived from the secret: never written
    assert '"p":"db.tok"' in text


def test_files_the_tool_writes_are_private(marker: str, tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    old = os.umask(0o002)  # a lax umask: the tool must not rely on it
    try:
        assert main(["deploy", "secrets.mad", "--no-verify"]) == 0
        # A fresh run: history/
        assert main(["deploy", "secrets.mad", "--no-verify", "--redeploy"]) == 0
    finally:
        os.umask(old)
    madeus = tmp_path / ".madeus"
    paths = [madeus, *madeus.rglob("*")]
    assert any(p.name == "journal.jsonl" for p in paths)
    assert any(p.name == "history" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_events_and_errors_from_the_library_hold_no_secret(marker: str, tmp_path: Path) -> None:
    events: list[Event] = []
    with pytest.raises(DeployError) as caught:
        asyncio.run(deploy("secrets.mad", on_event=events.append, run_dir=tmp_path / "run"))
    error = caught.value
    texts = [repr(e) for e in events] + [str(error), repr(error.failures), error.stderr_tail]
    texts += [f.describe() for f in error.failures]
    assert [t for t in texts if marker in t] == []
    assert error.stderr_tail == "no go for ******"


REMOTE = """
component Remote(password: secret, dest: str) {
    places a*, b, c
    transition shell: a -> b  shell "PW={password} sleep 1.{n}; echo got {password}"
    transition play: b -> c  ansible tasks "play.yml"
}
assembly remote {
    r = Remote(password = env("MADEUS_SECRET_TEST"), dest = env("MADEUS_TEST_DEST")) on nodes
}
"""


@pytest.mark.parametrize("given", ["env", "extra-vars"])
def test_over_ssh_and_ansible_a_secret_is_in_no_file_and_no_command_line(
    given: str,
    marker: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a real SSH host (loopback sshd: its processes are on this machine's process table),
    through the SSH and the Ansible backends: the marker never appears in `ps` while the
    actions run, nor in any file under .madeus/, nor in what is printed. The secret comes from
    the environment, or from `-e` (given to madeus in-process here: its own command line is
    the operator's; ansible-inventory and ansible-playbook get it on standard input)."""
    from hostile_values import process_listings
    from sshd_helpers import running_sshd

    n = f"{uuid.uuid4().int % 10**6:06d}"
    (tmp_path / "remote.mad").write_text(REMOTE.replace("{n}", n))
    # The module's arguments travel in its payload (pipelined on standard input), never on
    # the host's command line. (A task's `environment:` would: Ansible prefixes it to the
    # remote command; docs/remote.md says so.)
    (tmp_path / "play.yml").write_text(
        "- ansible.builtin.copy: {content: '{{ password }}', dest: '{{ dest }}'}\n"
        "- ansible.builtin.command: sleep 1.5\n"
    )
    monkeypatch.setenv("MADEUS_TEST_DEST", str(tmp_path / "copied"))
    with running_sshd(tmp_path / "ssh", hosts=("node-1",)) as sshd:
        inventory = sshd.write_inventory()
        extra = ["-e", json.dumps({"password": marker})] if given == "extra-vars" else []
        if extra:
            monkeypatch.setenv("MADEUS_SECRET_TEST", "not-this-one")
        with process_listings() as seen:
            code = main(["deploy", "remote.mad", "-i", str(inventory), "--no-verify", *extra])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert any(f"sleep 1.{n}" in listing for listing in seen)  # ps looked while it ran
    assert [listing for listing in seen if marker in listing] == []
    assert leaks(tmp_path / ".madeus", marker) == []
    assert marker not in printed.out + printed.err
    (run_dir,) = (tmp_path / ".madeus" / "runs").iterdir()
    assert (run_dir / "r.shell@node-1.out").read_text() == "got ******\n"
    assert (tmp_path / "copied").read_text() == marker  # it did arrive where it belongs
