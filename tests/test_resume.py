"""`--resume`: a run stopped at any point resumes to the state of an uninterrupted run.

The property test draws assemblies (parallel transitions, several hosts, service and data
ports, `output of T`), runs each once without interruption (the reference), then once stopped
at a random point (the task cancelled after k job ends, or failures injected at random
transitions, with or without --keep-going), then resumes until it succeeds. It checks that the
final journal holds the same ended jobs and data values as the reference, that no job that had
ended was run again, and that the resumed trace follows the semantics.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from madeus.backends.base import Job, Outcome
from madeus.cli import main
from madeus.engine import DeployError, JournalState, ResumeError, deploy, open_journal
from madeus.engine.events import Event, RunEnded, TransitionEnded
from madeus.engine.journal import Journal, read_journal
from madeus.engine.validate import validate
from madeus.errors import MadeusError
from madeus.inventory import inventory_from_dict
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    Instance,
    InstanceRef,
    OutputOf,
    Param,
    Place,
    PortRef,
    ProvidePort,
    Target,
    Transition,
    UsePort,
)
from madeus.plan import build_plan
from madeus.resolve import Deployment, resolve
from madeus.trace import Trace, load

INVENTORY = inventory_from_dict(
    {
        "all": {
            "children": {
                "pair": {
                    "hosts": {
                        "h1": {"ansible_connection": "local"},
                        "h2": {"ansible_connection": "local"},
                    }
                },
                "solo": {"hosts": {"h3": {"ansible_connection": "local"}}},
            }
        }
    }
)


class Recorder:
    """A backend with no side effect: a short deterministic sleep, and an output made of the
    job's id, host and every value it was given (so a wrong data value on resume shows in the
    outputs, and so in the data values computed from them)."""

    def __init__(self) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()

    async def run(self, job: Job) -> Outcome:
        self.runs[(job.id, job.host.name)] += 1
        digest = hashlib.sha256(f"{job.id}@{job.host.name}".encode()).digest()
        await asyncio.sleep(digest[0] % 4 / 1000)
        values = ",".join(f"{k}={v}" for k, v in sorted(job.values.items()) if "." not in k)
        return Outcome(ok=True, output=f"{job.id}@{job.host.name}[{values}]")

    async def aclose(self) -> None:
        return None


# --- random assemblies --------------------------------------------------------------------------


@st.composite
def assemblies(draw: st.DrawFn) -> Assembly:
    n = draw(st.integers(1, 4))
    types: list[ComponentType] = []
    instances: list[Instance] = []
    connections: list[Connection] = []
    for k in range(n):
        depth = draw(st.integers(1, 3))
        places = [Place(f"p{d}", initial=d == 0) for d in range(depth + 1)]
        transitions: list[Transition] = []
        for d in range(depth):
            for b in range(draw(st.integers(1, 2))):  # parallel transitions
                transitions.append(
                    Transition(
                        f"t{d}{'ab'[b]}",
                        f"p{d}",
                        f"p{d + 1}",
                        action=None,
                        duration=0.001,
                        idempotent=draw(st.booleans()),
                    )
                )
        names = [t.name for t in transitions]
        # The value at the last place: from the parameter, the host and (when the instance
        # uses another's data) that data, reached only after the transition that uses it.
        template = "{host.name}/{v}" + ("/{y}" if k > 0 else "")
        out_of = OutputOf(draw(st.sampled_from(names)))
        provides = [
            ProvidePort("svc", "service", (f"p{draw(st.integers(1, depth))}",)),
            ProvidePort("value", "data", (f"p{depth}",), value=template),
            ProvidePort("out", "data", (f"p{depth}",), value=out_of),
        ]
        uses: list[UsePort] = []
        if k > 0:
            provider = draw(st.integers(0, k - 1))
            uses.append(UsePort("svc", "service", (draw(st.sampled_from(names)),)))
            # Bound to every transition: a job sees a data value only if it is bound to the
            # port (else whether it sees it would depend on timing), and the Recorder puts
            # every value it sees in its output.
            uses.append(UsePort("y", "data", tuple(names)))
            connections.append(_connect(f"i{k}", "svc", f"i{provider}", "svc"))
            data_from = draw(st.integers(0, k - 1))
            port = draw(st.sampled_from(["value", "out"]))
            connections.append(_connect(f"i{k}", "y", f"i{data_from}", port))
        types.append(
            ComponentType(
                f"C{k}",
                params=(Param("v", "str"),),
                places=tuple(places),
                transitions=tuple(transitions),
                provides=tuple(provides),
                uses=tuple(uses),
            )
        )
        target = draw(st.sampled_from(["pair", "solo", "h1"]))
        instances.append(
            Instance(InstanceRef(f"i{k}"), f"C{k}", Target(target), (("v", f"value-{k}"),))
        )
    return Assembly("random", tuple(types), tuple(instances), tuple(connections))


def _connect(user: str, port: str, provider: str, provider_port: str) -> Connection:
    return Connection(
        PortRef(InstanceRef(user), port), PortRef(InstanceRef(provider), provider_port)
    )


# --- running ------------------------------------------------------------------------------------


def open_at(tmp: Path, name: str) -> Journal:
    source = tmp / f"{name}.mad"
    source.touch()
    return open_journal(source, None, base=tmp / "state")


async def run_until(
    deployment: Deployment,
    backend: Recorder,
    journal: Journal,
    *,
    kill_after: int | None = None,
    traces: list[Trace] | None = None,
    **options: Any,
) -> str:
    """Deploy; cancel the run after `kill_after` job ends. 'ok', 'failed', 'interrupted'.
    The run's trace is appended to `traces`."""
    ends = 0
    task = asyncio.current_task()
    assert task is not None

    def count(event: Event) -> None:
        nonlocal ends
        if isinstance(event, TransitionEnded) and event.final and event.status != "skipped":
            ends += 1
            if kill_after is not None and ends == kill_after:
                task.cancel()
        elif isinstance(event, RunEnded) and traces is not None:
            traces.append(event.trace)

    try:
        await deploy(deployment, backend=backend, journal=journal, on_event=count, **options)
    except DeployError:
        return "failed"
    except asyncio.CancelledError:
        if kill_after is None:
            raise
        return "interrupted"
    return "ok"


def resume_to_the_end(
    deployment: Deployment, journal: Journal, kill_after: int | None
) -> list[Trace]:
    """Resume until the run succeeds (settling non-idempotent jobs with --rerun, as the
    operator would after checking them); return the last run's trace events. Checks at every
    round that nothing that had ended runs again."""
    for round_ in range(6):
        before = journal.state()
        backend = Recorder()
        rerun = sorted(f"{tid}@{host}" for tid, host in before.running)
        traces: list[Trace] = []
        outcome = asyncio.run(
            run_until(
                deployment,
                backend,
                journal,
                kill_after=kill_after if round_ == 0 else None,
                traces=traces,
                resume=True,
                rerun=rerun,
            )
        )
        again = set(backend.runs) & before.ended
        assert not again, f"ended jobs ran again: {sorted(again)}"
        if outcome == "ok":
            return traces
    raise AssertionError("the resumes never finished")


def final(state: JournalState) -> tuple[frozenset[tuple[str, str]], dict[str, str]]:
    return state.ended, dict(state.data)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    assemblies(),
    st.integers(0, 30),
    st.one_of(st.none(), st.integers(1, 10)),
    st.lists(st.integers(0, 50), max_size=2),
    st.booleans(),
)
def test_a_run_stopped_anywhere_resumes_to_the_same_state(
    tmp_path_factory: pytest.TempPathFactory,
    assembly: Assembly,
    kill_after: int,
    second_kill: int | None,
    inject: list[int],
    keep_going: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("resume")
    deployment = resolve(assembly, INVENTORY)
    plan = build_plan(deployment)
    with open_at(tmp, "reference") as journal:
        assert asyncio.run(run_until(deployment, Recorder(), journal)) == "ok"
        reference = journal.state()
    jobs = {(t.id, h) for t in plan.transitions for h in t.hosts}
    assert reference.ended == jobs

    with open_at(tmp, "stopped") as journal:
        if inject:
            ids = [t.id for t in plan.transitions]
            chosen = sorted({ids[k % len(ids)] for k in inject})
            first = asyncio.run(
                run_until(
                    deployment,
                    Recorder(),
                    journal,
                    inject_failures=chosen,
                    keep_going=keep_going,
                )
            )
            assert first == "failed"
        else:
            first = asyncio.run(run_until(deployment, Recorder(), journal, kill_after=kill_after))
        stopped = journal.state()
        event(f"first run: {first}")
        event("running when stopped" if stopped.running else "nothing running when stopped")
        traces = resume_to_the_end(deployment, journal, second_kill)
        assert final(journal.state()) == final(reference)
    (trace,) = traces
    assert validate(trace, plan, tolerance=0.5) == []


def test_the_reference_property_holds_on_a_fixed_example(tmp_path: Path) -> None:
    """One example spelled out: stopped after 3 ends, then resumed."""
    assembly = _fixed()
    deployment = resolve(assembly, INVENTORY)
    with open_at(tmp_path, "reference") as journal:
        asyncio.run(run_until(deployment, Recorder(), journal))
        reference = journal.state()
    with open_at(tmp_path, "stopped") as journal:
        assert asyncio.run(run_until(deployment, Recorder(), journal, kill_after=3)) == (
            "interrupted"
        )
        stopped = journal.state()
        assert 3 <= len(stopped.ended) < len(reference.ended)
        resume_to_the_end(deployment, journal, None)
        assert final(journal.state()) == final(reference)


def _fixed() -> Assembly:
    def chain(name: str, idempotent: bool) -> ComponentType:
        return ComponentType(
            name,
            params=(Param("v", "str"),),
            places=tuple(Place(f"p{d}", initial=d == 0) for d in range(4)),
            transitions=tuple(
                Transition(f"t{d}", f"p{d}", f"p{d + 1}", duration=0.001, idempotent=idempotent)
                for d in range(3)
            ),
            provides=(
                ProvidePort("svc", "service", ("p2",)),
                ProvidePort("out", "data", ("p3",), value=OutputOf("t2")),
            ),
            uses=(UsePort("svc", "service", ("t1",), optional=True),),
        )

    return Assembly(
        "fixed",
        (chain("A", True), chain("B", False)),
        (
            Instance(InstanceRef("a"), "A", Target("pair"), (("v", "1"),)),
            Instance(InstanceRef("b"), "B", Target("h1"), (("v", "2"),)),
        ),
        (_connect("b", "svc", "a", "svc"),),
    )


def test_jobs_cancelled_before_they_ran_are_withdrawn(tmp_path: Path) -> None:
    """`first` ends and cancels the run: `second` was launched in the same turn but its task
    never took a step (its start record is withdrawn: not "running when stopped"), while
    `slow`, cut off in the middle of its action, is."""
    chain = ComponentType(
        "Chain",
        places=(Place("a", initial=True), Place("b"), Place("c")),
        transitions=(
            Transition("first", "a", "b", duration=0.001),
            Transition("second", "b", "c", duration=0.001),
        ),
    )
    slow = ComponentType(
        "Slow",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("slow", "a", "b", duration=0.001),),
    )
    instances = (
        Instance(InstanceRef("x"), "Chain", Target("h3")),
        Instance(InstanceRef("y"), "Slow", Target("h3")),
    )
    deployment = resolve(Assembly("c", (chain, slow), instances), INVENTORY)

    class Slow(Recorder):
        async def run(self, job: Job) -> Outcome:
            if job.id == "y.slow":
                await asyncio.sleep(30)
            return await super().run(job)

    async def scenario(journal: Journal) -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_event(event: Event) -> None:
            if isinstance(event, TransitionEnded) and event.id == "x.first":
                task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await deploy(deployment, backend=Slow(), journal=journal, on_event=on_event)

    with open_at(tmp_path, "withdrawn") as journal:
        asyncio.run(scenario(journal))
        state = journal.state()
    assert state.ended == {("x.first", "h3")}
    assert state.running == {("y.slow", "h3")}
    assert ("x.second", "h3") not in state.jobs
    records = [json.loads(line) for line in journal.path.read_text().splitlines()]
    second = [r["k"] for r in records if r.get("t") == "x.second"]
    assert second == ["start", "unstart"]  # launched, withdrawn


# --- deciding what to run again ---------------------------------------------------------------


def _two_step(idempotent: bool) -> Assembly:
    component = ComponentType(
        "Two",
        places=(Place("a", initial=True), Place("b"), Place("c")),
        transitions=(
            Transition("first", "a", "b", duration=0.001),
            Transition("second", "b", "c", duration=0.001, idempotent=idempotent),
        ),
        provides=(ProvidePort("out", "data", ("b",), value=OutputOf("first")),),
    )
    return Assembly("two", (component,), (Instance(InstanceRef("x"), "Two", Target("pair")),))


def _stopped_in_second(tmp_path: Path, idempotent: bool) -> tuple[Deployment, Journal]:
    deployment = resolve(_two_step(idempotent), INVENTORY)
    journal = open_at(tmp_path, "two")
    journal.begin_run("r1", resume=False, run_dir=tmp_path / "runs" / "r1")
    for host in ("h1", "h2"):
        journal.record_start("x.first", host)
        journal.record_end("x.first", host, "ok", output=f"first on {host}")
    journal.record_data("x.out", "first on h1")
    journal.record_start("x.second", "h1")
    journal.record_start("x.second", "h2")
    journal.record_end("x.second", "h2", "ok")
    journal.end_run("interrupted")
    return deployment, journal


def test_a_running_job_that_is_not_idempotent_stops_the_resume(tmp_path: Path) -> None:
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "x.second@h1.out").write_text("half done\n")
    deployment, journal = _stopped_in_second(tmp_path, idempotent=False)
    with journal:
        backend = Recorder()
        with pytest.raises(ResumeError) as caught:
            asyncio.run(deploy(deployment, backend=backend, journal=journal, resume=True))
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.message == (
            'transition "x.second" was running on host "h1" when run r1 stopped and is not '
            f"declared idempotent: check what it did (logs: {tmp_path}/runs/r1/x.second@h1.out), "
            "then resume with --assume-done x.second@h1 if it completed, or --rerun "
            "x.second@h1 to run it again (--rerun cancelled: every such transition)"
        )
        assert not backend.runs  # nothing ran
        assert journal.state().runs[-1].id == "r1"  # nor was anything recorded


def test_rerun_settles_it(tmp_path: Path) -> None:
    deployment, journal = _stopped_in_second(tmp_path, idempotent=False)
    with journal:
        backend = Recorder()
        result = asyncio.run(
            deploy(deployment, backend=backend, journal=journal, resume=True, rerun=["x.second@h1"])
        )
        assert dict(backend.runs) == {("x.second", "h1"): 1}
        statuses = {(e.id, e.host): (e.status, e.attempts) for e in result.trace.events}
        assert statuses == {
            ("x.first", "h1"): ("skipped", 0),
            ("x.first", "h2"): ("skipped", 0),
            ("x.second", "h1"): ("ok", 1),
            ("x.second", "h2"): ("skipped", 0),
        }
        # The data value and the output of x.first come from the journal.
        assert journal.state().data == {"x.out": "first on h1"}


def test_assume_done_settles_it(tmp_path: Path) -> None:
    deployment, journal = _stopped_in_second(tmp_path, idempotent=False)
    with journal:
        backend = Recorder()
        result = asyncio.run(
            deploy(
                deployment, backend=backend, journal=journal, resume=True, assume_done=["x.second"]
            )
        )
        assert not backend.runs
        assert {e.status for e in result.trace.events} == {"skipped"}
        record = journal.state().jobs[("x.second", "h1")]
        assert (record.status, record.assumed) == ("ok", True)


def test_an_idempotent_running_job_runs_again(tmp_path: Path) -> None:
    deployment, journal = _stopped_in_second(tmp_path, idempotent=True)
    with journal:
        backend = Recorder()
        asyncio.run(deploy(deployment, backend=backend, journal=journal, resume=True))
        assert dict(backend.runs) == {("x.second", "h1"): 1}


def test_data_values_of_skipped_jobs_come_from_the_journal(tmp_path: Path) -> None:
    """The consumer gets the value recorded by the earlier run, not a recomputed one."""
    provider = ComponentType(
        "P",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("make", "a", "b", duration=0.001),),
        provides=(ProvidePort("token", "data", ("b",), value=OutputOf("make")),),
    )
    consumer = ComponentType(
        "U",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("use", "a", "b", duration=0.001),),
        uses=(UsePort("token", "data", ("use",)),),
    )
    assembly = Assembly(
        "tokens",
        (provider, consumer),
        (
            Instance(InstanceRef("p"), "P", Target("h3")),
            Instance(InstanceRef("u"), "U", Target("h3")),
        ),
        (_connect("u", "token", "p", "token"),),
    )
    deployment = resolve(assembly, INVENTORY)
    seen: list[str] = []

    class Counting(Recorder):
        async def run(self, job: Job) -> Outcome:
            self.runs[(job.id, job.host.name)] += 1
            if job.id == "u.use":
                seen.append(job.values["token"])
            return Outcome(ok=True, output=f"token-{len(seen)}-{sum(self.runs.values())}")

    with open_at(tmp_path, "tokens") as journal:
        with pytest.raises(DeployError):
            asyncio.run(
                deploy(deployment, backend=Counting(), journal=journal, inject_failures=["u.use"])
            )
        assert journal.state().data == {"p.token": "token-0-1"}
        backend = Counting()
        asyncio.run(deploy(deployment, backend=backend, journal=journal, resume=True))
    assert seen == ["token-0-1"]
    assert dict(backend.runs) == {("u.use", "h3"): 1}


def test_selectors_are_checked(tmp_path: Path) -> None:
    deployment, journal = _stopped_in_second(tmp_path, idempotent=False)
    with journal:
        for bad, message in [
            ("x.nope", '--rerun x.nope: no transition "x.nope" in the plan'),
            (
                "x.second@h3",
                '--rerun x.second@h3: transition "x.second" does not run on host "h3" '
                "(hosts: h1, h2)",
            ),
        ]:
            with pytest.raises(MadeusError) as caught:
                asyncio.run(deploy(deployment, journal=journal, resume=True, rerun=[bad]))
            assert str(caught.value) == message
    with pytest.raises(ValueError):
        asyncio.run(deploy(deployment, rerun=["x.first"]))


# --- through the command line ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
OS_INVENTORY = ROOT / "assemblies" / "openstack" / "inventory.yml"


def test_cli_rehearsal_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [str(OPENSTACK), "-i", str(OS_INVENTORY), "--simulate", "--time-scale", "0.002"]
    args.append("--no-verify")
    # --keep-going: what runs when the failure lands finishes (nothing to settle on resume).
    code = main(
        [
            "deploy",
            *args,
            "--inject-failure",
            "mariadb.check@control-1",
            "--keep-going",
            "--trace",
            "a.json",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert (
        'madeus: error: transition "mariadb.check" failed on host "control-1": injected failure '
        "(--inject-failure mariadb.check@control-1): the action did not run\n"
    ) in err
    ended = {(e.id, e.host) for e in load("a.json").events if e.status == "ok"}
    assert main(["deploy", *args, "--resume", "--trace", "b.json"]) == 0
    out = capsys.readouterr().out
    trace = load("b.json")
    skipped = {(e.id, e.host) for e in trace.events if e.status == "skipped"}
    assert skipped == ended  # exactly what had ended, and nothing else
    assert (
        f"simulated openstack: 46/46 jobs ok ({len(ended)} skipped: done in an earlier run)" in out
    )
    state, _, _ = read_journal(OPENSTACK, OS_INVENTORY, simulate=True)
    assert len(state.ended) == 46
    plan = build_plan(resolve_file())
    assert validate(trace, plan, tolerance=0.5) == []


def resolve_file() -> Deployment:
    from madeus import load_file, load_inventory

    assembly = load_file(OPENSTACK).assembly
    assert assembly is not None
    return resolve(assembly, load_inventory(OS_INVENTORY))


def test_cli_resume_options_need_resume(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(OPENSTACK), "--rerun", "x.y"]) == 2
    assert capsys.readouterr().err == "madeus deploy: error: --rerun only applies with --resume\n"


def test_cli_fresh_run_after_an_unfinished_one_says_where_it_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        str(OPENSTACK),
        "-i",
        str(OS_INVENTORY),
        "--simulate",
        "--time-scale",
        "0",
        "--no-verify",
    ]
    assert main(["deploy", *args, "--inject-failure", "nova.restart"]) == 1
    capsys.readouterr()
    assert main(["deploy", *args]) == 0
    err = capsys.readouterr().err
    _, _, directory = read_journal(OPENSTACK, OS_INVENTORY, simulate=True)
    assert err == (
        f"note: the previous run did not finish (failed); its journal moves to "
        f"{directory / 'history'}/ (--resume would have continued it)\n"
    )
    assert len(list((directory / "history").iterdir())) == 1


def test_cli_a_stopped_rehearsal_just_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --keep-going the failure cancels what runs; a simulated run did nothing real,
    so the resume the tool suggests runs the cancelled transitions again without asking."""
    monkeypatch.chdir(tmp_path)
    args = [str(OPENSTACK), "-i", str(OS_INVENTORY), "--simulate", "--time-scale", "0.002"]
    args.append("--no-verify")
    assert main(["deploy", *args, "--inject-failure", "nova.upgrade_db"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(
        f"the journal keeps what ended: `madeus deploy {OPENSTACK} -i {OS_INVENTORY} "
        "--simulate --resume` continues\n"
    )
    state, _, _ = read_journal(OPENSTACK, OS_INVENTORY, simulate=True)
    cut = sorted(f"{tid}@{host}" for tid, host in state.running)
    assert cut  # something was running when the failure stopped the run
    assert main(["deploy", *args, "--resume", "--trace", "t.json"]) == 0
    statuses = {f"{e.id}@{e.host}": e.status for e in load("t.json").events}
    assert all(statuses[s] == "ok" for s in cut)
    assert statuses["nova.upgrade_db@control-1"] == "ok"  # failed before: runs again


CUT = """
component Step {
    places a*, b, c
    transition slow: a -> b  shell "sleep 30"  ~30s
    transition boom: a -> b  shell "sleep 0.5; test -e ok"
    transition after: b -> c  shell "true"
}
component Play {
    places a*, b
    transition slow: a -> b  ansible tasks "slow.yml"
}
assembly cut {
    x = Step
    y = Step
    p = Play
}
"""


def test_cli_settling_cut_off_transitions_with_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real run stopped by a failure: the shell transitions it cut off must be settled
    (they may have done half their work); the Ansible one runs again by itself (Ansible
    actions are idempotent unless declared otherwise). Patterns and `cancelled` settle many
    at once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cut.mad").write_text(CUT)
    (tmp_path / "slow.yml").write_text("- ansible.builtin.command: sleep 30\n")
    deploy = ["deploy", "cut.mad", "--no-verify"]
    assert main(deploy) == 1  # x.boom and y.boom fail after 0.5 s
    capsys.readouterr()
    state, _, _ = read_journal(tmp_path / "cut.mad", None)
    assert state.running >= {("x.slow", "localhost"), ("y.slow", "localhost")}
    assert main([*deploy, "--resume"]) == 1
    err = capsys.readouterr().err
    assert 'transition "x.slow" was cancelled on host "localhost"' in err
    assert 'transition "y.slow" was cancelled on host "localhost"' in err
    assert "p.slow" not in err  # Ansible: runs again without asking
    assert main([*deploy, "--resume", "--rerun", "z.*"]) == 1
    assert capsys.readouterr().err == (
        'madeus: error: --rerun z.*: no transition "z.*" in the plan\n'
    )
    (tmp_path / "slow.yml").write_text("- ansible.builtin.command: 'true'\n")
    (tmp_path / "ok").touch()
    (tmp_path / "cut.mad").write_text(CUT.replace("sleep 30", "true"))
    assert main([*deploy, "--resume", "--rerun", "cancelled", "--trace", "t.json"]) == 0
    statuses = {e.id: e.status for e in load("t.json").events}
    assert statuses == {
        "x.slow": "ok",  # run again
        "y.slow": "ok",
        "p.slow": "ok",
        "x.boom": "ok",  # failed before: runs again
        "y.boom": "ok",
        "x.after": "ok",
        "y.after": "ok",
    }


def test_selectors_take_patterns_and_cancelled(tmp_path: Path) -> None:
    from madeus import net
    from madeus.engine.api import select_jobs
    from madeus.engine.program import compile_program
    from madeus.plan import plan_of

    deployment = resolve(_two_step(False), INVENTORY)
    compiled = net.compile(deployment)
    program = compile_program(compiled, plan_of(compiled))

    def named(selectors: list[str], state: JournalState | None = None) -> set[str]:
        jobs = select_jobs(program, selectors, "--rerun", state)
        return {f"{program.ids[program.job_trans[j]]}@{_host(program, j)}" for j in jobs}

    assert named(["x.*"]) == {"x.first@h1", "x.first@h2", "x.second@h1", "x.second@h2"}
    assert named(["*@h2"]) == {"x.first@h2", "x.second@h2"}
    assert named(["x.s*@h[12]"]) == {"x.second@h1", "x.second@h2"}
    state = JournalState(running=frozenset({("x.second", "h1")}))
    assert named(["cancelled"], state) == {"x.second@h1"}
    with pytest.raises(MadeusError) as caught:
        named(["*@h9"])
    assert str(caught.value) == (
        '--rerun *@h9: the transitions matching "*" do not run on host "h9" (hosts: h1, h2)'
    )


def _host(program: Any, j: int) -> str:
    return str(program.hosts[program.job_host[j]].name)


# --- the validator and skipped events ---------------------------------------------------------


def test_the_validator_accepts_skipped_events() -> None:
    from madeus.trace import TraceEvent

    deployment = resolve(_two_step(False), INVENTORY)
    plan = build_plan(deployment)

    def trace(*events: TraceEvent) -> Trace:
        return Trace("two", "2026-11-22T00:00:00Z", max(e.end for e in events), events)

    def ev(tid: str, host: str, start: float, end: float, status: str = "ok") -> TraceEvent:
        return TraceEvent(tid, host, start, end, status, attempts=0 if status == "skipped" else 1)  # type: ignore[arg-type]

    resumed = trace(
        ev("x.first", "h1", 0, 0, "skipped"),
        ev("x.first", "h2", 0, 0, "skipped"),
        ev("x.second", "h1", 0.001, 0.5),
        ev("x.second", "h2", 0, 0, "skipped"),
    )
    assert validate(resumed, plan) == []
    # Skipped jobs hold no slot: a limit of one is respected by the job that ran.
    assert validate(resumed, plan, max_parallel=1) == []
    # A skipped dependency ends when it is skipped: waiting after it is still needless.
    late = trace(
        ev("x.first", "h1", 0, 0, "skipped"),
        ev("x.first", "h2", 0, 0, "skipped"),
        ev("x.second", "h1", 1.0, 1.5),
        ev("x.second", "h2", 1.0, 1.5),
    )
    assert validate(late, plan) == [
        "x.second @ h1 started at 1.000000, 1.000000 s after it was ready at 0.000000 "
        "(tolerance 0.05 s)",
        "x.second @ h2 started at 1.000000, 1.000000 s after it was ready at 0.000000 "
        "(tolerance 0.05 s)",
    ]
    # A rerun dependency (--rerun) ends late; the skipped successor is not checked for time.
    rerun = trace(
        ev("x.first", "h1", 0.0, 0.4),
        ev("x.first", "h2", 0, 0, "skipped"),
        ev("x.second", "h1", 0.4, 0.4, "skipped"),
        ev("x.second", "h2", 0.4, 0.4, "skipped"),
    )
    assert validate(rerun, plan) == []
