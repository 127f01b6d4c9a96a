"""The verifier of reconfiguration programs (madeus/verify/behaviours.py): z3's verdicts against
the explicit-state oracle on generated programs, the counterexamples of unsafe programs, and
OpenStack's programs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reconfig_helpers import configuration

from madeus.errors import VerifyError, render_all
from madeus.model import (
    ComponentType,
    Place,
    ProvidePort,
    Serial,
    Transition,
    UsePort,
)
from madeus.reconfig import (
    Configuration,
    InstanceState,
    Program,
    ProgramBuilder,
    deployed,
    destroy_program,
    load_program,
)
from madeus.reconfig.machine import Machine
from madeus.reconfig.program import (
    Add,
    Connect,
    Disconnect,
    Instruction,
    Push,
    Remove,
    Wait,
    WaitAll,
)
from madeus.resolve import Link, resolve
from madeus.verify.behaviours import check_program, replay, verify_program
from madeus.verify.oracle_behaviours import OracleLimit, explore_program

REPO = Path(__file__).resolve().parent.parent
OPENSTACK = REPO / "assemblies" / "openstack" / "openstack.mad"
SCRIPTS = REPO / "assemblies" / "openstack" / "reconfigure"


def component(
    name: str,
    places: str,
    transitions: Sequence[str],
    provides: Sequence[tuple[str, Sequence[str]]] = (),
    uses: Sequence[tuple[str, Sequence[str], bool]] = (),
) -> ComponentType:
    """`places`: "a*, b"; transitions: "name: src -> dst [behaviour]"; provides: (port,
    places); uses: (port, transitions and places, optional)."""
    parsed_places = tuple(
        Place(p.strip().rstrip("*"), p.strip().endswith("*")) for p in places.split(",")
    )
    names = {p.name for p in parsed_places}
    parsed: list[Transition] = []
    for text in transitions:
        tname, rest = text.split(":")
        words = rest.replace("->", " ").split()
        behaviour = words[2] if len(words) > 2 else "deploy"
        parsed.append(Transition(tname.strip(), words[0], words[1], behaviour=behaviour))
    return ComponentType(
        name,
        places=parsed_places,
        transitions=tuple(parsed),
        provides=tuple(ProvidePort(p, "service", tuple(at)) for p, at in provides),
        uses=tuple(
            UsePort(
                u,
                "service",
                tuple(x for x in bound if x not in names),
                tuple(x for x in bound if x in names),
                optional=optional,
            )
            for u, bound, optional in uses
        ),
    )


# --- small models by hand ---------------------------------------------------------------------

SERVER = component(
    "Server",
    "off*, on, stopped",
    ["start: off -> on", "stop: on -> stopped stop", "restart: stopped -> on update"],
    provides=[("api", ["on"])],
)
CLIENT = component(
    "Client",
    "idle*, running, paused",
    ["go: idle -> running", "pause: running -> paused stop", "resume: paused -> running update"],
    uses=[("api", ["go", "resume", "running"], False)],
)


def pair() -> Configuration:
    return configuration(
        [SERVER, CLIENT],
        {"server": ("Server", "on"), "client": ("Client", "running")},
        ["client.api server.api"],
    )


def program(state: Configuration, *calls: tuple[str, tuple[str, ...]]) -> Program:
    r = ProgramBuilder(state)
    for method, args in calls:
        getattr(r, method)(*args)
    return r.build()


def test_stopping_a_provider_under_a_running_user_is_refused_with_the_interleaving() -> None:
    state = pair()
    bad = program(state, ("push", ("server", "stop")), ("wait", ("server",)))
    verdict = check_program(state, bad)
    assert verdict.unsafe is None and verdict.loop is None
    assert verdict.deadlock is not None
    diagnostic = verify_program(state, bad)[0]
    assert diagnostic.code == "program-deadlock"
    assert diagnostic.message == (
        'the program can block: "server" cannot leave place "on" (behaviour "stop", towards '
        '"server.stop"): provide port "server.api" would become inactive while "client.api" '
        'is in use (place "client.running" is marked)'
    )
    assert [r.message for r in diagnostic.related] == [
        "step 1: push('server', 'stop')",
        'blocked: "server" cannot leave place "on" (behaviour "stop", towards "server.stop"): '
        'provide port "server.api" would become inactive while "client.api" is in use '
        '(place "client.running" is marked)',
        'blocked: wait(\'server\') waits for "server" to end behaviour "stop"',
    ]


def test_pausing_the_user_first_makes_it_safe() -> None:
    state = pair()
    good = program(
        state,
        ("push", ("client", "stop")),
        ("push", ("server", "stop")),
        ("wait", ("server",)),
        ("push", ("server", "update")),
        ("push", ("client", "update")),
        ("wait_all", ()),
    )
    assert verify_program(state, good) == []
    assert explore_program(state, good).sound


def test_disconnecting_a_connection_in_use_is_refused() -> None:
    state = pair()
    bad = program(state, ("disconnect", ("client.api", "server.api")))
    verdict = check_program(state, bad)
    assert verdict.unsafe is not None and verdict.unsafe.kind == "disconnect"
    (diagnostic,) = verify_program(state, bad)
    assert diagnostic.code == "port-safety"
    assert diagnostic.message == (
        'unsafe program: "client.api" is disconnected from "server.api" while in use '
        '(place "client.running" is marked)'
    )
    assert diagnostic.span.path == __file__
    # Pausing the client first: the connection is no longer in use.
    good = program(
        state,
        ("push", ("client", "stop")),
        ("wait", ("client",)),
        ("disconnect", ("client.api", "server.api")),
    )
    assert verify_program(state, good) == []


def test_a_user_resuming_while_its_provider_is_stopped_waits_or_breaks_safety() -> None:
    # `resume` is bound to the port: it waits for the server (a deadlock if it never comes).
    state = pair()
    waits = program(
        state,
        ("push", ("client", "stop")),
        ("push", ("server", "stop")),
        ("wait", ("server",)),
        ("push", ("client", "update")),
        ("wait", ("client",)),
    )
    verdict = check_program(state, waits)
    assert verdict.deadlock is not None and verdict.unsafe is None
    assert any("waits for use port" in b.message for b in verdict.deadlock.blocked)
    # A user whose resuming transition is not bound reaches a bound place unprovided.
    loose = component(
        "Loose",
        "idle*, running, paused",
        ["pause: running -> paused stop", "resume: paused -> running update"],
        uses=[("api", ["running"], False)],
    )
    state = configuration(
        [SERVER, loose],
        {"server": ("Server", "on"), "client": ("Loose", "running")},
        ["client.api server.api"],
    )
    bad = program(
        state,
        ("push", ("client", "stop")),
        ("push", ("server", "stop")),
        ("push", ("client", "update")),
        ("wait_all", ()),
    )
    verdict = check_program(state, bad)
    assert verdict.unsafe is not None and verdict.unsafe.kind == "violation"
    moves = [str(m) for m in verdict.unsafe.moves]
    assert moves[-1] == "reach client.running"
    assert "end server.stop" in moves or "leave server.on" in moves
    first = verify_program(state, bad)[0]
    assert first.message == (
        'unsafe program: "client.api" is in use (place "client.running" is marked) while '
        '"server.api" is not provided'
    )
    # When the server comes back, the refusal proposes the missing wait, verified: the client
    # resumes once the server is done.
    forgot = program(
        state,
        ("push", ("client", "stop")),
        ("push", ("server", "stop")),
        ("push", ("server", "update")),
        ("push", ("client", "update")),
        ("wait_all", ()),
    )
    first = verify_program(state, forgot)[0]
    assert first.related[-1].message == (
        "proposed fix: wait('server') before push('client', 'update'): with it the program verifies"
    )
    assert not any("proposed fix" in r.message for r in verify_program(state, bad)[0].related)


def test_a_rolling_provider_changes_under_a_running_user_batch_by_batch() -> None:
    """The server on two hosts with `serial 1`: stopping and restarting it under the running
    client is safe (one batch serves while the other changes), and runs batch after batch,
    each doing both behaviours; stopping it for good still blocks on the last batch, as it
    blocks the whole server without `serial`."""
    from madeus.reconfig import predict

    plain = pair()
    rolling = replace(
        plain,
        instances=tuple(
            replace(i, hosts=("h1", "h2"), serial=Serial(1)) if i.name == "server" else i
            for i in plain.instances
        ),
    )
    restart = program(
        rolling,
        ("push", ("server", "stop")),
        ("push", ("server", "update")),
        ("wait", ("server",)),
    )
    assert verify_program(rolling, restart) == []
    assert explore_program(rolling, restart).sound
    steps = [(s.id, s.hosts) for s in predict(rolling, restart).steps]
    assert steps == [
        ("server#1.stop", ("h1",)),
        ("server#1.restart", ("h1",)),
        ("server#2.stop", ("h2",)),
        ("server#2.restart", ("h2",)),
    ]
    # Without `serial`, the same program blocks: the client is in use.
    assert check_program(plain, restart).deadlock is not None
    # A stop that does not come back: the last batch cannot leave while the client runs.
    stop = program(rolling, ("push", ("server", "stop")), ("wait", ("server",)))
    verdict = check_program(rolling, stop)
    assert verdict.deadlock is not None and verdict.unsafe is None
    assert verdict.deadlock.blocked[0].message == (
        '"server#2" cannot leave place "on" (behaviour "stop", towards "server#2.stop"): '
        'provide port "server.api" would become inactive while "client.api" is in use '
        '(place "client.running" is marked)'
    )
    assert [str(m) for m in verdict.deadlock.moves][-1] == "done server#1.stop"


def test_a_verifier_timeout_on_many_batches_says_what_costs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """z3 stopped early (a 1 ms budget instead of two minutes): the diagnostic names the
    rolling instance and its batches."""
    from madeus.verify import behaviours

    monkeypatch.setattr(behaviours, "Z3_TIMEOUT_MS", 1)
    plain = pair()
    rolling = replace(
        plain,
        instances=tuple(
            replace(i, hosts=tuple(f"h{k}" for k in range(20)), serial=Serial(1))
            if i.name == "server"
            else i
            for i in plain.instances
        ),
    )
    restart = program(rolling, ("push", ("server", "stop")), ("push", ("server", "update")))
    with pytest.raises(VerifyError) as caught:
        check_program(rolling, restart)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "verifier-timeout"
    assert diagnostic.message.endswith(
        '"server" changes in 20 batches, and the cost grows with their square; fewer, larger '
        "batches (`serial 10%`) verify in seconds"
    )


def test_a_behaviour_that_loops_is_refused() -> None:
    spinner = component("Spin", "a*, b", ["go: a -> b spin", "back: b -> a spin"])
    state = configuration([spinner], {"s": ("Spin", "a")})
    bad = program(state, ("push", ("s", "spin")), ("wait_all", ()))
    verdict = check_program(state, bad)
    assert verdict.loop is not None
    assert verify_program(state, bad)[0].message == (
        'the program may not terminate: place "s.a" is marked again in the same run of '
        'behaviour "spin": "s.go" would run twice'
    )
    assert explore_program(state, bad).loop is not None


def test_a_place_whose_join_never_completes_blocks() -> None:
    join = component("Join", "a*, b, c", ["t1: a -> c go", "t2: b -> c go"])
    state = configuration([join], {"j": ("Join", "a")})
    bad = program(state, ("push", ("j", "go")), ("wait", ("j",)))
    verdict = check_program(state, bad)
    assert verdict.deadlock is not None
    assert verdict.deadlock.blocked[0].message == (
        'place "j.c" is never reached: it also waits for "j.t2" (behaviour "go"), which '
        'cannot run from where "j" is'
    )


def test_unfinished_deployments_are_not_verified() -> None:
    state = pair()
    client = state.instance("client")
    docked = Configuration(
        state.assembly,
        (
            state.instance("server"),
            InstanceState(
                "client", client.component, client.hosts, frozenset(), out_docks=frozenset({"go"})
            ),
        ),
        state.links,
        components=state.components,
    )
    with pytest.raises(VerifyError, match="unfinished deployment"):
        check_program(docked, Program(()))


def test_counterexamples_replay_in_the_machine_and_a_wrong_move_is_caught() -> None:
    state = pair()
    bad = program(state, ("push", ("server", "stop")), ("wait", ("server",)))
    witness = check_program(state, bad).deadlock
    assert witness is not None
    again = replay(state, bad, witness.moves, "deadlock")
    assert again.moves == witness.moves
    from madeus.reconfig.machine import Move

    with pytest.raises(VerifyError, match="not enabled"):
        replay(state, bad, [Move("fire", "server", "stop")], "deadlock")


# --- OpenStack ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openstack() -> Configuration:
    from madeus.frontend import load_file

    module = load_file(OPENSTACK)
    assert module.assembly is not None
    return deployed(resolve(module.assembly))


def test_the_mariadb_update_verifies_within_the_time_budget(openstack: Configuration) -> None:
    for script in ("update-mariadb.py", "update-mariadb-sequential.py"):
        prog = load_program(SCRIPTS / script, openstack)
        started = time.perf_counter()
        verdict = check_program(openstack, prog)
        assert verdict.sound, script
        assert time.perf_counter() - started < 5.0


def test_the_mariadb_update_without_its_wait_is_refused(openstack: Configuration) -> None:
    r = ProgramBuilder(openstack)
    users = ["glance", "neutron", "nova", "keystone"]
    for service in users:
        r.push(service, "stop")
    r.push("mariadb", "stop")
    r.push("mariadb", "update")
    for service in users:
        r.push(service, "update")
    r.wait_all()
    verdict = check_program(openstack, r.build())
    assert verdict.deadlock is not None
    # A service restarted before MariaDB could stop: MariaDB now waits for ever.
    assert any(
        b.instance == "mariadb" and "would become inactive" in b.message
        for b in verdict.deadlock.blocked
    )
    assert verdict.unsafe is None and verdict.loop is None


def test_stopping_mariadb_under_the_services_is_refused(openstack: Configuration) -> None:
    r = ProgramBuilder(openstack)
    r.push("mariadb", "stop")
    r.wait("mariadb")
    (diagnostic,) = verify_program(openstack, r.build())
    assert diagnostic.code == "program-deadlock"
    assert diagnostic.message.startswith(
        'the program can block: "mariadb" cannot leave place "deployed" (behaviour "stop", '
        'towards "mariadb.stop"): provide port "mariadb.db" would become inactive while '
    )
    rendered = render_all([diagnostic])
    assert "components/mariadb.mad" in rendered


def test_destroy_verifies(openstack: Configuration) -> None:
    verdict = check_program(openstack, destroy_program(openstack))
    assert verdict.sound
    assert verdict.seconds < 5.0


# --- z3 against the oracle, on generated programs --------------------------------------------

PLACES = ["a", "b", "c", "d"]
BEHAVIOURS = ["deploy", "stop", "go"]


@st.composite
def component_types(draw: st.DrawFn, name: str) -> ComponentType:
    n = draw(st.integers(2, 4))
    places = PLACES[:n]
    transitions = []
    for k in range(draw(st.integers(1, 5))):
        source = draw(st.sampled_from(places))
        target = draw(st.sampled_from([p for p in places if p != source]))
        behaviour = draw(st.sampled_from(BEHAVIOURS))
        duration = draw(st.sampled_from([0.0, 1.0, 2.0]))
        transitions.append(
            Transition(f"t{k}", source, target, duration=duration, behaviour=behaviour)
        )
    provides = []
    if draw(st.booleans()):
        group = draw(st.lists(st.sampled_from(places), min_size=1, max_size=2, unique=True))
        provides.append(ProvidePort("p", "service", tuple(group)))
    uses = []
    if draw(st.booleans()):
        bound_t = draw(
            st.lists(st.sampled_from([t.name for t in transitions]), max_size=2, unique=True)
        )
        bound_p = draw(st.lists(st.sampled_from(places), max_size=2, unique=True))
        uses.append(
            UsePort("u", "service", tuple(bound_t), tuple(bound_p), optional=draw(st.booleans()))
        )
    return ComponentType(
        name,
        places=tuple(Place(p, i == 0) for i, p in enumerate(places)),
        transitions=tuple(transitions),
        provides=tuple(provides),
        uses=tuple(uses),
    )


def placements() -> st.SearchStrategy[tuple[tuple[str, ...], Serial | None]]:
    """One host, or two changed one at a time (a rolling change: two batches), or three
    changed two at a time."""
    return st.sampled_from(
        [
            (("localhost",), None),
            (("localhost",), None),
            (("h1", "h2"), Serial(1)),
            (("h1", "h2", "h3"), Serial(2)),
        ]
    )


@st.composite
def programs(draw: st.DrawFn) -> tuple[Configuration, Program]:
    count = draw(st.integers(1, 3))
    types = [draw(component_types(f"C{i}")) for i in range(count)]
    instances = []
    for i, c in enumerate(types):
        places = [p.name for p in c.places]
        marking = draw(st.lists(st.sampled_from(places), min_size=1, max_size=2, unique=True))
        hosts, serial = draw(placements())
        instances.append(InstanceState(f"i{i}", c, hosts, frozenset(marking), serial=serial))
    users = [i for i in instances if i.component.uses]
    providers = [i for i in instances if i.component.provides]
    links: dict[str, str] = {}
    for user in users:
        if providers and draw(st.integers(0, 3)) > 0:
            links[user.name] = draw(st.sampled_from(providers)).name
    state = Configuration(
        "generated",
        tuple(instances),
        tuple(Link(u, "u", p, "p") for u, p in links.items()),
        components={c.name: c for c in types},
    )
    instructions: list[Instruction] = []
    current = dict(links)  # user -> provider, as the instructions so far leave them
    alive = list(instances)
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(
            st.sampled_from(["push", "push", "push", "wait", "wait_all", "link", "add", "remove"])
        )
        if not alive:
            break
        inst = draw(st.sampled_from(alive))
        if kind == "push":
            behaviours = inst.component.behaviours
            if behaviours:
                instructions.append(Push(inst.name, draw(st.sampled_from(behaviours))))
        elif kind == "wait":
            instructions.append(Wait(inst.name))
        elif kind == "wait_all":
            instructions.append(WaitAll())
        elif kind == "add":
            name = f"n{len(instructions)}"
            added = InstanceState(name, inst.component, ("localhost",), frozenset())
            hosts, serial = draw(placements())
            instructions.append(Add(name, inst.component.name, hosts=hosts, serial=serial))
            alive.append(added)
        elif kind == "remove":
            linked = inst.name in current or inst.name in current.values()
            if not linked:
                instructions.append(Remove(inst.name))
                alive.remove(inst)
        elif inst.component.uses:
            providers_now = [i for i in alive if i.component.provides]
            if inst.name in current:
                instructions.append(Disconnect(inst.name, "u", current.pop(inst.name), "p"))
            elif providers_now:
                provider = draw(st.sampled_from(providers_now)).name
                instructions.append(Connect(inst.name, "u", provider, "p"))
                current[inst.name] = provider
    return state, Program(tuple(instructions))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs())
def test_z3_agrees_with_the_oracle(generated: tuple[Configuration, Program]) -> None:
    state, prog = generated
    try:
        oracle = explore_program(state, prog, max_states=20_000)
    except OracleLimit:
        assume(False)
        return
    verdict = check_program(state, prog)
    assert (verdict.loop is not None) == (oracle.loop is not None)
    if oracle.loop is None:
        assert (verdict.unsafe is not None) == (oracle.unsafe is not None)
        assert (verdict.deadlock is not None) == (oracle.deadlock is not None)
    # Every witness replayed in the machine (check_program does it) ends where it says.
    for witness in verdict.witnesses:
        machine = Machine(state, prog)
        for move in witness.moves:
            machine.apply(move)
        if witness.kind == "deadlock":
            assert not machine.moves() and not machine.finished


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs())
def test_sound_programs_run_and_their_traces_follow_the_rules(
    generated: tuple[Configuration, Program],
) -> None:
    """What the verifier accepts, the executor runs to the end (simulated), and the trace
    passes the independent checker (madeus/reconfig/check.py)."""
    from madeus.reconfig import check_trace, reconfigure_sync

    state, prog = generated
    assume(check_program(state, prog).sound)
    result = reconfigure_sync(state, prog, simulate=True, time_scale=0.002)
    assert check_trace(state, result.trace, prog, tolerance=0.0015) == []
    assert result.problems == ()
