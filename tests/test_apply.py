"""`madeus plan` and `madeus apply` against a state of record: the change is synthesised from the
lifecycles (`madeus.reconfig.synthesis`), verified, predicted and run. Real deployments on this
machine (shell actions appending to a log, so the order they ran in is on disk), the CLI as an
operator runs it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from madeus import state
from madeus.cli import main
from madeus.errors import MadeusError

SOURCE = """
component Db(size: int = 1) {
    places off*, installed, running, stopped
    transition install: off -> installed  shell "echo db.install >> log"  ~0.01s
    transition start: installed -> running  shell "echo db.start {size} >> log"  ~0.01s
    transition stop: running -> stopped  shell "echo db.stop >> log"  ~0.01s  behaviour stop
    transition restart: stopped -> running
        shell "echo db.restart {size} >> log"  ~0.01s  behaviour update
    transition wipe: stopped -> off  shell "echo db.wipe >> log"  ~0.01s  behaviour uninstall
    provide service sql at running
    on change of size: stop, update
}
component Web(motto: str = "hi") {
    places off*, serving, paused
    transition start: off -> serving  shell "echo {name}.start {motto} >> log"  ~0.01s
    transition pause: serving -> paused  shell "echo {name}.pause >> log"  ~0.01s  behaviour stop
    transition resume: paused -> serving
        shell "echo {name}.resume {motto} >> log"  ~0.01s  behaviour resume
    transition drop: paused -> off  shell "echo {name}.drop >> log"  ~0.01s  behaviour uninstall
    use service sql for start, serving
    on change of motto: stop, resume
}
component Cache(size: int = 1) {
    places off*, on
    transition start: off -> on  shell "echo cache.start {size} >> log"  ~0.01s
    transition stop: on -> off  shell "echo cache.stop >> log"  ~0.01s  behaviour uninstall
}
assembly app {
    db = Db
    web = Web
    cache = Cache
    connect web.sql -> db.sql
}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The assembly in `tmp/`, deployed; madeus runs from there (the actions' log is there)."""
    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    source = SOURCE.replace("{name}", "web")
    (tmp_path / "app.mad").write_text(source)
    assert main(["deploy", "app.mad", "-q"]) == 0
    (tmp_path / "log").write_text("")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def edit(project: Path, old: str, new: str) -> None:
    file = project / "app.mad"
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new))


def ran(project: Path) -> list[str]:
    return (project / "log").read_text().splitlines()


def record(project: Path) -> state.Record:
    (directory,) = (project / ".madeus" / "state").iterdir()
    found = state.load(directory)
    assert found is not None
    return found


def test_a_changed_parameter_runs_its_behaviours_and_pauses_only_the_users_in_use(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, "    db = Db\n", "    db = Db(size = 2)\n")
    code, out, err = cli(capsys, "plan", "app.mad", "--detailed-exitcode")
    assert (code, err) == (2, "")
    program = out.split("program (synthesised")[1].split("\n\n")[0].splitlines()[1:]
    assert program == [
        "  push('web', 'stop')",
        "  push('db', 'stop')",
        "  push('db', 'update')",
        "  wait('db')",
        "  push('web', 'resume')",
        "  wait_all()",
    ]
    assert "web pauses (stop, then resume): sql in use" in out
    assert "critical path (*):  db.stop -> db.restart -> web.resume" in out
    assert ran(project) == []  # plan runs nothing
    code, out, err = cli(capsys, "apply", "app.mad", "-q")
    assert code == 0, err
    log = ran(project)
    # The cache is not touched; the web leaves `serving` before the db stops, and comes back
    # once the db runs again, with the new size.
    assert sorted(log) == ["db.restart 2", "db.stop", "web.pause", "web.resume hi"]
    assert log.index("db.restart 2") < log.index("web.resume hi")
    assert "applied app: 4/4 jobs ok" in out
    assert record(project).complete
    assert cli(capsys, "plan", "app.mad", "--detailed-exitcode")[0] == 0
    code, out, _ = cli(capsys, "apply", "app.mad")
    assert code == 0 and out.startswith("No changes: the deployment matches its state of record")
    assert len(ran(project)) == 4


def test_instances_added_and_removed_deploy_and_uninstall_in_a_safe_order(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, "    web = Web\n", '    shop = Web(motto = "new")\n')
    edit(project, "connect web.sql -> db.sql", "connect shop.sql -> db.sql")
    code, out, _ = cli(capsys, "plan", "app.mad", "--format", "json", "--detailed-exitcode")
    assert code == 2
    document = json.loads(out)
    assert document["changes"]["add"] == ["shop"] and document["changes"]["remove"] == ["web"]
    assert document["program"] == [
        "add('shop', 'Web', hosts=['localhost'], motto='new')",
        'connect("shop.sql", "db.sql")',
        "push('shop', 'deploy')",
        "push('web', 'stop')",
        "push('web', 'uninstall')",
        "wait('web')",
        'disconnect("web.sql", "db.sql")',
        "remove('web')",
        "wait_all()",
    ]
    ids = sorted(t["id"] for t in document["transitions"])
    assert ids == ["shop.start", "web.drop", "web.pause"]
    assert document["predicted_makespan"] == pytest.approx(0.02)
    assert cli(capsys, "apply", "app.mad", "-q")[0] == 0
    assert sorted(ran(project)) == ["web.drop", "web.pause", "web.start new"]
    kept = record(project)
    assert [i.name for i in kept.instances] == ["db", "cache", "shop"]
    assert [str(c) for c in kept.connections] == ["shop.sql -> db.sql"]
    assert {i.name: i.params for i in kept.instances}["shop"] == {"motto": "new"}
    assert cli(capsys, "plan", "app.mad", "--detailed-exitcode")[0] == 0


def test_a_parameter_without_on_change_redeploys_the_instance_and_says_so(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = '$(touch pwned) \\"q\\" `id`'
    edit(project, "    cache = Cache\n", "    cache = Cache(size = 3)\n")
    edit(project, "    web = Web\n", f'    web = Web(motto = "{hostile}")\n')
    code, out, _ = cli(capsys, "apply", "app.mad", "-q")
    assert code == 0
    assert (
        "cache: size changed and Cache declares no `on change of` for it: redeployed "
        "(uninstall, deploy)" in out
    )
    log = ran(project)
    assert log.index("cache.stop") < log.index("cache.start 3")
    # The new motto reaches the shell as one word, run by nobody.
    assert 'web.resume $(touch pwned) "q" `id`' in log
    assert not (project / "pwned").exists()


def test_a_change_that_cannot_be_made_safely_is_refused_before_anything_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The db restarts, and the web has no behaviour that leaves `serving` any more: the db
    # would wait for it forever.
    text = (project / "app.mad").read_text()
    gone = ("transition pause", "transition resume", "web.resume", "transition drop", "of motto")
    kept = [line for line in text.splitlines() if not any(g in line for g in gone)]
    (project / "app.mad").write_text("\n".join(kept) + "\n")
    edit(project, "places off*, serving, paused", "places off*, serving")
    edit(project, "    db = Db\n", "    db = Db(size = 2)\n")
    code, out, err = cli(capsys, "plan", "app.mad")
    assert code == 1
    assert "  ~ db (Db)\n      size: 1 -> 2\n" in out  # what changed, then why it cannot be
    assert 'error: the program can block: "db" cannot leave place "running"' in err
    assert "Traceback" not in err
    code, _, err = cli(capsys, "apply", "app.mad", "-q")
    assert code == 1
    assert "the synthesised program does not verify: nothing runs" in err
    assert ran(project) == []


def test_apply_on_nothing_deployed_deploys_then_a_change_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.mad").write_text(SOURCE.replace("{name}", "web"))
    code, out, _ = cli(capsys, "apply", "app.mad", "-q")
    assert code == 0 and "deployed app: 4/4 jobs ok" in out
    edit(tmp_path, "    db = Db\n", "    db = Db(size = 2)\n")
    # deploy with a state and changed files applies the change too
    code, out, _ = cli(capsys, "deploy", "app.mad", "-q")
    assert code == 0 and "applied app: 4/4 jobs ok" in out


def test_a_change_runs_with_keep_going_and_injected_failures_and_apply_completes_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, "    db = Db\n", "    db = Db(size = 2)\n")
    edit(project, "    cache = Cache\n", "    cache = Cache(size = 2)\n")
    before = ran(project)
    code, _, err = cli(capsys, "apply", "app.mad", "-q", "--inject-failure", "db.nope")
    assert code == 1
    assert '--inject-failure db.nope: no transition "db.nope" in the program' in err
    assert ran(project) == before  # refused before anything ran
    code, _, err = cli(
        capsys, "apply", "app.mad", "-q", "--keep-going", "--inject-failure", "db.restart"
    )
    assert code == 1
    assert "injected failure (--inject-failure db.restart@localhost): the action did not run" in err
    changed = ran(project)[len(before) :]
    # The failure stopped only what waits for db: the cache's redeploy ran to its end.
    assert sorted(changed) == ["cache.start 2", "cache.stop", "db.stop", "web.pause"]
    # The state of record keeps db where the failure left it (stopped), with the size of
    # record (its change did not end), the cache with its new size (its change ended): apply
    # runs db's change again from there and takes everything back to its deployed places, the
    # provider before its paused user.
    instances = {i.name: i for i in record(project).instances}
    assert instances["db"].places == ("stopped",) and instances["web"].places == ("paused",)
    assert instances["db"].params == {"size": 1} and instances["cache"].params == {"size": 2}
    code, out, _ = cli(capsys, "apply", "app.mad", "-q")
    assert code == 0
    assert "  ~ db (Db)\n      size: 1 -> 2\n" in out
    assert (
        "push('db', 'stop')\n  push('db', 'update')\n  wait('db')\n  push('web', 'resume')\n"
    ) in out
    assert ran(project)[len(before) + 4 :] == ["db.restart 2", "web.resume hi"]
    code, out, _ = cli(capsys, "plan", "app.mad")
    assert code == 0 and "No changes" in out


FLAKY = """
component Svc(name: str, v: int = 1) {
    places off*, on, stopped
    transition start: off -> on  shell "echo {name}.start {v} >> log"  ~0.01s
    transition stop: on -> stopped  shell "echo {name}.stop >> log"  ~0.01s  behaviour stop
    transition restart: stopped -> on
        shell "if test -e again; then echo {name}.restart {v} >> log; else touch again; exit 3; fi"
        ~0.01s  retries 1  behaviour update
    on change of v: stop, update
}
assembly flaky {
    a = Svc(name = "a")
    b = Svc(name = "b")
}
"""


def test_a_change_retries_with_backoff_under_a_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from madeus.trace import load

    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    source = FLAKY
    (tmp_path / "flaky.mad").write_text(source)
    code, _, err = cli(capsys, "apply", "flaky.mad", "-q")
    assert code == 0, err
    (tmp_path / "flaky.mad").write_text(source.replace("v: int = 1", "v: int = 2"))
    code, out, err = cli(
        capsys, "apply", "flaky.mad", "-f", "1", "--retry-backoff", "0.01", "--trace", "t.json"
    )
    assert code == 0, err
    assert "will retry" in out  # the first restart failed, the second attempt ran
    trace = load(tmp_path / "t.json")
    assert trace.limits is not None and trace.limits.max_parallel == 1
    events = sorted(trace.events, key=lambda e: e.start)
    assert all(a.end <= b.start + 1e-3 for a, b in itertools.pairwise(events))
    assert sorted(e.attempts for e in events if e.id.endswith(".restart")) == [1, 2]
    assert sorted(ran(tmp_path)[2:]) == ["a.restart 2", "a.stop", "b.restart 2", "b.stop"]


# --- synthesis on an inventory (the library: what the program is, nothing runs) ---------------

FAMILY = """
component Agent {
    places off*, on
    transition start: off -> on  shell "true"  ~1s
    transition stop: on -> off  shell "true"  ~1s  behaviour uninstall
    use service registry for on
}
component Registry {
    places off*, up
    transition start: off -> up  shell "true"  ~2s
    provide service registry at up
}
assembly fleet {
    registry = Registry on control
    web = Agent on web
    for site in sites {
        agent[site] = Agent on site
        connect agent[site].registry -> registry.registry
    }
    connect web.registry -> registry.registry
}
"""


def _deployment(tmp_path: Path, groups: dict[str, list[str]], sites: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    from madeus.frontend.load import load_text
    from madeus.inventory import inventory_from_dict
    from madeus.resolve import resolve

    hosts = sorted({h for members in groups.values() for h in members})
    data = {
        "all": {"hosts": {h: {"ansible_connection": "local"} for h in hosts}},
        **{g: {"hosts": {h: None for h in members}} for g, members in groups.items()},
        "sites": sites,
    }
    inventory = inventory_from_dict(data, str(tmp_path / f"inv-{len(hosts)}.yml"))
    module = load_text(FAMILY, str(tmp_path / "fleet.mad"))
    assert module.assembly is not None
    return resolve(module.assembly, inventory)


def test_synthesis_follows_the_inventory_a_site_added_hosts_changed_a_host_gone(
    tmp_path: Path,
) -> None:
    from madeus.reconfig.synthesis import synthesise
    from madeus.verify.behaviours import verify_program

    before = _deployment(
        tmp_path,
        {"control": ["c1"], "web": ["w1"], "edge1": ["e1"], "edge2": ["e2"]},
        {"edge1": ["e1"], "edge2": ["e2"]},
    )
    was = _as_deployed(before)
    # edge3 joins, edge2's host leaves the inventory.
    after = _deployment(
        tmp_path,
        {"control": ["c1"], "web": ["w1"], "edge1": ["e1"], "edge3": ["e3"]},
        {"edge1": ["e1"], "edge3": ["e3"]},
    )
    found = synthesise(was, after)
    program = [str(ins) for ins in found.program]
    assert program == [
        "add('agent[edge3]', 'Agent', hosts=['e3'])",
        'connect("agent[edge3].registry", "registry.registry")',
        "push('agent[edge3]', 'deploy')",
        "remove('agent[edge2]')",
        "wait_all()",
    ]
    assert found.notes == (
        "agent[edge2]: host e2 is no longer in the inventory: forgotten without running "
        "anything (keep the host in the inventory, outside the groups, to uninstall it)",
    )
    assert verify_program(found.configuration, found.program) == []
    # Nothing changed: nothing to run.
    same = _as_deployed(after)
    assert not synthesise(same, after)
    # A group that grows would move a deployed instance: refused, at the instance's line.
    grown = _deployment(
        tmp_path,
        {"control": ["c1"], "web": ["w1", "w2"], "edge1": ["e1"], "edge2": ["e2"]},
        {"edge1": ["e1"], "edge2": ["e2"]},
    )
    with pytest.raises(MadeusError) as refused:
        synthesise(was, grown)
    (problem,) = refused.value.diagnostics
    assert problem.message.startswith(
        '"web": its hosts changed (w1 -> w1, w2): apply cannot move or retype a deployed instance'
    )
    assert FAMILY.splitlines()[problem.span.line - 1] == "    web = Agent on web"


def _as_deployed(deployment):  # type: ignore[no-untyped-def]
    """The state of record of `deployment` completely deployed (written by the library: no
    run)."""
    from madeus.engine.journal import JournalState
    from madeus.reconfig.state import deployed

    file = deployment.assembly.span.path
    return state.record_of(
        deployed(deployment), JournalState(), file=file, inventory=None, complete=True
    )


DATA = """
component Vault(key: secret = env("APPLY_TEST_KEY")) {
    places off*, on
    transition start: off -> on  shell "true"  ~0.01s
    provide data key = "{key}" at off, on
    provide data where = "vault@{host.name}" at off, on
}
component App(tag: str = "a") {
    places off*, on
    transition start: off -> on
        shell "printf %s {key} | sha256sum | cut -c1-16 > app-{tag}.key"  ~0.01s
    use data key for start
    use data where for start
    provide data url = "{where}/{tag}" at off, on
}
component Client {
    places off*, on
    transition start: off -> on  shell "echo {url} > client.url"  ~0.01s
    use data url for start
}
assembly vaulted {
    vault = Vault
    app = App
    connect app.key -> vault.key
    connect app.where -> vault.where
}
"""


def test_added_instances_get_the_data_values_of_what_runs_secrets_included(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import uuid

    key = f"K3y-{uuid.uuid4().hex}"
    monkeypatch.setenv("APPLY_TEST_KEY", key)
    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.mad").write_text(DATA)
    assert cli(capsys, "deploy", "v.mad", "-q")[0] == 0
    # A second App and a Client of it: the Vault's secret key is in no record, so apply
    # computes it again; the Client's value is made of the new App's, made of the Vault's.
    edit_file = tmp_path / "v.mad"
    edit_file.write_text(
        DATA.replace(
            "    connect app.key -> vault.key\n",
            '    connect app.key -> vault.key\n    app2 = App(tag = "b")\n    client = Client\n'
            "    connect app2.key -> vault.key\n    connect app2.where -> vault.where\n"
            "    connect client.url -> app2.url\n",
        )
    )
    code, out, err = cli(capsys, "apply", "v.mad", "-q")
    assert code == 0, out + err
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    assert (tmp_path / "app-b.key").read_text().strip() == digest
    assert (tmp_path / "client.url").read_text().strip() == "vault@localhost/b"
    assert key not in out + err
    for path in (tmp_path / ".madeus").rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path


def test_a_reconfiguration_connects_to_every_host_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a deployment does: an unreachable host stops `destroy` (and `reconfigure`, `apply`)
    before any job starts, on the local host or elsewhere."""
    from sshd_helpers import closed_port

    monkeypatch.chdir(tmp_path)
    port = closed_port()
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    here: {ansible_connection: local}\n"
        f"    lost-1: {{ansible_host: 127.0.0.1, ansible_port: {port}, ansible_user: root}}\n"
    )
    (tmp_path / "two.mad").write_text(
        "component C {\n    places off*, on\n"
        '    transition start: off -> on  shell "true"\n'
        '    transition stop: on -> off  shell "echo {host.name} >> stopped"  behaviour uninstall\n'
        "}\nassembly two {\n    a = C on here\n    b = C on lost-1\n}\n"
    )
    code, _, err = cli(
        capsys, "destroy", "two.mad", "-i", "inventory.yml", "--assume-deployed", "-q"
    )
    assert code == 1
    assert f"cannot connect to lost-1 (127.0.0.1:{port}): connection refused" in err
    assert not (tmp_path / "stopped").exists()  # not even on the reachable host


def test_apply_after_a_cut_off_run_leaves_the_unsettled_transition_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment interrupted (Ctrl-C) while a transition that is not idempotent runs: a
    change would run it again without asking; apply refuses and names the resume that settles
    it, as `deploy --resume` would."""
    import signal
    import subprocess
    import sys
    import time

    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    source = (
        "component Slow {\n    places a*, b\n"
        '    transition slow: a -> b  shell "echo run >> ran; test -e fast || sleep 30"  ~1s\n'
        "}\nassembly s {\n    x = Slow\n}\n"
    )
    file = tmp_path / "s.mad"
    file.write_text(source)
    script = "import sys; from madeus.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.Popen(
        [sys.executable, "-c", script, "deploy", "s.mad", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "ran").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130
    (tmp_path / "fast").touch()
    added = source.replace("    x = Slow\n", "    x = Slow\n    y = Slow\n")
    file.write_text(added)
    code, _, err = cli(capsys, "apply", "s.mad", "-q")
    assert code == 1
    assert 'transition "x.slow" was cut off on host "localhost" when run ' in err
    assert "--assume-done x.slow@localhost" in err
    assert (tmp_path / "ran").read_text() == "run\n"  # nothing ran again, y not deployed
    # Settled by the resume (of the files as they were), the change applies: y deploys.
    file.write_text(source)
    assert cli(capsys, "deploy", "s.mad", "--resume", "--assume-done", "x.slow", "-q")[0] == 0
    assert (tmp_path / "ran").read_text() == "run\n"
    file.write_text(added)
    code, out, err = cli(capsys, "apply", "s.mad", "-q")
    assert code == 0, out + err
    assert "  + y (Slow) on localhost" in out
    assert (tmp_path / "ran").read_text() == "run\nrun\n"


ROLLING = """
component Api(version: str = "1") {
    places off*, serving, stopped
    transition start: off -> serving  shell "echo start {host.name} {version} >> log"  ~0.01s
    transition stop: serving -> stopped
        shell "echo stop {host.name} >> log; sleep 0.05; echo stopped {host.name} >> log"
        ~0.05s  behaviour stop
    transition restart: stopped -> serving
        shell "echo restart {host.name} {version} >> log; sleep 0.05; echo up {host.name} >> log"
        ~0.05s  behaviour update
    provide service api at serving
    on change of version: stop, update
}
component Client {
    places off*, using, paused
    transition start: off -> using  shell "echo client.start >> log"  ~0.01s
    transition pause: using -> paused  shell "echo client.pause >> log"  ~0.01s  behaviour stop
    transition resume: paused -> using  shell "echo client.resume >> log"  ~0.01s  behaviour resume
    use service api for start, using
}
assembly app {
    api = Api on web serial 1
    client = Client on here
    connect client.api -> api.api
}
"""


def test_a_rolling_change_keeps_the_service_up_one_host_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serial 1` on an instance of three hosts: a changed parameter runs its behaviours host
    after host, each host's whole change before the next; the client, which uses the service
    all along, is not paused (two hosts serve while one changes), the plan predicts the three
    batches in a row and the run follows it. Without `serial`, the client pauses."""
    monkeypatch.delenv("MADEUS_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    here: {ansible_connection: local}\n"
        "  children:\n    web:\n      hosts:\n"
        + "".join(f"        w{k}: {{ansible_connection: local}}\n" for k in (1, 2, 3))
    )
    (tmp_path / "app.mad").write_text(ROLLING)
    assert main(["deploy", "app.mad", "-i", "inventory.yml", "-q"]) == 0
    (tmp_path / "log").write_text("")
    edit(tmp_path, "api = Api on web serial 1", 'api = Api(version = "2") on web serial 1')
    code, out, err = cli(capsys, "plan", "app.mad", "-i", "inventory.yml")
    assert (code, err) == (0, "")
    program = out.split("program (synthesised")[1].split("\n\n")[0].splitlines()[1:]
    assert program == ["  push('api', 'stop')", "  push('api', 'update')", "  wait_all()"]
    assert "pauses" not in out
    assert "api changes in 3 batches, one after the other (serial 1): w1, then w2, then w3" in out
    assert "api#1.stop -> api#1.restart -> api#2.stop -> api#2.restart -> api#3.stop" in out
    code, out, err = cli(capsys, "apply", "app.mad", "-i", "inventory.yml", "-q")
    assert code == 0, err
    assert ran(tmp_path) == [
        line
        for k in (1, 2, 3)
        for line in (f"stop w{k}", f"stopped w{k}", f"restart w{k} 2", f"up w{k}")
    ]
    assert cli(capsys, "plan", "app.mad", "-i", "inventory.yml", "--detailed-exitcode")[0] == 0
    # A change that fails in the second batch: the record keeps each batch's places and the
    # version of record (the change did not end); the next apply runs on each batch what it
    # lacks, still one batch at a time.
    edit(tmp_path, 'Api(version = "2")', 'Api(version = "3")')
    (tmp_path / "log").write_text("")
    code, _, err = cli(
        capsys,
        "apply",
        "app.mad",
        "-i",
        "inventory.yml",
        "-q",
        "--inject-failure",
        "api.restart@w2",
    )
    assert code == 1
    assert "injected failure (--inject-failure api.restart@w2)" in err
    assert ran(tmp_path) == [
        "stop w1",
        "stopped w1",
        "restart w1 3",
        "up w1",
        "stop w2",
        "stopped w2",
    ]
    (api,) = [i for i in record(tmp_path).instances if i.name == "api"]
    assert api.params == {"version": "2"}
    assert api.places == ("serving", "stopped")
    assert api.batches == (("serving",), ("stopped",), ("serving",))
    (tmp_path / "log").write_text("")
    code, out, err = cli(capsys, "apply", "app.mad", "-i", "inventory.yml", "-q")
    assert code == 0, err
    assert ran(tmp_path) == [
        *("stop w1", "stopped w1", "restart w1 3", "up w1"),
        *("restart w2 3", "up w2"),
        *("stop w3", "stopped w3", "restart w3 3", "up w3"),
    ]
    assert cli(capsys, "plan", "app.mad", "-i", "inventory.yml", "--detailed-exitcode")[0] == 0
    # The same change without `serial`: the service stops on every host at once, so the
    # client must pause first.
    edit(tmp_path, 'api = Api(version = "3") on web serial 1', 'api = Api(version = "4") on web')
    code, out, err = cli(capsys, "plan", "app.mad", "-i", "inventory.yml")
    assert code == 0, err
    assert "client pauses (stop, then resume): api in use" in out
