"""The journal: records, torn tails, the lock, history, durability and `madeus status`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from madeus.backends.base import Job, Outcome
from madeus.cli import main
from madeus.engine import DeployError, JournalError, JournalLocked, deploy, open_journal
from madeus.engine.journal import (
    HISTORY_KEEP,
    Journal,
    read_journal,
    read_lock_holder,
    read_state,
    state_dir,
    state_key,
)
from madeus.model import (
    Assembly,
    ComponentType,
    Instance,
    InstanceRef,
    Place,
    ShellAction,
    Transition,
)
from madeus.resolve import resolve

ROOT = Path(__file__).resolve().parent.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
INVENTORY = ROOT / "assemblies" / "openstack" / "inventory.yml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def mad(tmp_path: Path, name: str = "app.mad") -> Path:
    path = tmp_path / name
    path.write_text(
        "component A { places a*, b\n transition go: a -> b }\nassembly app { x = A }\n"
    )
    return path


def test_records_fold_into_the_state(tmp_path: Path) -> None:
    with open_journal(mad(tmp_path), None, command=["madeus", "deploy", "app.mad"]) as journal:
        journal.begin_run("run-1", resume=False, run_dir=".madeus/runs/run-1")
        journal.record_start("x.go", "h1")
        journal.record_start("x.go", "h2")
        journal.record_start("x.stop", "h1")
        journal.record_end("x.go", "h1", "ok", output="hello")
        journal.record_end("x.stop", "h1", "failed")
        journal.record_data("x.endpoint", "http://h1:80/")
        journal.record_marking("x", ["b", "a"])
        journal.record_instances({"x": "A", "y": "B"})
        journal.end_run("failed")
        state = journal.state()
    assert state.ended == {("x.go", "h1")}
    assert state.running == {("x.go", "h2")}
    assert state.failed == {("x.stop", "h1")}
    assert state.data == {"x.endpoint": "http://h1:80/"}
    assert state.markings == {"x": frozenset({"a", "b"})}
    assert state.instances == {"x": "A", "y": "B"}
    assert state.jobs[("x.go", "h1")].output == "hello"
    assert state.jobs[("x.go", "h1")].run == "run-1"
    (run,) = state.runs
    assert (run.id, run.resume, run.status, run.run_dir) == (
        "run-1",
        False,
        "failed",
        ".madeus/runs/run-1",
    )
    assert run.command == ("madeus", "deploy", "app.mad")
    assert run.pid == os.getpid()


def test_no_reconfiguration_means_no_instances() -> None:
    assert read_state("missing.jsonl").instances is None
    assert read_state("missing.jsonl").markings == {}


def test_files_are_private(tmp_path: Path) -> None:
    source = mad(tmp_path)
    with open_journal(source, None) as journal:
        journal.begin_run("r1", resume=False)
        journal.begin_run("r2", resume=False)  # the first goes to history/
        directory = journal.directory
    for path in (tmp_path / ".madeus", tmp_path / ".madeus" / "state", directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((directory / "history").stat().st_mode) == 0o700
    for path in [
        directory / "journal.jsonl",
        directory / "lock",
        *(directory / "history").iterdir(),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_key_names_the_file_and_hashes_file_and_inventory(tmp_path: Path) -> None:
    source = mad(tmp_path)
    key = state_key(source, None)
    assert key.startswith("app-") and len(key) == len("app-") + 12
    assert state_key(source, None) == state_key(Path("app.mad"), None)  # relative or not
    assert state_key(source, INVENTORY) != key
    assert state_key(mad(tmp_path, "other.mad"), None) != key
    assert state_dir(source) == tmp_path / ".madeus" / "state" / key  # beside the assembly


def test_a_torn_last_record_is_ignored_then_cut(tmp_path: Path) -> None:
    source = mad(tmp_path)
    with open_journal(source, None) as journal:
        journal.begin_run("r1", resume=False)
        journal.record_end("x.go", "h", "ok")
        path = journal.path
    with open(path, "ab") as handle:
        handle.write(b'{"k":"end","t":"x.other","h":"h","s":"o')  # the crash, mid-write
    state = read_state(path)
    assert state.torn
    assert state.ended == {("x.go", "h")}
    with open_journal(source, None) as journal:
        journal.begin_run("r2", resume=True)  # cuts the torn tail before appending
        journal.record_end("x.other", "h", "ok")
        state = journal.state()
    assert not state.torn
    assert state.ended == {("x.go", "h"), ("x.other", "h")}
    assert [r.id for r in state.runs] == ["r1", "r2"]
    for line in path.read_text().splitlines():
        json.loads(line)


def test_a_damaged_record_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(
        '{"k":"start","t":"a","h":"h"}\n{"k":"sta\n{"k":"end","t":"a","h":"h","s":"ok"}\n'
    )
    with pytest.raises(JournalError) as caught:
        read_state(path)
    assert str(caught.value) == (
        f"the journal {path} is damaged at line 2 (a valid record follows)"
    )


def test_the_lock_keeps_a_second_run_out_and_names_the_holder(tmp_path: Path) -> None:
    source = mad(tmp_path)
    first = open_journal(source, None, command=["madeus", "deploy", "app.mad"])
    try:
        with pytest.raises(JournalLocked) as caught:
            open_journal(source, None)
        holder = caught.value.holder
        assert holder.pid == os.getpid()
        assert holder.command == ("madeus", "deploy", "app.mad")
        message = str(caught.value)
        assert message.startswith(
            f"another run holds the journal {first.directory}: pid {os.getpid()} on host "
        )
        assert message.endswith(": madeus deploy app.mad (wait for it to end, or stop it)")
        assert read_lock_holder(first.directory) == holder
        # Another inventory is another journal: no conflict.
        open_journal(source, INVENTORY).close()
    finally:
        first.close()
    assert read_lock_holder(first.directory) is None
    open_journal(source, None).close()


def test_a_fresh_run_keeps_the_previous_journals_as_history(tmp_path: Path) -> None:
    source = mad(tmp_path)
    with open_journal(source, None) as journal:
        for n in range(HISTORY_KEEP + 3):
            journal.begin_run(f"r{n}", resume=False)
            journal.record_end("x.go", "h", "ok")
        state = journal.state()
        history = sorted((journal.directory / "history").iterdir())
    assert [r.id for r in state.runs] == [f"r{HISTORY_KEEP + 2}"]
    assert len(history) == HISTORY_KEEP
    assert [r.id for r in read_state(history[-1]).runs] == [f"r{HISTORY_KEEP + 1}"]


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError) as caught:
        open_journal(mad(tmp_path), None, base="/proc/madeus-state")
    assert str(caught.value).startswith("cannot use the journal directory /proc/madeus-state")


def test_last_stop_reads_the_tail(tmp_path: Path) -> None:
    with open_journal(mad(tmp_path), None) as journal:
        assert journal.last_stop() is None
        journal.begin_run("r1", resume=False)
        assert journal.last_stop() == "unfinished"
        journal.end_run("interrupted")
        assert journal.last_stop() == "interrupted"


# --- the engine writes it ----------------------------------------------------------------------


def chain(n: int, *, action: bool = True, idempotent: bool | None = None) -> Assembly:
    places = tuple(Place(f"p{k}", initial=k == 0) for k in range(n + 1))
    transitions = tuple(
        Transition(
            f"t{k}",
            f"p{k}",
            f"p{k + 1}",
            ShellAction("true") if action else None,
            idempotent=idempotent,
        )
        for k in range(n)
    )
    component = ComponentType("Chain", places=places, transitions=transitions)
    return Assembly("chain", (component,), (Instance(InstanceRef("c"), "Chain"),))


def fan(n: int) -> Assembly:
    component = ComponentType(
        "One",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("go", "a", "b", ShellAction("true")),),
    )
    return Assembly(
        "fan", (component,), tuple(Instance(InstanceRef(f"i{k}"), "One") for k in range(n))
    )


class DurabilityProbe:
    """A backend that, when a job runs, reads the journal file from disk: its own start record
    and the end of every job it depends on must already be there."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.seen: list[tuple[str, bool, set[str]]] = []

    async def run(self, job: Job) -> Outcome:
        state = read_state(self.journal.path)
        started = state.jobs.get((job.id, job.host.name))
        ended = {tid for tid, _ in state.ended}
        self.seen.append((job.id, started is not None and started.status == "running", ended))
        await asyncio.sleep(0)
        return Outcome(ok=True)

    async def aclose(self) -> None:
        return None


def test_a_start_record_is_on_disk_before_the_job_runs(tmp_path: Path) -> None:
    with open_journal(mad(tmp_path), None) as journal:
        probe = DurabilityProbe(journal)
        asyncio.run(deploy(resolve(chain(5)), backend=probe, journal=journal))
        assert [(tid, on_disk) for tid, on_disk, _ in probe.seen] == [
            (f"c.t{k}", True) for k in range(5)
        ]
        for k, (_, _, ended) in enumerate(probe.seen):
            assert {f"c.t{m}" for m in range(k)} <= ended  # the predecessors' ends too
        state = journal.state()
    assert state.ended == {(f"c.t{k}", "localhost") for k in range(5)}
    assert state.last_run is not None and state.last_run.status == "ok"


def test_group_commit_writes_once_per_loop_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[int] = []  # records per write
    with open_journal(mad(tmp_path), None) as journal:
        original = journal.write

        def counted(data: bytes) -> None:
            flushes.append(data.count(b"\n"))
            original(data)

        monkeypatch.setattr(journal, "write", counted)
        probe = DurabilityProbe(journal)
        asyncio.run(deploy(resolve(fan(200)), backend=probe, journal=journal))
        state = journal.state()
    assert len(state.ended) == 200
    # 200 start records in one write (the turn that started them), then the ends: far fewer
    # writes than the 400 records.
    assert 200 in flushes
    assert len(flushes) < 50, flushes


def test_zero_time_jobs_are_journaled_without_slowing_down(tmp_path: Path) -> None:
    with open_journal(mad(tmp_path), None) as journal:
        asyncio.run(deploy(resolve(chain(2000, action=False)), journal=journal))
        state = journal.state()
    assert len(state.ended) == 2000
    assert not state.running


class GateKeeper:
    """A backend that notes, when each job runs, whether `gate` is open."""

    def __init__(self, gate: threading.Event, opener: str | None = None) -> None:
        self.gate = gate
        self.opener = opener
        self.seen: list[tuple[str, bool]] = []

    async def run(self, job: Job) -> Outcome:
        self.seen.append((job.id, self.gate.is_set()))
        if job.id == self.opener:
            self.gate.set()
        await asyncio.sleep(0)
        return Outcome(ok=True)

    async def aclose(self) -> None:
        return None


def _held(journal: Journal, gate: threading.Event, log: list[bool]) -> None:
    """Make the writes that hold a start record wait for `gate` (10 s at most), noting whether
    it opened."""
    original = journal.write

    def held(data: bytes) -> None:
        if b'"k":"start"' in data:
            log.append(gate.wait(10))
        original(data)

    journal.write = held  # type: ignore[method-assign]


def test_the_disk_never_holds_the_event_loop(tmp_path: Path) -> None:
    """Idempotent actions do not wait for their start records: with the journal's first write
    held back, the whole chain still runs (its last job opens the gate), then everything is
    written. Were the write on the loop, nothing would run until it gave up."""
    gate = threading.Event()
    opened: list[bool] = []
    with open_journal(mad(tmp_path), None) as journal:
        _held(journal, gate, opened)
        keeper = GateKeeper(gate, opener="c.t4")
        asyncio.run(deploy(resolve(chain(5, idempotent=True)), backend=keeper, journal=journal))
        state = journal.state()
    assert keeper.seen == [(f"c.t{k}", False) for k in range(5)]
    assert opened and all(opened)
    assert state.ended == {(f"c.t{k}", "localhost") for k in range(5)}


def test_an_action_that_is_not_idempotent_waits_for_its_start_record(tmp_path: Path) -> None:
    gate = threading.Event()
    opened: list[bool] = []
    timer = threading.Timer(0.2, gate.set)
    with open_journal(mad(tmp_path), None) as journal:
        _held(journal, gate, opened)
        keeper = GateKeeper(gate)
        timer.start()
        try:
            asyncio.run(deploy(resolve(chain(3)), backend=keeper, journal=journal))
        finally:
            timer.cancel()
    # Each job ran after the write that held its start record: never before the gate opened.
    assert keeper.seen == [(f"c.t{k}", True) for k in range(3)]


def test_a_job_stopped_while_its_start_record_is_written_never_ran(tmp_path: Path) -> None:
    """Cancelled while waiting for the disk: its start is withdrawn (`unstart`), so a resume
    does not ask whether its action ran."""
    gate = threading.Event()
    opened: list[bool] = []
    with open_journal(mad(tmp_path), None) as journal:
        _held(journal, gate, opened)
        keeper = GateKeeper(gate)

        async def stopped() -> None:
            run = asyncio.ensure_future(deploy(resolve(chain(2)), backend=keeper, journal=journal))
            await asyncio.sleep(0.05)
            run.cancel()
            gate.set()
            with contextlib.suppress(asyncio.CancelledError):
                await run

        asyncio.run(stopped())
        state = journal.state()
    assert keeper.seen == []  # nothing ran
    assert not state.running and not state.ended


class FailingJournal(Journal):
    """Writes `allowed` flushes, then the disk is full."""

    allowed = 3

    def write(self, data: bytes) -> None:
        if data and self.allowed <= 0:
            raise JournalError(f"cannot write the journal {self.path}: No space left on device")
        if data:
            self.allowed -= 1
        super().write(data)


def test_a_journal_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    opened = open_journal(mad(tmp_path), None)
    opened.__class__ = FailingJournal
    ran: list[str] = []

    class Recorder:
        async def run(self, job: Job) -> Outcome:
            ran.append(job.id)
            await asyncio.sleep(0.01)
            return Outcome(ok=True)

        async def aclose(self) -> None:
            return None

    with opened as journal, pytest.raises(JournalError) as caught:
        asyncio.run(deploy(resolve(chain(20)), backend=Recorder(), journal=journal))
    assert str(caught.value).endswith("No space left on device")
    assert len(ran) < 5  # stopped at the first write that failed


# --- through the command line ------------------------------------------------------------------


def test_deploy_journals_and_status_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(OPENSTACK), "-i", str(INVENTORY)]
    simulate = ["--simulate", "--time-scale", "0.002", "--no-verify"]
    assert main(["deploy", *args, *simulate, "--inject-failure", "nova.upgrade_db"]) == 1
    capsys.readouterr()
    assert main(["status", *args]) == 0  # the real deployment's journal: nothing yet
    assert "(none yet: nothing deployed)\n" in capsys.readouterr().out
    assert main(["status", *args, "--simulate"]) == 0  # the rehearsal's
    out = capsys.readouterr().out
    state, holder, directory = read_journal(OPENSTACK, INVENTORY, simulate=True)
    assert directory.name.endswith("-simulate")
    assert holder is None
    assert out.startswith(f"journal:  {directory}/journal.jsonl\nlast run: {state.runs[0].id}, ")
    assert ", failed\nlock:     free\n" in out
    lines = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("mariadb.pull", "control-1", "done") in lines
    assert ("nova.upgrade_db", "control-1", "failed") in lines
    assert ("nova.cell_setup", "control-1", "not") in lines  # not started
    jobs, instances = out.split("\ninstances (state of record, updated ")
    assert jobs.rstrip().splitlines()[-1].endswith("(46 jobs)")
    # Then where each instance is, from the state of record: nova stopped half way.
    where = {line.split()[0]: line.split()[2:4] for line in instances.splitlines()[1:]}
    assert where["mariadb"] == ["deployed", "on"]
    assert where["nova"][0] == "in"
    assert main(["status", *args, "--simulate", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {i["name"]: i["deployed"] for i in report["instances"]}["mariadb"] is True
    by_job = {(j["id"], j["host"]): j["state"] for j in report["jobs"]}
    assert by_job[("nova.upgrade_db", "control-1")] == "failed"
    assert by_job[("nova.restart", "control-1")] == "not started"
    assert report["lock"] is None


def test_status_names_the_lock_holder_and_running_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = mad(tmp_path)
    with open_journal(source, None, command=["madeus", "deploy", "app.mad"]) as journal:
        journal.begin_run("r1", resume=False)
        journal.record_start("x.go", "localhost")
        assert main(["status", str(source)]) == 0
        out = capsys.readouterr().out
        assert f"lock:     held by pid {os.getpid()} on host " in out
        assert out.splitlines()[5].split()[:3] == ["x.go", "localhost", "running"]
    assert main(["status", str(source)]) == 0
    out = capsys.readouterr().out
    assert "lock:     free\n" in out
    assert "x.go        localhost  running when stopped  r1" in out


def test_status_without_a_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = mad(tmp_path)
    assert main(["status", str(source)]) == 0
    out = capsys.readouterr().out
    assert "(none yet: nothing deployed)\n" in out
    assert out.endswith("1 not started (1 jobs)\n")


def test_two_deploys_of_one_assembly_cannot_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = mad(tmp_path)
    with open_journal(source, None, command=["madeus", "deploy", "app.mad"]):
        assert main(["deploy", str(source), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"madeus: error: another run holds the journal {tmp_path}/.madeus/state/app-"
    )
    assert f": pid {os.getpid()} on host " in err
    assert not (tmp_path / ".madeus" / "runs").exists()  # nothing ran


def test_a_failed_deploy_error_lists_every_failure_with_keep_going(tmp_path: Path) -> None:
    deployment = resolve(fan(4))
    with pytest.raises(DeployError) as caught:
        asyncio.run(
            deploy(
                deployment,
                simulate=True,
                keep_going=True,
                inject_failures=["i1.go", "i3.go"],
            )
        )
    assert [f.transition for f in caught.value.failures] == ["i1.go", "i3.go"]
