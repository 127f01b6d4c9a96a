"""The dependency net of a deployment, compiled once: what the plan, the verifier, the engine's
program and the drawings read instead of the deployment's instances and connections.

Per component type (`Shape`, shared by all its instances: generated assemblies have 10,000
instances of two types): the deploy transitions, the initial places, the transitions entering
each place, the use ports bound to each transition. Per instance: its shape and hosts. Per
connected use port: the provider instance and its provide port (`Net.provider`). The nodes
and waits of docs/semantics.md follow from them: a transition waits for its source place and
its bound use ports; a place for the transitions entering it; a use port for the provide port
it is connected to; a provide port for one of the places of its group.

`compile(deployment)` is linear in the size of the deployment. A connection to an instance or a
provide port that does not exist (the front end rules it out; a deployment built by hand may
not) is recorded in `Net.problems`, for the plan and the verifier to refuse.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from madeus.errors import Diagnostic
from madeus.model import (
    DEFAULT_BEHAVIOUR,
    ComponentType,
    Place,
    ProvidePort,
    Transition,
    UsePort,
)
from madeus.resolve import Deployment, Link
from madeus.source import NO_SPAN, Span

NodeKind = Literal["place", "dock-out", "transition", "dock-in", "provide", "use"]
EdgeKind = Literal["flow", "provide", "use", "use-place", "connection"]


@dataclass(frozen=True, slots=True)
class Shape:
    component: ComponentType
    deploy: tuple[Transition, ...]
    initial: frozenset[str]
    entering: Mapping[str, tuple[str, ...]]  # place -> deploy transitions entering it
    bound: Mapping[str, tuple[str, ...]]  # transition -> use ports bound to it
    waited_uses: tuple[str, ...]  # use ports bound to some deploy transition
    uses: frozenset[str]  # every use port's name
    provides: Mapping[str, ProvidePort]  # by name


@dataclass(frozen=True, slots=True)
class NetInstance:
    name: str
    shape: Shape
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Provider:
    """What a connected use port waits for: `port` of `instance`, None when the connection
    names a provide port the provider does not have; `span` is the connection's."""

    instance: NetInstance
    port: ProvidePort | None
    span: Span = field(default=NO_SPAN, compare=False)

    @property
    def label(self) -> str:
        """`provider.port`, as connections are named in messages."""
        return f"{self.instance.name}.{self.port.name if self.port else '?'}"


@dataclass(frozen=True, slots=True)
class Net:
    name: str
    instances: tuple[NetInstance, ...]
    # (user instance, use port) -> its provider, for every connection, in the assembly's order.
    provider: Mapping[tuple[str, str], Provider] = field(compare=False)
    # What the net was compiled from: hosts, parameters and spans for those who report.
    deployment: Deployment = field(compare=False, repr=False)
    problems: tuple[Diagnostic, ...] = ()


def compile(deployment: Deployment) -> Net:
    shapes: dict[int, Shape] = {}
    instances: list[NetInstance] = []
    by_name: dict[str, NetInstance] = {}
    for inst in deployment.instances:
        # Keyed by identity: resolved instances share their ComponentType object, and hashing
        # a whole component by value would cost more than what it saves.
        shape = shapes.get(id(inst.component))
        if shape is None:
            shape = shapes[id(inst.component)] = _shape(inst.component)
        node = NetInstance(inst.name, shape, inst.hosts)
        instances.append(node)
        by_name[inst.name] = node
    provider: dict[tuple[str, str], Provider] = {}
    problems: list[Diagnostic] = []
    for link in deployment.links:
        user = by_name.get(link.user)
        found = by_name.get(link.provider)
        if user is None or found is None:
            missing = link.provider if user is not None else link.user
            problems.append(
                Diagnostic("unknown-instance", f'unknown instance "{missing}"', link.span)
            )
            continue
        if link.user_port not in user.shape.uses:
            problems.append(
                Diagnostic(
                    "unknown-port",
                    f'connection names unknown use port "{link.user}.{link.user_port}"',
                    link.span,
                )
            )
            continue
        port = found.shape.provides.get(link.provider_port)
        if port is None:
            problems.append(
                Diagnostic(
                    "unknown-port",
                    f'connection names unknown provide port "{link.provider}.{link.provider_port}"',
                    link.span,
                )
            )
        provider[(link.user, link.user_port)] = Provider(found, port, link.span)
    return Net(deployment.name, tuple(instances), provider, deployment, tuple(problems))


def _shape(component: ComponentType) -> Shape:
    deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
    names = {t.name for t in deploy}
    entering: dict[str, list[str]] = {}
    for t in deploy:
        entering.setdefault(t.target, []).append(t.name)
    bound: dict[str, list[str]] = {}
    for use in component.uses:
        for name in dict.fromkeys(use.transitions):
            bound.setdefault(name, []).append(use.name)
    return Shape(
        component,
        deploy,
        frozenset(component.initial_places),
        {p: tuple(ts) for p, ts in entering.items()},
        {t: tuple(ports) for t, ports in bound.items()},
        tuple(u.name for u in component.uses if any(t in names for t in u.transitions)),
        frozenset(u.name for u in component.uses),
        {p.name: p for p in component.provides},
    )


# --- the net as a graph ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A node of the net: `element` is the place, transition (docks too) or port it stands
    for; `place` is a dock's place."""

    id: str
    kind: NodeKind
    instance: str
    element: Place | Transition | ProvidePort | UsePort
    place: str | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    span: Span = field(default=NO_SPAN, compare=False)


def place_id(instance: str, place: str) -> str:
    return f"{instance}:place:{place}"


def transition_id(instance: str, transition: str) -> str:
    return f"{instance}:transition:{transition}"


def provide_id(instance: str, port: str) -> str:
    return f"{instance}:provide:{port}"


def use_id(instance: str, port: str) -> str:
    return f"{instance}:use:{port}"


def lifecycle(
    instance: str, component: ComponentType, *, docks: bool = True
) -> tuple[list[Node], list[Edge]]:
    """The nodes and edges of one instance of `component` (every behaviour), ids prefixed by
    `instance`; without `docks`, each transition is drawn straight from place to place. A
    binding to an element the component does not declare (ruled out by the front end) draws
    no edge."""
    nodes: list[Node] = [
        Node(place_id(instance, p.name), "place", instance, p) for p in component.places
    ]
    edges: list[Edge] = []
    for t in component.transitions:
        tid = transition_id(instance, t.name)
        chain = [place_id(instance, t.source)]
        if docks:
            out = f"{instance}:dock-out:{t.source}:{t.name}"
            into = f"{instance}:dock-in:{t.name}:{t.target}"
            nodes.append(Node(out, "dock-out", instance, t, t.source))
            nodes.append(Node(tid, "transition", instance, t))
            nodes.append(Node(into, "dock-in", instance, t, t.target))
            chain += [out, tid, into]
        else:
            nodes.append(Node(tid, "transition", instance, t))
            chain.append(tid)
        chain.append(place_id(instance, t.target))
        edges.extend(Edge(a, b, "flow", t.span) for a, b in itertools.pairwise(chain))
    for provide in component.provides:
        pid = provide_id(instance, provide.name)
        nodes.append(Node(pid, "provide", instance, provide))
        edges.extend(
            Edge(place_id(instance, p), pid, "provide", provide.span) for p in provide.places
        )
    for use in component.uses:
        uid = use_id(instance, use.name)
        nodes.append(Node(uid, "use", instance, use))
        edges.extend(
            Edge(uid, transition_id(instance, t), "use", use.span) for t in use.transitions
        )
        edges.extend(Edge(uid, place_id(instance, p), "use-place", use.span) for p in use.places)
    known = {n.id for n in nodes}
    return nodes, [e for e in edges if e.source in known and e.target in known]


def nodes_and_edges(net: Net) -> tuple[list[Node], list[Edge]]:
    """The whole net as a graph: each instance's lifecycle, then one edge per connection."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    for inst in net.instances:
        more_nodes, more_edges = lifecycle(inst.name, inst.shape.component)
        nodes += more_nodes
        edges += more_edges
    return nodes, edges + connections(net)


def links(net: Net) -> tuple[Link, ...]:
    """The connections the net resolved (to ports that exist), as the deployment's links:
    what a reconfiguration's first configuration starts from."""
    return tuple(
        Link(user, use, p.instance.name, p.port.name, p.span)
        for (user, use), p in net.provider.items()
        if p.port is not None
    )


def connections(net: Net) -> list[Edge]:
    """One edge per connection, provide port -> use port."""
    return [
        Edge(provide_id(p.instance.name, p.port.name), use_id(user, use), "connection", p.span)
        for (user, use), p in net.provider.items()
        if p.port is not None
    ]
