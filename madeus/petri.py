"""The dependency Petri net of a deployment: every instance's places, docks and transitions (all
behaviours), its ports, and the connections between ports, as one directed graph.

Node ids are readable strings, so that diagnostics, drawings and tests can name them:

| kind         | id                                   |
|--------------|--------------------------------------|
| `place`      | `mariadb:place:configured`           |
| `dock-out`   | `mariadb:dock-out:initiated:pull`    |
| `transition` | `mariadb:transition:pull`            |
| `dock-in`    | `mariadb:dock-in:pull:configured`    |
| `provide`    | `mariadb:provide:db`                 |
| `use`        | `keystone:use:db`                    |

Edges (attribute `kind`):
- `flow`: place -> dock-out -> transition -> dock-in -> place (the lifecycle, Madeus docks: one
  output dock per leaving transition, one input dock per entering transition);
- `provide`: bound place -> provide port;
- `use`: use port -> bound transition; `use-place`: use port -> bound place (Concerto-style);
- `connection`: provide port -> use port, one per connection of the assembly.

Every node has the attributes `kind`, `instance`, `name`, `behaviour` (transitions and their
docks; `None` elsewhere), `initial` (places), `span`; docks also have `place` and
`transition`, transitions `duration`, ports `port_kind`. Spans never take part in equality.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import networkx as nx

from madeus.errors import Diagnostic, MadeusError
from madeus.memory import gc_paused
from madeus.resolve import Deployment, Link, ResolvedInstance
from madeus.source import NO_SPAN, Span

NodeKind = Literal["place", "dock-out", "transition", "dock-in", "provide", "use"]
NODE_KINDS: tuple[NodeKind, ...] = ("place", "dock-out", "transition", "dock-in", "provide", "use")
EdgeKind = Literal["flow", "provide", "use", "use-place", "connection"]

# Attributes left out of comparisons: positions are not part of the net's meaning.
_IGNORED = frozenset({"span"})


def place_id(instance: str, place: str) -> str:
    return f"{instance}:place:{place}"


def transition_id(instance: str, transition: str) -> str:
    return f"{instance}:transition:{transition}"


def dock_out_id(instance: str, place: str, transition: str) -> str:
    return f"{instance}:dock-out:{place}:{transition}"


def dock_in_id(instance: str, transition: str, place: str) -> str:
    return f"{instance}:dock-in:{transition}:{place}"


def provide_id(instance: str, port: str) -> str:
    return f"{instance}:provide:{port}"


def use_id(instance: str, port: str) -> str:
    return f"{instance}:use:{port}"


class PetriNet:
    """A thin wrapper over an `nx.DiGraph`; treat `graph` as read-only (in a built net the
    edges of one kind share one attribute dict; `graph.copy()` before changing anything)."""

    __slots__ = ("_by_kind", "graph", "name")

    def __init__(self, name: str, graph: nx.DiGraph) -> None:
        self.name = name
        self.graph = graph
        by_kind: dict[str, list[str]] = {kind: [] for kind in NODE_KINDS}
        for node, kind in graph.nodes(data="kind"):
            by_kind.setdefault(kind, []).append(node)
        self._by_kind = {kind: tuple(nodes) for kind, nodes in by_kind.items()}

    def nodes_of(self, kind: NodeKind) -> tuple[str, ...]:
        """Node ids of one kind, in insertion order (instances, then declaration order)."""
        return self._by_kind.get(kind, ())

    def attrs(self, node: str) -> dict[str, Any]:
        return dict(self.graph.nodes[node])

    def __iter__(self) -> Iterator[str]:
        return iter(self.graph)

    def __len__(self) -> int:
        return int(self.graph.number_of_nodes())

    def _comparable(
        self,
    ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
        nodes = {n: _strip(a) for n, a in self.graph.nodes(data=True)}
        edges = {(u, v): _strip(a) for u, v, a in self.graph.edges(data=True)}
        return nodes, edges

    def __eq__(self, other: object) -> bool:
        """Same nodes with the same attributes and same edges with the same attributes,
        spans aside; the assembly name and insertion order do not matter."""
        if not isinstance(other, PetriNet):
            return NotImplemented
        return self._comparable() == other._comparable()

    __hash__ = None  # type: ignore[assignment]  # mutable graph inside: not hashable

    def __repr__(self) -> str:
        counts = Counter(kind for _, kind in self.graph.nodes(data="kind"))
        inside = ", ".join(f"{counts[k]} {k}" for k in NODE_KINDS if counts[k])
        return f"PetriNet({self.name!r}: {inside})"


def _strip(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in _IGNORED}


def build_net(deployment: Deployment) -> PetriNet:
    """The net of the whole assembly, every behaviour included. Linear in its size.

    Raise MadeusError when a connection or a port binding names an element the instances do
    not declare (the front end's checks rule that out; a deployment built by hand may not)."""
    acc = _Accumulator()
    with gc_paused():
        for inst in deployment.instances:
            _add_instance(inst, acc)
        for link in deployment.links:
            acc.connect(link)
    if acc.problems:
        raise MadeusError(acc.problems)
    return PetriNet(deployment.name, acc.graph())


class _Accumulator:
    """Collects nodes and edges into networkx's own adjacency layout.

    `nx.DiGraph.add_nodes_from` / `add_edges_from` copy every attribute dict twice and cost
    about 1.5 s at 100,000 transitions; filling the three dicts directly is networkx's
    storage layout (`_node`, `_succ`, `_pred`, one dict per edge shared by both sides) and
    several times faster. `tests/test_petri.py` checks the result against graphs built
    through the public API and networkx's own views of it."""

    __slots__ = ("kinds", "node", "pred", "problems", "succ")

    def __init__(self) -> None:
        self.node: dict[str, dict[str, Any]] = {}
        self.succ: dict[str, dict[str, dict[str, Any]]] = {}
        self.pred: dict[str, dict[str, dict[str, Any]]] = {}
        self.problems: list[Diagnostic] = []
        # One attribute dict per edge kind, shared by all the edges of that kind (networkx's
        # "ThinGraph" pattern): 100 MiB less at 100,000 transitions. The graph is read-only;
        # `graph.copy()` gives each edge its own dict again. Connections keep their own (span).
        self.kinds: dict[str, dict[str, Any]] = {
            kind: {"kind": kind} for kind in ("flow", "provide", "use", "use-place")
        }

    def add(self, node: str, attrs: dict[str, Any]) -> None:
        self.node[node] = attrs
        self.succ[node] = {}
        self.pred[node] = {}

    def edge(self, src: str, dst: str, attrs: dict[str, Any], span: Span = NO_SPAN) -> None:
        out = self.succ.get(src)
        into = self.pred.get(dst)
        if out is None or into is None:
            missing = src if out is None else dst
            self.problems.append(
                Diagnostic("unknown-element", f'"{missing}" is bound to but not declared', span)
            )
            return
        out[dst] = attrs
        into[src] = attrs

    def connect(self, link: Link) -> None:
        src = provide_id(link.provider, link.provider_port)
        dst = use_id(link.user, link.user_port)
        ok = True
        for node, what, instance, port in (
            (src, "provide", link.provider, link.provider_port),
            (dst, "use", link.user, link.user_port),
        ):
            if self.node.get(node, {}).get("kind") != what:
                ok = False
                self.problems.append(
                    Diagnostic(
                        "unknown-port",
                        f'connection names unknown {what} port "{instance}.{port}"',
                        link.span,
                    )
                )
        if ok:
            self.edge(src, dst, {"kind": "connection", "span": link.span}, link.span)

    def graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph._node = self.node
        graph._succ = self.succ  # also `_adj`: networkx's descriptor keeps them one object
        graph._pred = self.pred
        return graph


def _add_instance(inst: ResolvedInstance, acc: _Accumulator) -> None:
    kinds = acc.kinds
    name = inst.name
    component = inst.component
    for p in component.places:
        acc.add(
            f"{name}:place:{p.name}",
            {
                "kind": "place",
                "instance": name,
                "name": p.name,
                "behaviour": None,
                "initial": p.initial,
                "span": p.span,
            },
        )
    for t in component.transitions:
        # Ids spelled inline rather than through the *_id helpers: this loop runs 100,000
        # times in the benchmark and the calls were a tenth of the build time.
        source = f"{name}:place:{t.source}"
        target = f"{name}:place:{t.target}"
        out = f"{name}:dock-out:{t.source}:{t.name}"
        tid = f"{name}:transition:{t.name}"
        into = f"{name}:dock-in:{t.name}:{t.target}"
        b = t.behaviour
        acc.add(
            out,
            {
                "kind": "dock-out",
                "instance": name,
                "name": t.name,
                "behaviour": b,
                "initial": False,
                "span": t.span,
                "place": t.source,
                "transition": t.name,
            },
        )
        acc.add(
            tid,
            {
                "kind": "transition",
                "instance": name,
                "name": t.name,
                "behaviour": b,
                "initial": False,
                "span": t.span,
                "duration": t.duration,
            },
        )
        acc.add(
            into,
            {
                "kind": "dock-in",
                "instance": name,
                "name": t.name,
                "behaviour": b,
                "initial": False,
                "span": t.span,
                "place": t.target,
                "transition": t.name,
            },
        )
        acc.edge(source, out, kinds["flow"], t.span)
        acc.edge(out, tid, kinds["flow"], t.span)
        acc.edge(tid, into, kinds["flow"], t.span)
        acc.edge(into, target, kinds["flow"], t.span)
    for provide in component.provides:
        pid = provide_id(name, provide.name)
        acc.add(pid, _port("provide", name, provide.name, provide.kind, provide.span))
        for bound in provide.places:
            acc.edge(place_id(name, bound), pid, kinds["provide"], provide.span)
    for use in component.uses:
        uid = use_id(name, use.name)
        acc.add(uid, _port("use", name, use.name, use.kind, use.span))
        for t_name in use.transitions:
            acc.edge(uid, transition_id(name, t_name), kinds["use"], use.span)
        for bound in use.places:
            acc.edge(uid, place_id(name, bound), kinds["use-place"], use.span)


def _port(kind: NodeKind, instance: str, name: str, port_kind: str, span: Span) -> dict[str, Any]:
    return {
        "kind": kind,
        "instance": instance,
        "name": name,
        "behaviour": None,
        "initial": False,
        "span": span,
        "port_kind": port_kind,
    }
