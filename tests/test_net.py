"""The dependency net (`madeus.net`): what the plan, the verifier and the drawings read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from madeus import net
from madeus.errors import VerifyError
from madeus.frontend import load_text
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
from madeus.plan import PlanError, build_plan, plan_of
from madeus.resolve import Deployment, resolve
from madeus.source import Span
from madeus.verify import verify

SOURCE = """\
component Db() {
    places off*, up, ready
    transition start: off -> up  ~2s
    transition load: off -> up  ~3s
    transition check: up -> ready  ~1s
    provide service db at up, ready
}
component App() {
    places off*, on
    transition go: off -> on  ~1s
    use service db for go
    use service cache optional for go
}
assembly pair {
    db = Db()
    a = App()
    b = App()
    connect a.db -> db.db
    connect b.db -> db.db
}
"""


def deployment() -> Deployment:
    module = load_text(SOURCE, "pair.mad")
    assert module.assembly is not None
    return resolve(module.assembly)


def test_instances_of_a_type_share_one_shape_and_each_connected_port_its_provider() -> None:
    compiled = net.compile(deployment())
    db, a, b = compiled.instances
    assert a.shape is b.shape and a.shape is not db.shape
    assert db.shape.entering == {"up": ("start", "load"), "ready": ("check",)}
    assert a.shape.bound == {"go": ("db", "cache")}
    assert set(compiled.provider) == {("a", "db"), ("b", "db")}  # cache: not connected
    served = compiled.provider[("a", "db")]
    assert served.instance is db and served.port is not None
    assert served.port.places == ("up", "ready")
    assert compiled.problems == ()
    assert plan_of(compiled) == build_plan(compiled.deployment)


def test_a_connection_to_a_missing_provide_port_is_refused_by_plan_and_verifier() -> None:
    d = deployment()
    broken = replace(d.links[0], provider_port="nope")
    d = replace(d, links=(broken, d.links[1]), _provider={**d._provider, ("a", "db"): broken})
    compiled = net.compile(d)
    (problem,) = compiled.problems
    assert problem.code == "unknown-port"
    assert problem.message == 'connection names unknown provide port "db.nope"'
    with pytest.raises(PlanError) as planned:
        plan_of(compiled)
    assert [x.code for x in planned.value.diagnostics] == ["unknown-port"]
    with pytest.raises(VerifyError) as verified:
        verify(d)
    assert [x.code for x in verified.value.diagnostics] == ["unknown-port"]


# --- the net as a graph: nodes, edges, ids -----------------------------------------------------

SPAN = Span("x.mad", 3, 5, 3, 9)

SERVER = ComponentType(
    "Server",
    places=(Place("off", initial=True), Place("on")),
    transitions=(
        Transition("start", "off", "on", duration=2.0),
        Transition("stop", "on", "off", behaviour="stop"),
    ),
    provides=(ProvidePort("svc", "service", ("on",)),),
)

CLIENT = ComponentType(
    "Client",
    places=(Place("idle", initial=True), Place("ready")),
    transitions=(Transition("go", "idle", "ready", duration=1.5),),
    uses=(UsePort("svc", "service", transitions=("go",), places=("ready",)),),
)


def _pair(*, span: Span | None = None, connection: Connection | None = None) -> Deployment:
    connection = connection or Connection(
        PortRef(InstanceRef("c"), "svc"),
        PortRef(InstanceRef("s"), "svc"),
        **({"span": span} if span else {}),
    )
    return resolve(
        Assembly(
            "pair",
            (SERVER, CLIENT),
            (Instance(InstanceRef("s"), "Server"), Instance(InstanceRef("c"), "Client")),
            (connection,),
        )
    )


# Written out by hand: every behaviour's transitions (stop included), one dock per transition
# end, the port bindings and the connection.
EXPECTED_NODES = {
    "s:place:off": "place",
    "s:place:on": "place",
    "s:dock-out:off:start": "dock-out",
    "s:transition:start": "transition",
    "s:dock-in:start:on": "dock-in",
    "s:dock-out:on:stop": "dock-out",
    "s:transition:stop": "transition",
    "s:dock-in:stop:off": "dock-in",
    "s:provide:svc": "provide",
    "c:place:idle": "place",
    "c:place:ready": "place",
    "c:dock-out:idle:go": "dock-out",
    "c:transition:go": "transition",
    "c:dock-in:go:ready": "dock-in",
    "c:use:svc": "use",
}

EXPECTED_EDGES = {
    ("s:place:off", "s:dock-out:off:start"): "flow",
    ("s:dock-out:off:start", "s:transition:start"): "flow",
    ("s:transition:start", "s:dock-in:start:on"): "flow",
    ("s:dock-in:start:on", "s:place:on"): "flow",
    ("s:place:on", "s:dock-out:on:stop"): "flow",
    ("s:dock-out:on:stop", "s:transition:stop"): "flow",
    ("s:transition:stop", "s:dock-in:stop:off"): "flow",
    ("s:dock-in:stop:off", "s:place:off"): "flow",
    ("s:place:on", "s:provide:svc"): "provide",
    ("c:place:idle", "c:dock-out:idle:go"): "flow",
    ("c:dock-out:idle:go", "c:transition:go"): "flow",
    ("c:transition:go", "c:dock-in:go:ready"): "flow",
    ("c:dock-in:go:ready", "c:place:ready"): "flow",
    ("c:use:svc", "c:transition:go"): "use",
    ("c:use:svc", "c:place:ready"): "use-place",
    ("s:provide:svc", "c:use:svc"): "connection",
}


def test_the_graph_of_a_pair_node_by_node_and_edge_by_edge() -> None:
    nodes, edges = net.nodes_and_edges(net.compile(_pair()))
    assert [n.id for n in nodes] == list(EXPECTED_NODES)  # instances, then declaration order
    assert {n.id: n.kind for n in nodes} == EXPECTED_NODES
    assert {(e.source, e.target): e.kind for e in edges} == EXPECTED_EDGES
    assert len(edges) == len(EXPECTED_EDGES)
    by_id = {n.id: n for n in nodes}
    assert by_id["s:dock-out:on:stop"].element == SERVER.transitions[1]
    assert by_id["s:dock-out:on:stop"].place == "on"
    assert by_id["c:use:svc"].element == CLIENT.uses[0]


def test_spans_are_kept_but_not_compared() -> None:
    _, edges = net.nodes_and_edges(net.compile(_pair(span=SPAN)))
    connection = next(e for e in edges if e.kind == "connection")
    assert connection.span == SPAN
    assert edges == net.nodes_and_edges(net.compile(_pair()))[1]


def test_parallel_transitions_get_one_dock_each_and_no_docks_when_asked() -> None:
    component = ComponentType(
        "P",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("x", "a", "b"), Transition("y", "a", "b")),
    )
    _, edges = net.lifecycle("p", component)
    assert {(e.source, e.target) for e in edges} == {
        ("p:place:a", "p:dock-out:a:x"),
        ("p:dock-out:a:x", "p:transition:x"),
        ("p:transition:x", "p:dock-in:x:b"),
        ("p:dock-in:x:b", "p:place:b"),
        ("p:place:a", "p:dock-out:a:y"),
        ("p:dock-out:a:y", "p:transition:y"),
        ("p:transition:y", "p:dock-in:y:b"),
        ("p:dock-in:y:b", "p:place:b"),
    }
    nodes, edges = net.lifecycle("P", component, docks=False)
    assert [n.kind for n in nodes] == ["place", "place", "transition", "transition"]
    assert {(e.source, e.target) for e in edges} == {
        ("P:place:a", "P:transition:x"),
        ("P:transition:x", "P:place:b"),
        ("P:place:a", "P:transition:y"),
        ("P:transition:y", "P:place:b"),
    }


def test_provide_group_and_family_names() -> None:
    component = ComponentType(
        "G",
        places=(Place("a", initial=True), Place("b"), Place("c")),
        transitions=(Transition("t", "a", "b"), Transition("u", "b", "c")),
        provides=(ProvidePort("grp", "data", ("b", "c"), value="x"),),
    )
    compiled = net.compile(
        resolve(Assembly("g", (component,), (Instance(InstanceRef("g", "k"), "G"),)))
    )
    nodes, edges = net.nodes_and_edges(compiled)
    assert {(e.source, e.target) for e in edges if e.target == "g[k]:provide:grp"} == {
        ("g[k]:place:b", "g[k]:provide:grp"),
        ("g[k]:place:c", "g[k]:provide:grp"),
    }
    assert next(n for n in nodes if n.kind == "provide").element.kind == "data"


def test_a_connection_from_an_unknown_use_port_is_a_problem_of_the_net() -> None:
    bad = Connection(PortRef(InstanceRef("c"), "nope"), PortRef(InstanceRef("s"), "svc"), SPAN)
    compiled = net.compile(_pair(connection=bad))
    assert [(d.code, d.message, d.span) for d in compiled.problems] == [
        ("unknown-port", 'connection names unknown use port "c.nope"', SPAN)
    ]
    assert net.connections(compiled) == []
    with pytest.raises(PlanError):
        plan_of(compiled)


def test_a_binding_to_an_undeclared_element_draws_no_edge() -> None:
    component = ComponentType(
        "B",
        places=(Place("a", initial=True),),
        uses=(UsePort("u", "service", transitions=("ghost",), optional=True),),
    )
    nodes, edges = net.lifecycle("b", component)
    assert [n.id for n in nodes] == ["b:place:a", "b:use:u"]
    assert edges == []
