"""The dependency Petri net: small fixtures compared node by node and edge by edge."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

from madeus.errors import MadeusError
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
from madeus.petri import PetriNet, build_net
from madeus.resolve import resolve
from madeus.source import Span

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


def _assembly(*, span: Span | None = None, duration: float = 2.0) -> Assembly:
    server = SERVER
    if duration != 2.0:
        server = ComponentType(
            "Server",
            places=SERVER.places,
            transitions=(
                Transition("start", "off", "on", duration=duration),
                SERVER.transitions[1],
            ),
            provides=SERVER.provides,
        )
    connection = Connection(
        PortRef(InstanceRef("c"), "svc"),
        PortRef(InstanceRef("s"), "svc"),
        **({"span": span} if span else {}),
    )
    return Assembly(
        "pair",
        (server, CLIENT),
        (Instance(InstanceRef("s"), "Server"), Instance(InstanceRef("c"), "Client")),
        (connection,),
    )


def _node(kind: str, instance: str, name: str, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "kind": kind,
        "instance": instance,
        "name": name,
        "behaviour": None,
        "initial": False,
    }
    attrs.update(extra)
    return attrs


EXPECTED_NODES: dict[str, dict[str, Any]] = {
    "s:place:off": _node("place", "s", "off", initial=True),
    "s:place:on": _node("place", "s", "on"),
    "s:dock-out:off:start": _node(
        "dock-out", "s", "start", behaviour="deploy", place="off", transition="start"
    ),
    "s:transition:start": _node("transition", "s", "start", behaviour="deploy", duration=2.0),
    "s:dock-in:start:on": _node(
        "dock-in", "s", "start", behaviour="deploy", place="on", transition="start"
    ),
    "s:dock-out:on:stop": _node(
        "dock-out", "s", "stop", behaviour="stop", place="on", transition="stop"
    ),
    "s:transition:stop": _node("transition", "s", "stop", behaviour="stop", duration=None),
    "s:dock-in:stop:off": _node(
        "dock-in", "s", "stop", behaviour="stop", place="off", transition="stop"
    ),
    "s:provide:svc": _node("provide", "s", "svc", port_kind="service"),
    "c:place:idle": _node("place", "c", "idle", initial=True),
    "c:place:ready": _node("place", "c", "ready"),
    "c:dock-out:idle:go": _node(
        "dock-out", "c", "go", behaviour="deploy", place="idle", transition="go"
    ),
    "c:transition:go": _node("transition", "c", "go", behaviour="deploy", duration=1.5),
    "c:dock-in:go:ready": _node(
        "dock-in", "c", "go", behaviour="deploy", place="ready", transition="go"
    ),
    "c:use:svc": _node("use", "c", "svc", port_kind="service"),
}

EXPECTED_EDGES: dict[tuple[str, str], str] = {
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


def _strip(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k != "span"}


def _expected_net() -> PetriNet:
    """The expected net, built through networkx's public API only."""
    graph = nx.DiGraph()
    graph.add_nodes_from(EXPECTED_NODES.items())
    graph.add_edges_from((u, v, {"kind": kind}) for (u, v), kind in EXPECTED_EDGES.items())
    return PetriNet("pair", graph)


def test_pair_nodes_and_edges_exactly() -> None:
    net = build_net(resolve(_assembly()))
    assert {n: _strip(a) for n, a in net.graph.nodes(data=True)} == EXPECTED_NODES
    assert {(u, v): a["kind"] for u, v, a in net.graph.edges(data=True)} == EXPECTED_EDGES
    assert net == _expected_net()


def test_nodes_of_kind_in_declaration_order() -> None:
    net = build_net(resolve(_assembly()))
    assert net.nodes_of("place") == ("s:place:off", "s:place:on", "c:place:idle", "c:place:ready")
    assert net.nodes_of("transition") == (
        "s:transition:start",
        "s:transition:stop",
        "c:transition:go",
    )
    assert net.nodes_of("dock-out") == (
        "s:dock-out:off:start",
        "s:dock-out:on:stop",
        "c:dock-out:idle:go",
    )
    assert net.nodes_of("dock-in") == (
        "s:dock-in:start:on",
        "s:dock-in:stop:off",
        "c:dock-in:go:ready",
    )
    assert net.nodes_of("provide") == ("s:provide:svc",)
    assert net.nodes_of("use") == ("c:use:svc",)
    assert len(net) == len(EXPECTED_NODES)
    assert set(net) == set(EXPECTED_NODES)
    assert repr(net) == (
        "PetriNet('pair': 4 place, 3 dock-out, 3 transition, 3 dock-in, 1 provide, 1 use)"
    )


def test_networkx_views_are_consistent() -> None:
    """build_net fills networkx's storage directly: every public view must agree with it."""
    net = build_net(resolve(_assembly()))
    graph = net.graph
    assert set(graph.edges) == set(EXPECTED_EDGES)
    assert {(v, u) for u, v in graph.reverse().edges} == set(EXPECTED_EDGES)
    assert set(graph.in_edges("c:use:svc")) == {("s:provide:svc", "c:use:svc")}
    assert set(graph.predecessors("s:place:off")) == {"s:dock-in:stop:off"}
    assert set(graph.successors("s:place:on")) == {"s:dock-out:on:stop", "s:provide:svc"}
    assert graph.number_of_edges() == len(EXPECTED_EDGES)
    assert graph.nodes["s:place:off"]["initial"] is True
    copy = nx.DiGraph()
    copy.add_nodes_from(graph.nodes(data=True))
    copy.add_edges_from(graph.edges(data=True))
    assert PetriNet("copy", copy) == net
    assert nx.has_path(graph, "s:place:off", "c:place:ready")
    # The stop behaviour closes a cycle in the server: all behaviours are in the net.
    assert not nx.is_directed_acyclic_graph(graph)


def test_spans_are_kept_but_not_compared() -> None:
    net = build_net(resolve(_assembly(span=SPAN)))
    assert net.graph.edges["s:provide:svc", "c:use:svc"]["span"] == SPAN
    assert net == build_net(resolve(_assembly()))


def test_equality_sees_attributes_and_edges() -> None:
    net = build_net(resolve(_assembly()))
    assert net != build_net(resolve(_assembly(duration=3.0)))
    graph = net.graph.copy()
    graph.remove_edge("s:provide:svc", "c:use:svc")
    assert PetriNet("pair", graph) != net
    graph = net.graph.copy()
    graph.edges["c:use:svc", "c:place:ready"]["kind"] = "use"
    assert PetriNet("pair", graph) != net
    # Edges of one kind share their attribute dict in a built net: a copy must not leak back.
    graph.edges["s:place:off", "s:dock-out:off:start"]["kind"] = "other"
    assert net == build_net(resolve(_assembly()))
    graph = net.graph.copy()
    graph.add_node("extra", kind="place")
    assert PetriNet("pair", graph) != net
    # The name is not part of the net; other types never compare equal.
    assert PetriNet("other", net.graph) == net
    assert net != "pair"
    with pytest.raises(TypeError):
        hash(net)


def test_parallel_transitions_get_one_dock_each() -> None:
    component = ComponentType(
        "P",
        places=(Place("a", initial=True), Place("b")),
        transitions=(Transition("x", "a", "b"), Transition("y", "a", "b")),
    )
    net = build_net(resolve(Assembly("p", (component,), (Instance(InstanceRef("p"), "P"),))))
    assert set(net.graph.edges) == {
        ("p:place:a", "p:dock-out:a:x"),
        ("p:dock-out:a:x", "p:transition:x"),
        ("p:transition:x", "p:dock-in:x:b"),
        ("p:dock-in:x:b", "p:place:b"),
        ("p:place:a", "p:dock-out:a:y"),
        ("p:dock-out:a:y", "p:transition:y"),
        ("p:transition:y", "p:dock-in:y:b"),
        ("p:dock-in:y:b", "p:place:b"),
    }


def test_provide_group_and_family_names() -> None:
    component = ComponentType(
        "G",
        places=(Place("a", initial=True), Place("b"), Place("c")),
        transitions=(Transition("t", "a", "b"), Transition("u", "b", "c")),
        provides=(ProvidePort("grp", "data", ("b", "c"), value="x"),),
    )
    net = build_net(resolve(Assembly("g", (component,), (Instance(InstanceRef("g", "k"), "G"),))))
    assert set(net.graph.in_edges("g[k]:provide:grp")) == {
        ("g[k]:place:b", "g[k]:provide:grp"),
        ("g[k]:place:c", "g[k]:provide:grp"),
    }
    assert net.graph.nodes["g[k]:provide:grp"]["port_kind"] == "data"


def test_unknown_port_in_connection_is_an_error() -> None:
    assembly = _assembly()
    bad = Connection(PortRef(InstanceRef("c"), "nope"), PortRef(InstanceRef("s"), "svc"), SPAN)
    broken = Assembly(assembly.name, assembly.components, assembly.instances, (bad,))
    with pytest.raises(MadeusError) as caught:
        build_net(resolve(broken))
    assert [d.message for d in caught.value.diagnostics] == [
        'connection names unknown use port "c.nope"'
    ]
    assert caught.value.diagnostics[0].span == SPAN


def test_binding_to_undeclared_element_is_an_error() -> None:
    component = ComponentType(
        "B",
        places=(Place("a", initial=True),),
        uses=(UsePort("u", "service", transitions=("ghost",), optional=True),),
    )
    with pytest.raises(MadeusError) as caught:
        build_net(resolve(Assembly("b", (component,), (Instance(InstanceRef("b"), "B"),))))
    assert [d.message for d in caught.value.diagnostics] == [
        '"b:transition:ghost" is bound to but not declared'
    ]


def test_builds_100000_transitions_quickly() -> None:
    """Linear time: 10,000 instances of a 10-transition component, with connections."""
    import time

    places = tuple(Place(f"p{i}", i == 0) for i in range(6))
    transitions = tuple(
        Transition(f"{kind}{i}", f"p{i}", f"p{i + 1}", duration=1.0)
        for i in range(5)
        for kind in "ab"
    )
    component = ComponentType(
        "C",
        places=places,
        transitions=transitions,
        provides=(ProvidePort("out", "service", ("p5",)),),
        uses=(UsePort("inp", "service", ("a2",), optional=True),),
    )
    instances = tuple(Instance(InstanceRef(f"c{k}"), "C") for k in range(10_000))
    connections = tuple(
        Connection(PortRef(InstanceRef(f"c{k}"), "inp"), PortRef(InstanceRef(f"c{k - 1}"), "out"))
        for k in range(1, 10_000)
    )
    deployment = resolve(Assembly("big", (component,), instances, connections))
    began = time.perf_counter()
    net = build_net(deployment)
    elapsed = time.perf_counter() - began
    assert len(net.nodes_of("transition")) == 100_000
    assert net.graph.number_of_edges() == 400_000 + 10_000 + 10_000 + 9_999
    assert elapsed < 6.0  # about 1 s on a laptop; generous for loaded CI machines
