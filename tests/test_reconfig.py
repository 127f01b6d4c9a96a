"""Reconfiguration (madeus/reconfig/): programs and the builder, configurations from the
journal, the Concerto rules on small models (provide groups, safety waits, behaviour queues,
connect/disconnect, add/remove), the executor, the predictor, the trace checker, scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reconfig_helpers import configuration

from madeus.backends.base import Job, Outcome
from madeus.engine.journal import JournalState
from madeus.errors import render_all
from madeus.model import (
    ComponentType,
    Place,
    ProvidePort,
    ShellAction,
    Transition,
    UsePort,
)
from madeus.reconfig import (
    Configuration,
    Machine,
    Program,
    ProgramBuilder,
    ProgramError,
    ReconfigBlocked,
    ReconfigError,
    check_trace,
    deployed,
    destroy_program,
    final_places,
    from_journal,
    initial,
    load_program,
    predict,
    reconfigure,
)
from madeus.reconfig.events import (
    BehaviourDone,
    InstructionDone,
    TransitionEnded,
    TransitionStarted,
)
from madeus.reconfig.program import Connect, Disconnect, Push, Remove, Wait, WaitAll
from madeus.trace import Trace, TraceEvent

REPO = Path(__file__).resolve().parent.parent


def component(
    name: str,
    places: str,
    transitions: Sequence[str],
    provides: Sequence[tuple[str, Sequence[str]]] = (),
    uses: Sequence[tuple[str, Sequence[str]]] = (),
    kind: str = "service",
    value: str | None = None,
) -> ComponentType:
    """`places`: "a*, b"; transitions: "name: src -> dst [behaviour] [~seconds]"; provides:
    (port, places); uses: (port, transitions and places)."""
    parsed_places = tuple(
        Place(p.strip().rstrip("*"), p.strip().endswith("*")) for p in places.split(",")
    )
    names = {p.name for p in parsed_places}
    parsed: list[Transition] = []
    for text in transitions:
        tname, rest = text.split(":")
        words = rest.replace("->", " ").split()
        duration = next((float(w[1:]) for w in words[2:] if w.startswith("~")), 1.0)
        behaviours = [w for w in words[2:] if not w.startswith("~")]
        parsed.append(
            Transition(
                tname.strip(),
                words[0],
                words[1],
                ShellAction(f"echo {tname.strip()}"),
                duration=duration,
                behaviour=behaviours[0] if behaviours else "deploy",
            )
        )
    return ComponentType(
        name,
        places=parsed_places,
        transitions=tuple(parsed),
        provides=tuple(
            ProvidePort(p, kind, tuple(at), value=value if kind == "data" else None)  # type: ignore[arg-type]
            for p, at in provides
        ),
        uses=tuple(
            UsePort(
                u,
                kind,  # type: ignore[arg-type]
                tuple(x for x in bound if x not in names),
                tuple(x for x in bound if x in names),
            )
            for u, bound in uses
        ),
    )


DB = component(
    "Db",
    "off*, on, stopped, conf",
    [
        "start: off -> on ~2",
        "stop: on -> stopped stop ~1",
        "reconfigure: stopped -> conf update ~1",
        "restart: conf -> on update ~2",
    ],
    provides=[("sql", ["on"])],
)
APP = component(
    "App",
    "idle*, running, paused",
    [
        "go: idle -> running ~1",
        "pause: running -> paused stop ~3",
        "resume: paused -> running update ~1",
    ],
    uses=[("sql", ["go", "resume", "pause", "running"])],
)


def app_on_db(app_place: str = "running") -> Configuration:
    return configuration(
        [DB, APP],
        {"db": ("Db", "on"), "app": ("App", app_place)},
        ["app.sql db.sql"],
    )


# Update db under app: app pauses, db stops, is updated, app resumes once db is back.
UPDATE_DB: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("push", ("app", "stop")),
    ("push", ("db", "stop")),
    ("wait", ("db",)),
    ("push", ("db", "update")),
    ("push", ("app", "update")),
    ("wait_all", ()),
)


def build(state: Configuration, *calls: tuple[str, tuple[object, ...]]) -> Program:
    r = ProgramBuilder(state)
    for method, args in calls:
        getattr(r, method)(*args)
    return r.build()


# --- programs and the builder ----------------------------------------------------------------


def test_programs_are_data_with_the_script_lines() -> None:
    state = app_on_db()
    r = ProgramBuilder(state)
    line = _line() + 1
    r.push("app", "stop").push("db", "stop").wait("db").wait_all()
    program = r.build()
    assert program.instructions == (
        Push("app", "stop"),
        Push("db", "stop"),
        Wait("db"),
        WaitAll(),
    )
    assert str(program) == "push('app', 'stop')\npush('db', 'stop')\nwait('db')\nwait_all()"
    assert all(i.span.path == __file__ and i.span.line == line for i in program)
    assert r.state is state
    assert list(program.pushes()) == [(0, Push("app", "stop")), (1, Push("db", "stop"))]


def _line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_the_builder_reports_every_mistake_at_its_line() -> None:
    state = app_on_db()
    r = ProgramBuilder(state)
    r.push("nope", "stop")
    r.push("db", "fly")
    r.connect("app.sql", "db.sql")
    r.disconnect("db.sql", "app.sql")
    r.remove("db")
    r.add("db", "Db")
    r.add("x", "Nope")
    r.connect("app", "db.sql")
    with pytest.raises(ProgramError) as caught:
        r.build()
    messages = [d.message for d in caught.value.diagnostics]
    assert messages == [
        'unknown instance "nope" (instances: app, db)',
        'component "Db" (instance "db") has no behaviour "fly" (it has: deploy, stop, update)',
        'use port "app.sql" is already connected to "db.sql": disconnect it first',
        '"db.sql" is a provide port: the first port must be a use port',
        '"app.sql" is a use port: the second port must be a provide port',
        'instance "db" is still connected (app.sql -> db.sql): disconnect it first',
        'instance "db" already exists',
        'unknown component type "Nope" (known: App, Db)',
        "'app' is not of the form \"instance.port\"",
    ]
    assert all(d.span.path == __file__ for d in caught.value.diagnostics)


def test_connect_checks_kinds_and_types() -> None:
    typed_use = UsePort("sql", "service", ("go",), type="mysql")
    typed = ComponentType("Typed", APP.params, APP.places, APP.transitions, (), (typed_use,))
    other = ComponentType(
        "Other",
        DB.params,
        DB.places,
        DB.transitions,
        (ProvidePort("sql", "service", ("on",), type="pgsql"),),
    )
    state = configuration([typed, other], {"t": ("Typed", "idle"), "o": ("Other", "on")})
    r = ProgramBuilder(state)
    r.connect("t.sql", "o.sql")
    with pytest.raises(ProgramError) as caught:
        r.build()
    assert caught.value.diagnostics[0].message == (
        'port types differ: "t.sql" is "mysql", "o.sql" is "pgsql"'
    )


def test_add_remove_and_removed_names() -> None:
    state = app_on_db()
    r = ProgramBuilder(state)
    r.add("app2", "App").connect("app2.sql", "db.sql").push("app2", "deploy").wait("app2")
    r.push("app2", "stop").wait("app2").disconnect("app2.sql", "db.sql").remove("app2")
    r.push("app2", "deploy")
    r.add("app2", "App")
    with pytest.raises(ProgramError) as caught:
        r.build()
    assert [d.message for d in caught.value.diagnostics] == [
        'instance "app2" was removed earlier in this program',
        'instance "app2" was removed earlier in this program: give the new one another name',
    ]


# --- configurations -------------------------------------------------------------------------


def test_final_places_are_where_a_complete_deployment_leaves_the_tokens() -> None:
    assert final_places(DB) == {"on"}
    assert final_places(APP) == {"running"}
    branchy = component("B", "a*, b, c, d", ["x: a -> b", "y: a -> c", "z: b -> d"])
    assert final_places(branchy) == {"c", "d"}


def _deployment() -> object:
    from madeus.model import Assembly, Connection, Instance, InstanceRef, PortRef
    from madeus.resolve import resolve

    assembly = Assembly(
        "pair",
        (DB, APP),
        (Instance(InstanceRef("db"), "Db"), Instance(InstanceRef("app"), "App")),
        (Connection(PortRef(InstanceRef("app"), "sql"), PortRef(InstanceRef("db"), "sql")),),
    )
    return resolve(assembly)


def test_configurations_from_the_deployment_and_the_journal() -> None:
    deployment = _deployment()
    assert deployed(deployment).markings() == {"db": {"on"}, "app": {"running"}}  # type: ignore[arg-type]
    assert initial(deployment).markings() == {"db": {"off"}, "app": {"idle"}}  # type: ignore[arg-type]
    # Only db.start ended: the app is still at its initial place.
    partial = JournalState(ended=frozenset({("db.start", "localhost")}))
    state = from_journal(deployment, partial)  # type: ignore[arg-type]
    assert state.markings() == {"db": {"on"}, "app": {"idle"}}
    assert state.origin == "journal"
    # A reconfiguration recorded markings; an instance was removed, another added.
    recorded = JournalState(
        ended=frozenset({("db.start", "localhost"), ("app.go", "localhost")}),
        markings={"db": frozenset({"stopped"}), "extra": frozenset({"running"})},
        instances={"db": "Db", "extra": "App"},
    )
    state = from_journal(deployment, recorded)  # type: ignore[arg-type]
    assert state.markings() == {"db": {"stopped"}, "extra": {"running"}}
    assert state.links == ()  # the app was removed: its connection goes too


def test_an_interrupted_deployment_leaves_tokens_in_docks() -> None:
    fork = component("Fork", "a*, b, c", ["x: a -> b", "y: a -> c"])
    from madeus.model import Assembly, Instance, InstanceRef
    from madeus.resolve import resolve

    deployment = resolve(Assembly("f", (fork,), (Instance(InstanceRef("f"), "Fork"),)))
    state = from_journal(deployment, JournalState(ended=frozenset({("f.x", "localhost")})))
    (inst,) = state.instances
    assert inst.marking == {"b"}
    assert inst.out_docks == {"y"}


# --- the rules on small models ---------------------------------------------------------------


def run_all(machine: Machine) -> list[str]:
    """Advance, end running transitions one at a time (oldest first): the moves, as text."""
    played = [str(m) for m in machine.advance()]
    while True:
        running = [(n, t) for n, r in machine.runs.items() for t in sorted(r.running)]
        if not running:
            return played
        name, t = running[0]
        played.extend(str(m) for m in machine.end(name, t))


def test_a_provider_waits_for_its_user_then_goes_on_its_own() -> None:
    state = app_on_db()
    program = build(state, ("push", ("db", "stop")), ("push", ("app", "stop")), ("wait_all", ()))
    machine = Machine(state, program)
    first = [str(m) for m in machine.advance()]
    # The db may not leave its group while the app runs; the app's pause starts (it uses
    # the port while it runs: the db keeps waiting).
    assert first == ["exec #0", "exec #1", "leave app.running", "fire app.pause"]
    assert [b.message for b in machine.blocked()] == [
        '"db" cannot leave place "on" (behaviour "stop", towards "db.stop"): provide port '
        '"db.sql" would become inactive while "app.sql" is in use ("app.pause" runs)',
        'wait_all() waits for "app" (stop), "db" (stop)',
    ]
    # The pause ending releases the db at once (no polling: the end's moves include it).
    assert [str(m) for m in machine.end("app", "pause")] == [
        "end app.pause",
        "reach app.paused",
        "done app.stop",
        "leave db.on",
        "fire db.stop",
    ]
    run_all(machine)
    assert machine.finished and not machine.problems


def test_provide_groups_are_active_while_a_token_is_inside() -> None:
    grouped = component(
        "G",
        "a*, b, c, d",
        ["ab: a -> b move", "bc: b -> c move", "cd: c -> d move"],
        provides=[("p", ["a", "b", "c"])],
    )
    state = configuration([grouped], {"g": ("G", "a")})
    machine = Machine(state, build(state, ("push", ("g", "move"))))
    machine.advance()
    assert machine.active("g", "p")  # a token in `ab`, inside the group
    machine.end("g", "ab")
    machine.end("g", "bc")
    # `cd` runs: the token has left the group (c -> d goes out of it).
    assert machine.runs["g"].running == {"cd"}
    assert not machine.active("g", "p")
    machine.end("g", "cd")
    assert not machine.active("g", "p") and machine.finished


def test_behaviour_queues_run_in_push_order() -> None:
    state = app_on_db()
    program = build(
        state,
        ("push", ("app", "stop")),
        ("push", ("app", "update")),
        ("push", ("app", "stop")),
        ("wait", ("app",)),
    )
    moves = run_all(Machine(state, program))
    fired = [m for m in moves if m.startswith("fire") or m.startswith("done")]
    assert fired == [
        "fire app.pause",
        "done app.stop",
        "fire app.resume",
        "done app.update",
        "fire app.pause",
        "done app.stop",
    ]


def test_a_transition_bound_to_a_use_port_waits_for_the_provider() -> None:
    state = app_on_db()
    program = build(
        state,
        ("push", ("app", "stop")),
        ("push", ("db", "stop")),
        ("wait", ("db",)),
        ("push", ("app", "update")),  # resume needs the db: it waits
        ("push", ("db", "update")),
        ("wait_all", ()),
    )
    machine = Machine(state, program)
    moves = run_all(machine)
    assert moves.index("fire app.resume") > moves.index("reach db.on")
    assert machine.finished and not machine.problems


def test_a_join_waits_for_every_transition_of_the_behaviour() -> None:
    join = component(
        "J", "a*, b, c, d", ["x: a -> b go", "y: a -> c go", "z: b -> d go", "w: c -> d go"]
    )
    state = configuration([join], {"j": ("J", "a")})
    machine = Machine(state, build(state, ("push", ("j", "go"))))
    machine.advance()
    assert machine.runs["j"].running == {"x", "y"}
    machine.end("j", "x")
    machine.end("j", "z")
    assert machine.runs["j"].marked == set() and machine.runs["j"].inn == {"z"}
    machine.end("j", "y")
    machine.end("j", "w")
    assert machine.runs["j"].marked == {"d"} and machine.finished


def test_disconnect_and_connect_change_what_a_transition_waits_for() -> None:
    other = component("Db", "off*, on", ["start: off -> on"], provides=[("sql", ["on"])])
    state = configuration(
        [DB, APP],
        {"db": ("Db", "on"), "db2": ("Db", "off"), "app": ("App", "paused")},
        ["app.sql db.sql"],
    )
    del other
    program = build(
        state,
        ("disconnect", ("app.sql", "db.sql")),
        ("connect", ("app.sql", "db2.sql")),
        ("push", ("app", "update")),
        ("push", ("db2", "deploy")),
        ("wait_all", ()),
    )
    machine = Machine(state, program)
    moves = run_all(machine)
    assert moves.index("fire app.resume") > moves.index("reach db2.on")
    assert machine.links[("app", "sql")] == ("db2", "sql")
    assert machine.finished and not machine.problems
    # Disconnecting while in use is a violation the machine records.
    bad = build(app_on_db(), ("disconnect", ("app.sql", "db.sql")))
    machine = Machine(app_on_db(), bad)
    machine.advance()
    assert [p.describe() for p in machine.problems] == [
        '"app.sql" is disconnected from "db.sql" while in use (place "app.running" is marked)',
        '"app.sql" is in use (place "app.running" is marked) while not connected',
    ]


def test_add_and_remove_instances() -> None:
    state = app_on_db()
    program = build(
        state,
        ("add", ("app2", "App")),
        ("connect", ("app2.sql", "db.sql")),
        ("push", ("app2", "deploy")),
        ("wait", ("app2",)),
        ("push", ("app2", "stop")),
        ("wait", ("app2",)),
        ("disconnect", ("app2.sql", "db.sql")),
        ("remove", ("app2",)),
    )
    machine = Machine(state, program)
    moves = run_all(machine)
    assert "fire app2.go" in moves and "fire app2.pause" in moves
    assert machine.finished and "app2" not in machine.runs
    assert isinstance(program[-1], Remove)
    after = machine.to_configuration()
    assert [i.name for i in after.instances] == ["db", "app"]


# --- prediction -----------------------------------------------------------------------------


def test_predicted_makespan_and_critical_path() -> None:
    state = app_on_db()
    program = build(state, *UPDATE_DB)
    prediction = predict(state, program)
    # pause 3, then stop 1, reconfigure 1, restart 2, then resume 1.
    assert prediction.makespan == pytest.approx(8.0)
    assert prediction.critical_ids() == (
        "app.pause",
        "db.stop",
        "db.reconfigure",
        "db.restart",
        "app.resume",
    )
    assert prediction.sequential == pytest.approx(8.0)
    plan = prediction.to_plan()
    assert plan.start["app.resume"] == pytest.approx(7.0)
    assert plan.transition("db.stop").after == ("app.pause",)
    assert prediction.to_json()["predicted_makespan"] == 8.0


def test_prediction_of_a_blocked_program_says_why() -> None:
    state = app_on_db()
    with pytest.raises(ReconfigBlocked) as caught:
        predict(state, build(state, ("push", ("db", "stop")), ("wait", ("db",))))
    assert caught.value.diagnostics[0].message.startswith(
        'the program cannot finish: "db" cannot leave place "on"'
    )


def test_idle_pushes_are_reported() -> None:
    state = app_on_db()
    prediction = predict(state, build(state, ("push", ("db", "update"))))
    assert prediction.idle_pushes == (0,)


# --- the executor ---------------------------------------------------------------------------


@dataclass
class Recording:
    """A backend that records the jobs it runs (and fails the ones named)."""

    fail: set[str] = field(default_factory=set)
    jobs: list[Job] = field(default_factory=list)
    delay: float = 0.001

    async def run(self, job: Job) -> Outcome:
        self.jobs.append(job)
        await asyncio.sleep(self.delay)
        if job.id in self.fail:
            return Outcome(ok=False, exit_status=3, message="exit status 3")
        return Outcome(ok=True, output=f"out of {job.id}")

    async def aclose(self) -> None:
        return None


class Journal:
    """A real journal, in a directory of its own, written through the real Recorder; `records`
    reads back what reached the disk."""

    def __init__(self, directory: Path) -> None:
        from madeus.engine.journal import open_journal
        from madeus.reconfig.state import Recorder

        (directory / "app.mad").write_text("")
        self.journal = open_journal(directory / "app.mad", None, base=directory / "state")
        self.recorder = Recorder(self.journal)

    @property
    def records(self) -> list[tuple[str, object]]:
        import json

        found: list[tuple[str, object]] = []
        for line in self.journal.path.read_text().splitlines():
            record = json.loads(line)
            kind = record["k"]
            if kind == "run":
                found.append(("begin", record["run"]))
            elif kind == "marking":
                found.append(("marking", (record["i"], record["places"])))
            elif kind == "data":
                found.append(("data", (record["p"], record["v"])))
            elif kind == "instances":
                found.append(("instances", record["v"]))
            elif kind == "stop":
                found.append(("end", record["s"]))
        return found

    def state(self) -> list[str]:
        """The instances of the state of record written at the end."""
        from madeus.state import load

        return sorted(i.name for i in load(self.journal.directory).instances)


def test_the_executor_runs_a_program_and_follows_the_rules(tmp_path: Path) -> None:
    state = app_on_db()
    program = build(state, *UPDATE_DB)
    events: list[object] = []
    journal = Journal(tmp_path)
    result = asyncio.run(
        reconfigure(
            state,
            program,
            simulate=True,
            time_scale=0.01,
            on_event=events.append,
            prediction=predict(state, program),
            recorder=journal.recorder,
        )
    )
    trace = result.trace
    assert [e.id for e in sorted(trace.events, key=lambda e: e.start)] == [
        "app.pause",
        "db.stop",
        "db.reconfigure",
        "db.restart",
        "app.resume",
    ]
    assert {e.id: e.behaviour for e in trace.events}["db.restart"] == "update"
    assert check_trace(state, trace, program) == []
    assert result.configuration.markings() == {"db": {"on"}, "app": {"running"}}
    assert result.makespan < 0.08 * 1.5 + 0.05
    assert result.predicted_makespan == pytest.approx(0.08)
    starts = [e for e in events if isinstance(e, TransitionStarted)]
    assert starts[0].behaviour == "stop"
    assert sum(isinstance(e, InstructionDone) for e in events) == 6
    assert [(e.instance, e.behaviour) for e in events if isinstance(e, BehaviourDone)] == [
        ("app", "stop"),
        ("db", "stop"),
        ("db", "update"),
        ("app", "update"),
    ]
    # In order: a behaviour is done after its last transition ended.
    ended = next(
        k for k, e in enumerate(events) if isinstance(e, TransitionEnded) and e.id == "db.restart"
    )
    done = next(
        k
        for k, e in enumerate(events)
        if isinstance(e, BehaviourDone) and (e.instance, e.behaviour) == ("db", "update")
    )
    assert ended < done
    # Each marking as it changes (a running transition counts in its source place).
    assert journal.records == [
        ("begin", "reconfigure"),
        ("marking", ("app", ["paused"])),
        ("marking", ("db", ["stopped"])),
        ("marking", ("db", ["conf"])),
        ("marking", ("db", ["on"])),
        ("marking", ("app", ["running"])),
        ("end", "ok"),
    ]
    assert journal.state() == ["app", "db"]  # the state of record, after the run's end


class OnDisk:
    """A backend that notes, when each job runs, the markings already on disk."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.seen: dict[str, list[tuple[str, object]]] = {}

    async def run(self, job: Job) -> Outcome:
        self.seen[job.id] = [r for r in self.journal.records if r[0] == "marking"]
        await asyncio.sleep(0.001)
        return Outcome(ok=True)

    async def aclose(self) -> None:
        return None


def test_what_a_job_depends_on_is_on_disk_before_an_action_that_is_not_idempotent(
    tmp_path: Path,
) -> None:
    state = app_on_db()
    program = build(state, *UPDATE_DB)
    journal = Journal(tmp_path)
    backend = OnDisk(journal)
    asyncio.run(reconfigure(state, program, backend=backend, recorder=journal.recorder))
    # The journal is written by a thread every few milliseconds; a job whose action is not
    # idempotent (these have none declared) starts only once what precedes it is written.
    assert ("marking", ("db", ["stopped"])) in backend.seen["db.reconfigure"]
    assert ("marking", ("app", ["paused"])) in backend.seen["db.stop"]
    assert ("marking", ("db", ["on"])) in backend.seen["app.resume"]


def test_a_failure_stops_the_program_with_the_partial_trace(tmp_path: Path) -> None:
    state = app_on_db()
    program = build(
        state,
        ("push", ("app", "stop")),
        ("push", ("db", "stop")),
        ("push", ("db", "update")),
        ("wait_all", ()),
    )
    backend = Recording(fail={"db.stop"})
    journal = Journal(tmp_path)
    with pytest.raises(ReconfigError) as caught:
        asyncio.run(reconfigure(state, program, backend=backend, recorder=journal.recorder))
    error = caught.value
    assert [f.transition for f in error.failures] == ["db.stop"]
    assert {e.id: e.status for e in error.trace.events} == {
        "app.pause": "ok",
        "db.stop": "failed",
    }
    # The journal counts the failed transition's token in its source place (`on`, as before):
    # pushing `stop` again re-runs it.
    assert journal.records == [
        ("begin", "reconfigure"),
        ("marking", ("app", ["paused"])),
        ("end", "failed"),
    ]
    assert journal.state() == ["app", "db"]


def test_an_unverified_program_that_blocks_is_stopped_with_what_blocks() -> None:
    state = app_on_db()
    program = build(state, ("push", ("db", "stop")), ("wait", ("db",)))
    with pytest.raises(ReconfigError) as caught:
        asyncio.run(reconfigure(state, program, backend=Recording()))
    assert caught.value.diagnostics[0].message.startswith(
        'the program blocked: "db" cannot leave place "on"'
    )


def test_jobs_get_parameters_host_facts_and_recomputed_data_values(tmp_path: Path) -> None:
    server = component(
        "Server",
        "off*, on, stopped",
        ["start: off -> on", "stop: on -> stopped stop", "restart: stopped -> on update"],
        provides=[("address", ["on"])],
        kind="data",
        value="{host.name}:8080",
    )
    client = component(
        "Client",
        "idle*, running, paused",
        [
            "go: idle -> running",
            "pause: running -> paused stop",
            "resume: paused -> running update",
        ],
        uses=[("address", ["go", "resume"])],
        kind="data",
    )
    state = configuration(
        [server, client],
        {"s": ("Server", "stopped"), "c": ("Client", "paused")},
        ["c.address s.address"],
    )
    program = build(state, ("push", ("s", "update")), ("push", ("c", "update")), ("wait_all", ()))
    backend = Recording()
    journal = Journal(tmp_path)
    asyncio.run(reconfigure(state, program, backend=backend, recorder=journal.recorder))
    resume = next(j for j in backend.jobs if j.id == "c.resume")
    assert resume.values["address"] == "localhost:8080"
    assert resume.behaviour == "update"
    assert ("data", ("s.address", "localhost:8080")) in journal.records


def test_destroy_pushes_uninstall_everywhere_and_the_rules_order_it() -> None:
    db = component(
        "Db",
        "off*, on",
        ["start: off -> on", "wipe: on -> off uninstall ~2"],
        provides=[("sql", ["on"])],
    )
    app = component(
        "App",
        "idle*, running",
        ["go: idle -> running", "drop: running -> idle uninstall ~1"],
        uses=[("sql", ["go", "drop", "running"])],
    )
    state = configuration(
        [db, app], {"db": ("Db", "on"), "app": ("App", "running")}, ["app.sql db.sql"]
    )
    program = destroy_program(state)
    assert program.instructions == (Push("db", "uninstall"), Push("app", "uninstall"), WaitAll())
    prediction = predict(state, program)
    assert prediction.critical_ids() == ("app.drop", "db.wipe")
    assert prediction.makespan == pytest.approx(3.0)


# --- the trace checker ------------------------------------------------------------------------


def _trace(*events: tuple[str, float, float, str]) -> Trace:
    return Trace(
        "test",
        "2026-01-01T00:00:00Z",
        max(e[2] for e in events),
        tuple(TraceEvent(i, "localhost", s, e, "ok", b) for i, s, e, b in events),
    )


def test_the_checker_accepts_a_safe_trace_and_catches_an_unsafe_one() -> None:
    state = app_on_db()
    good = _trace(("app.pause", 0, 3, "stop"), ("db.stop", 3, 4, "stop"))
    assert check_trace(state, good) == []
    bad = _trace(("db.stop", 0, 1, "stop"), ("app.pause", 0.5, 3.5, "stop"))
    assert check_trace(state, bad) == [
        '"app.sql" is in use from 0.000 s to 3.500 s while "db.sql" is not provided'
    ]
    overlap = _trace(("app.pause", 0, 3, "stop"), ("app.resume", 1, 2, "update"))
    assert check_trace(state, overlap) == [
        '"app" runs behaviour "update" from 1.000 s while "stop" runs until 3.000 s'
    ]
    failed = Trace("t", "x", 1.0, (TraceEvent("db.stop", "h", 0, 1, "failed", "stop"),))
    assert check_trace(configuration([DB], {"db": ("Db", "on")}), failed) == [
        '"db.stop" on "h" ended with status failed'
    ]


def test_links_the_program_changes_are_left_out_of_the_check() -> None:
    state = app_on_db()
    bad = _trace(("db.stop", 0, 1, "stop"))
    assert check_trace(state, bad) != []
    program = Program((Disconnect("app", "sql", "db", "sql"), Connect("app", "sql", "db", "sql")))
    assert check_trace(state, bad, program) == []


# --- scripts -----------------------------------------------------------------------------------


def test_a_script_builds_its_program(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "def reconfigure(r):\n"
        "    assert r.state.marking('db') == {'on'}\n"
        "    r.push('app', 'stop')\n"
        "    r.wait_all()\n"
    )
    program = load_program(script, app_on_db())
    assert program.instructions == (Push("app", "stop"), WaitAll())
    assert program[0].span.line == 3 and program.source == str(script)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("def reconfigure(r)\n    pass\n", "s.py:1:19: error: expected ':'"),
        (
            "def reconfigure(r):\n    r.push('db', 'stop')\n    1 / 0\n",
            "s.py:3:5: error: ZeroDivisionError: division by zero",
        ),
        ("x = 1\n", "s.py: error: the script defines no function reconfigure(r)"),
        (
            "def reconfigure(r):\n    r.push('db', 'nope')\n",
            's.py:2:5: error: component "Db" (instance "db") has no behaviour "nope"',
        ),
    ],
)
def test_script_mistakes_are_diagnostics_at_their_lines(
    tmp_path: Path, text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.py").write_text(text)
    with pytest.raises(ProgramError) as caught:
        load_program("s.py", app_on_db())
    assert render_all(caught.value.diagnostics).splitlines()[0].startswith(expected)


def test_the_openstack_scripts_load() -> None:
    from madeus.frontend import load_file
    from madeus.resolve import resolve

    module = load_file(REPO / "assemblies" / "openstack" / "openstack.mad")
    assert module.assembly is not None
    state = deployed(resolve(module.assembly))
    scripts = REPO / "assemblies" / "openstack" / "reconfigure"
    parallel = predict(state, load_program(scripts / "update-mariadb.py", state))
    sequential = predict(state, load_program(scripts / "update-mariadb-sequential.py", state))
    assert parallel.makespan == pytest.approx(58.5)
    assert sequential.makespan == pytest.approx(126.9)
    assert parallel.critical_ids() == (
        "nova.stop",
        "keystone.stop",
        "mariadb.stop",
        "mariadb.reconfigure",
        "mariadb.start",
        "keystone.start",
        "neutron.start",
    )


def test_the_examples_of_the_guides_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for doc, heading in (
        ("api.md", "## Reconfiguration programs"),
        ("reconfiguration.md", "## 5. The Python API"),
    ):
        text = (REPO / "docs" / doc).read_text(encoding="utf-8")
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        example = section.split("```python\n", 1)[1].split("```", 1)[0]
        monkeypatch.chdir(tmp_path)
        exec(example.replace('"assemblies/', f'"{REPO}/assemblies/'), {})
    out = capsys.readouterr().out
    assert out.startswith("58.5 nova.stop -> keystone.stop -> mariadb.stop")


@dataclass
class Raising:
    """A backend with a bug: it raises instead of returning an outcome."""

    error: BaseException

    async def run(self, job: Job) -> Outcome:
        raise self.error

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("error", [TimeoutError("lost"), RuntimeError("bug")])
def test_a_backend_that_raises_fails_the_program_with_an_internal_error(
    error: BaseException, tmp_path: Path
) -> None:
    state = app_on_db()
    program = build(state, ("push", ("app", "stop")), ("wait_all", ()))
    with pytest.raises(ReconfigError) as caught:
        asyncio.run(reconfigure(state, program, backend=Raising(error), run_dir=tmp_path / "r"))
    (failure,) = caught.value.failures
    log = tmp_path / "r" / "app.pause@localhost.err"
    kind = type(error).__name__
    assert failure.message == (
        f"internal error in madeus (a bug: please report it): {kind}: {error}; the traceback "
        f"is in {log}"
    )
    assert f"raise self.error\n{kind}: {error}" in log.read_text()


def test_a_journal_that_cannot_be_written_stops_the_program_cleanly(tmp_path: Path) -> None:
    from madeus.engine.errors import JournalError

    state = app_on_db()
    program = build(state, *UPDATE_DB)
    journal = Journal(tmp_path)
    real_write = journal.journal.write
    writes = 0

    def write(data: bytes) -> None:  # the run record is written; the next write fails
        nonlocal writes
        writes += 1
        if writes == 2:
            raise JournalError("cannot write the journal j.jsonl: No space left on device")
        real_write(data)

    journal.journal.write = write  # type: ignore[method-assign]
    started: list[str] = []

    def seen(event: object) -> None:
        if isinstance(event, TransitionStarted):
            started.append(event.id)

    with pytest.raises(JournalError) as caught:
        asyncio.run(
            reconfigure(
                state,
                program,
                simulate=True,
                time_scale=0.05,
                recorder=journal.recorder,
                on_event=seen,
            )
        )
    assert str(caught.value) == "cannot write the journal j.jsonl: No space left on device"
    # The first record is app's `paused` (150 ms in: a marking changes when app.pause ends);
    # its write, 5 ms later, failed. The run stopped there: db.stop (50 ms, started when app
    # paused) was cancelled, db's update never started, and nothing was written after.
    assert set(started) <= {"app.pause", "db.stop"}
    assert [kind for kind, _ in journal.records] == ["begin"]
