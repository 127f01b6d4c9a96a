"""The explicit-state oracle (madeus/verify/oracle.py): the Madeus rules on hand-made models,
and the properties of the semantics the verifier relies on, over random small assemblies.

`assemblies()` (the random generator) is shared with tests/test_verify.py, which compares the
z3 verdicts with this oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    Instance,
    InstanceRef,
    Place,
    PortRef,
    ProvidePort,
    Transition,
    UsePort,
)
from madeus.resolve import Deployment, resolve
from madeus.verify.oracle import OracleLimit, OracleResult, explore, transitions_of

MAX_STATES = 60_000

# --- building models by hand ------------------------------------------------------------------


def component(
    name: str,
    places: str,
    transitions: Sequence[str],
    provides: Sequence[tuple[str, Sequence[str]]] = (),
    uses: Sequence[tuple[str, Sequence[str], Sequence[str]]] = (),
    optional: Sequence[str] = (),
) -> ComponentType:
    """`places`: "a*, b, c" (* for initial); transitions: "name: src -> dst [behaviour]";
    provides: (port, places); uses: (port, transitions, places)."""
    parsed_places = tuple(
        Place(p.strip().rstrip("*"), p.strip().endswith("*")) for p in places.split(",")
    )
    parsed: list[Transition] = []
    for text in transitions:
        name_part, rest = text.split(":")
        words = rest.replace("->", " ").split()
        behaviour = words[2] if len(words) > 2 else "deploy"
        parsed.append(Transition(name_part.strip(), words[0], words[1], behaviour=behaviour))
    return ComponentType(
        name,
        places=parsed_places,
        transitions=tuple(parsed),
        provides=tuple(ProvidePort(p, "service", tuple(at)) for p, at in provides),
        uses=tuple(
            UsePort(p, "service", tuple(ts), tuple(ps), optional=p in optional)
            for p, ts, ps in uses
        ),
    )


def deployment(
    components: Sequence[ComponentType],
    instances: Sequence[tuple[str, str]],
    connections: Sequence[str] = (),
) -> Deployment:
    """instances: (name, type); connections: "user.port -> provider.port"."""
    links = []
    for text in connections:
        user, provider = (side.strip().split(".") for side in text.split("->"))
        links.append(
            Connection(
                PortRef(InstanceRef(user[0]), user[1]),
                PortRef(InstanceRef(provider[0]), provider[1]),
            )
        )
    return resolve(
        Assembly(
            "test",
            tuple(components),
            tuple(Instance(InstanceRef(n), t) for n, t in instances),
            tuple(links),
        )
    )


# --- the random generator (shared with test_verify.py) ----------------------------------------


class Generated:
    """A generated assembly (a plain class: hypothesis shows failing examples by `repr`)."""

    def __init__(self, assembly: Assembly) -> None:
        self.assembly = assembly

    def __repr__(self) -> str:
        # Hypothesis prints failing examples: the .mad text reads better than the dataclasses.
        return "Generated:\n" + self.to_mad()

    @property
    def deployment(self) -> Deployment:
        return resolve(self.assembly)

    def to_mad(self) -> str:
        """The same assembly in the language (for the CLI tests)."""
        lines: list[str] = []
        for c in self.assembly.components:
            lines.append(f"component {c.name} {{")
            lines.append(
                "    places " + ", ".join(p.name + ("*" if p.initial else "") for p in c.places)
            )
            for t in c.transitions:
                extra = f" behaviour {t.behaviour}" if t.behaviour != "deploy" else ""
                lines.append(f"    transition {t.name}: {t.source} -> {t.target}{extra}")
            for p in c.provides:
                lines.append(f"    provide service {p.name} at {', '.join(p.places)}")
            for u in c.uses:
                optional = " optional" if u.optional else ""
                names = ", ".join((*u.transitions, *u.places))
                lines.append(f"    use service {u.name}{optional} for {names}")
            lines.append("}")
        lines.append(f"assembly {self.assembly.name} {{")
        lines.extend(f"    {i.name} = {i.type}" for i in self.assembly.instances)
        lines.extend(f"    connect {c.user} -> {c.provider}" for c in self.assembly.connections)
        lines.append("}")
        return "\n".join(lines) + "\n"


@st.composite
def assemblies(draw: st.DrawFn, max_instances: int = 3, max_transitions: int = 8) -> Generated:
    """Random small assemblies, sound and broken: lifecycles with parallel transitions and
    several initial places, places that only another behaviour enters (never reached in
    deploy, some with deploy transitions leaving them), provide groups of one or two places,
    use ports bound to transitions and/or places, optional ports left unconnected, and
    connections anywhere (cycles across instances, an instance using itself)."""
    count = draw(st.integers(1, max_instances))
    names = [chr(ord("a") + i) for i in range(count)]
    budget = max_transitions
    shapes = []
    for _ in range(count):
        n_places = draw(st.integers(2, 4))
        places = [f"p{j}" for j in range(n_places)]
        initial = {"p0"}
        if n_places > 2 and draw(st.integers(0, 7)) == 0:
            initial.add("p1")
        transitions: list[tuple[str, str, str, str]] = []

        def add(
            src: str,
            dst: str,
            behaviour: str = "deploy",
            into: list[tuple[str, str, str, str]] = transitions,
        ) -> None:
            into.append((f"t{len(into)}", src, dst, behaviour))

        for j in range(1, n_places):
            if places[j] not in initial and budget > 0:
                add(places[draw(st.integers(0, j - 1))], places[j])
                budget -= 1
        for _ in range(draw(st.integers(0, 2))):  # parallel or joining transitions
            j = draw(st.integers(1, n_places - 1))
            if places[j] not in initial and budget > 0:
                add(places[draw(st.integers(0, j - 1))], places[j])
                budget -= 1
        # Unreachable places are not well-formed: a place no deploy transition enters must
        # be entered by another behaviour.
        reached = {"p0", *initial} | {t[2] for t in transitions}
        places = [p for p in places if p in reached]
        if draw(st.integers(0, 5)) == 0:
            add(draw(st.sampled_from(places)), "q", "stop")
            places.append("q")
            targets = [p for p in places if p not in initial and p != "q"]
            if targets and budget > 0 and draw(st.booleans()):
                add("q", draw(st.sampled_from(targets)))
                budget -= 1
        provides = [
            (f"s{k}", draw(st.lists(st.sampled_from(places), min_size=1, max_size=2, unique=True)))
            for k in range(draw(st.integers(0, 2)))
        ]
        deploy = [t[0] for t in transitions if t[3] == "deploy"]
        uses = []
        for k in range(draw(st.integers(0, 2))):
            bound_t = (
                draw(st.lists(st.sampled_from(deploy), max_size=2, unique=True)) if deploy else []
            )
            bound_p = draw(st.lists(st.sampled_from(places), max_size=2, unique=True))
            if bound_t or bound_p:
                uses.append((f"u{k}", bound_t, bound_p, draw(st.integers(0, 4)) == 0))
        shapes.append((places, initial, transitions, provides, uses))
    providers = [(names[i], port) for i, shape in enumerate(shapes) for port, _ in shape[3]]
    components = []
    connections = []
    for i, (places, initial, transitions, provides, uses) in enumerate(shapes):
        kept = []
        for port, bound_t, bound_p, optional in uses:
            if not providers:
                continue
            if not (optional and draw(st.booleans())):
                target = draw(st.sampled_from(providers))
                connections.append(
                    Connection(
                        PortRef(InstanceRef(names[i]), port),
                        PortRef(InstanceRef(target[0]), target[1]),
                    )
                )
            kept.append((port, bound_t, bound_p, optional))
        components.append(
            ComponentType(
                names[i].upper(),
                places=tuple(Place(p, p in initial) for p in places),
                transitions=tuple(Transition(n, s, d, behaviour=b) for n, s, d, b in transitions),
                provides=tuple(ProvidePort(p, "service", tuple(at)) for p, at in provides),
                uses=tuple(
                    UsePort(p, "service", tuple(ts), tuple(ps), optional=o) for p, ts, ps, o in kept
                ),
            )
        )
    assembly = Assembly(
        "generated",
        tuple(components),
        tuple(Instance(InstanceRef(n), n.upper()) for n in names),
        tuple(connections),
    )
    return Generated(assembly)


def explore_small(d: Deployment) -> OracleResult:
    """The oracle, or a rejected example when the state space is too large for a test."""
    try:
        return explore(d, MAX_STATES)
    except OracleLimit:
        assume(False)
        raise  # unreachable: assume(False) raises


# --- the rules on hand-made models ------------------------------------------------------------

SERVER = component("Server", "off*, on", ["start: off -> on"], provides=[("svc", ["on"])])


def test_a_chain_ends_with_every_transition_and_counts_its_states() -> None:
    chain = component("Chain", "a*, b, c", ["t1: a -> b", "t2: b -> c"])
    result = explore(deployment([chain], [("x", "Chain")]))
    assert not result.deadlock
    assert result.terminal_ended == frozenset({frozenset({"x.t1", "x.t2"})})
    # leave a, fire t1, end t1, reach b, leave b, fire t2, end t2, reach c: 9 configurations
    assert result.states == 9


def test_parallel_transitions_interleave_and_join() -> None:
    par = component("Par", "a*, b", ["t1: a -> b", "t2: a -> b"])
    result = explore(deployment([par], [("x", "Par")]))
    assert not result.deadlock
    assert result.terminal_ended == frozenset({frozenset({"x.t1", "x.t2"})})
    # the initial one; after leave, each of t1, t2 waiting, running or ended (9); b reached
    assert result.states == 11


def test_a_transition_waits_for_its_use_port() -> None:
    user = component("User", "off*, on", ["go: off -> on"], uses=[("dep", ["go"], [])])
    d = deployment([SERVER, user], [("s", "Server"), ("u", "User")], ["u.dep -> s.svc"])
    result = explore(d)
    assert not result.deadlock and not result.violations
    # u.go never runs before s.on is reached: no configuration has both "fire u.go" before
    # "reach s.on" (checked by the safety checks: no transition-bound violation).


def test_two_components_waiting_for_each_other_deadlock() -> None:
    a = component("A", "off*, on", ["go: off -> on"], [("svc", ["on"])], [("dep", ["go"], [])])
    d = deployment([a], [("x", "A"), ("y", "A")], ["x.dep -> y.svc", "y.dep -> x.svc"])
    result = explore(d)
    assert result.deadlock
    assert result.terminal_ended == frozenset({frozenset()})
    assert [str(m) for m in result.deadlock_moves] == ["leave x.off", "leave y.off"]


def test_a_provide_group_is_provided_by_any_of_its_places() -> None:
    db = component(
        "Db",
        "off*, started, replicated",
        ["start: off -> started", "replicate: started -> replicated"],
        provides=[("reads", ["started", "replicated"])],
        uses=[("peer", ["replicate"], [])],
    )
    replica = component(
        "Replica",
        "off*, synced",
        ["sync: off -> synced"],
        [("peer", ["synced"])],
        [("primary", ["sync"], [])],
    )
    d = deployment(
        [db, replica],
        [("db", "Db"), ("r", "Replica")],
        ["db.peer -> r.peer", "r.primary -> db.reads"],
    )
    assert not explore(d).deadlock


def test_a_place_nothing_enters_in_deploy_is_never_reached() -> None:
    db = component(
        "Db",
        "off*, on, stopped, archived",
        ["start: off -> on", "stop: on -> stopped stop", "archive: stopped -> archived"],
    )
    result = explore(deployment([db], [("db", "Db")]))
    assert result.deadlock
    assert result.terminal_ended == frozenset({frozenset({"db.start"})})


def test_a_place_bound_use_port_is_in_use_before_its_provider() -> None:
    proxy = component(
        "Proxy",
        "off*, configured",
        ["configure: off -> configured"],
        uses=[("backend", [], ["configured"])],
    )
    d = deployment([SERVER, proxy], [("s", "Server"), ("p", "Proxy")], ["p.backend -> s.svc"])
    result = explore(d)
    assert not result.deadlock
    assert result.unsafe == frozenset({("p", "backend", "configured")})
    (violation,) = result.violations
    assert [str(m) for m in violation.moves] == [
        "leave p.off",
        "fire p.configure",
        "end p.configure",
        "reach p.configured",
    ]


def test_an_initial_place_bound_to_a_use_port_is_in_use_from_the_start() -> None:
    user = component("User", "off*, on", ["go: off -> on"], uses=[("dep", [], ["off"])])
    d = deployment([SERVER, user], [("s", "Server"), ("u", "User")], ["u.dep -> s.svc"])
    (violation,) = explore(d).violations
    assert violation.moves == ()


def test_an_unconnected_optional_port_is_never_in_use() -> None:
    user = component(
        "User", "off*, on", ["go: off -> on"], uses=[("dep", ["go"], ["on"])], optional=["dep"]
    )
    result = explore(deployment([user], [("u", "User")]))
    assert not result.deadlock and not result.violations


def test_only_restricts_the_transitions_that_may_start() -> None:
    chain = component("Chain", "a*, b, c", ["t1: a -> b", "t2: b -> c"])
    result = explore(deployment([chain], [("x", "Chain")]), only=frozenset({"x.t1"}))
    assert result.terminal_ended == frozenset({frozenset({"x.t1"})})


def test_the_state_limit_is_enforced() -> None:
    par = component("Par", "a*, b", [f"t{i}: a -> b" for i in range(6)])
    with pytest.raises(OracleLimit):
        explore(deployment([par], [("x", "Par")]), max_states=100)


# --- properties of the semantics, over random assemblies --------------------------------------

PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTIES
@given(assemblies())
def test_the_deployment_is_confluent(generated: Generated) -> None:
    """Every configuration with no move has ended the same transitions: the monotone
    deployment has one outcome, whatever the interleaving (docs/semantics.md, section 3)."""
    result = explore_small(generated.deployment)
    assert len(result.terminal_ended) == 1
    (ended,) = result.terminal_ended
    assert result.deadlock == (ended != transitions_of(generated.deployment))


@PROPERTIES
@given(assemblies())
def test_a_use_port_bound_to_a_transition_is_never_in_use_unprovided(
    generated: Generated,
) -> None:
    """The claim of docs/semantics.md, section 6: only place bindings can be unsafe."""
    result = explore_small(generated.deployment)
    assert all(v.element_kind == "place" for v in result.violations)
