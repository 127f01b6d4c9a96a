"""The wait graph of the deploy behaviour: who waits for whom, as an AND/OR graph.

Nodes are the elements of the dependency net that a deployment waits on:
- a *transition* waits (AND) for its source place and for each connected use port bound to it;
- a *place* waits (AND) for every deploy transition entering it; an initial place waits for
  nothing; a non-initial place that no deploy transition enters is *never* reached;
- a *use* port (connected, bound to a transition) waits (AND) for the provide port it is
  connected to;
- a *provide* port waits for ANY of the places of its group (it is provided once one of them
  is reached: deployment is monotone).

A node *fires* (a transition starts, a place is reached, a port is provided) once what it
waits for has fired. The rule "a transition starts when every transition entering its
source place has ended and, for each use port bound to it, some place of the connected provide
group has been reached" is exactly the firing rule of this graph (docs/semantics.md, section 3).

Compared with the plan's `after` / `after_one_of` (transitions only), keeping places and ports
as nodes gives each wait a source line to cite; both are linear in the size of the net. Node
ids follow `madeus.net`, so the nodes of a counterexample can be highlighted in the net
drawing as they are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from madeus.errors import Diagnostic, VerifyError
from madeus.net import Net
from madeus.resolve import Deployment

NodeKind = Literal["transition", "place", "use", "provide"]


class Node(NamedTuple):
    """One element of the net. A named tuple rather than a frozen dataclass: a 10,000-component
    assembly has 230,000 of them, and tuples are created and hashed several times faster."""

    kind: NodeKind
    instance: str
    name: str

    @property
    def net_id(self) -> str:
        """The id of this element in the net's graph (`madeus.net.nodes_and_edges`)."""
        return f"{self.instance}:{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """`instance.name`, as transitions are named in plans and diagnostics."""
        return f"{self.instance}.{self.name}"


@dataclass(frozen=True, slots=True)
class WaitGraph:
    """Nodes are numbered; `deps[n]` lists what node n waits for (all of them, or any one of
    them when `any_of[n]`). Transition nodes come first within each instance, in declaration
    order, so the smallest index is the earliest transition of the assembly."""

    net: Net = field(compare=False, repr=False)
    nodes: tuple[Node, ...] = field(repr=False)
    deps: tuple[tuple[int, ...], ...] = field(repr=False)
    any_of: tuple[bool, ...] = field(repr=False)
    never: tuple[bool, ...] = field(repr=False)
    index: dict[Node, int] = field(compare=False, repr=False)
    # Reverse edges, for propagation.
    dependents: tuple[tuple[int, ...], ...] = field(compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def deployment(self) -> Deployment:
        return self.net.deployment

    def weight(self, m: int) -> int:
        """What waiting on node m adds: a transition is waited on until it *ends*, one time
        unit after it starts (any positive duration would do); anything else is waited on
        until it fires."""
        return 1 if self.nodes[m].kind == "transition" else 0

    def transitions(self) -> Iterable[int]:
        return (n for n, node in enumerate(self.nodes) if node.kind == "transition")

    def node_of(self, kind: NodeKind, instance: str, name: str) -> int | None:
        return self.index.get(Node(kind, instance, name))


def build_wait_graph(compiled: Net) -> WaitGraph:
    """The wait graph of a dependency net (`madeus.net.compile`): its nodes numbered, with
    what each waits for. Raise VerifyError when a connection names something that does not
    exist (the front end rules this out; a deployment built by hand may not)."""
    problems: list[Diagnostic] = list(compiled.problems)
    nodes: list[Node] = []
    index: dict[Node, int] = {}

    def add(node: Node) -> int:
        number = index.get(node)
        if number is None:
            number = index[node] = len(nodes)
            nodes.append(node)
        return number

    # First every node, then the edges: edges may point into instances declared later.
    pending: list[tuple[int, list[Node], bool, bool]] = []  # node, deps, any_of, never
    provider = compiled.provider
    for inst in compiled.instances:
        shape, name = inst.shape, inst.name
        connected = {u for u in shape.waited_uses if (name, u) in provider}
        for t in shape.deploy:
            number = add(Node("transition", name, t.name))
            waits = [Node("place", name, t.source)]
            # An optional port left unconnected: nothing to wait for.
            waits.extend(
                Node("use", name, u) for u in shape.bound.get(t.name, ()) if u in connected
            )
            pending.append((number, waits, False, False))
        for place in shape.component.places:
            number = add(Node("place", name, place.name))
            if place.name in shape.initial:
                # Marked and reached from the start, whatever enters it later.
                pending.append((number, [], False, False))
            else:
                into = [Node("transition", name, e) for e in shape.entering.get(place.name, ())]
                pending.append((number, into, False, not into))
        for u in shape.waited_uses:
            served = provider.get((name, u))
            if served is None:
                continue
            number = add(Node("use", name, u))
            port = served.port
            if port is None:
                pending.append((number, [], False, True))
                continue
            provide = Node("provide", served.instance.name, port.name)
            known = provide in index
            p_number = add(provide)
            pending.append((number, [provide], False, False))
            if not known:
                group = dict.fromkeys(port.places)
                places = [Node("place", provide.instance, p) for p in group]
                pending.append((p_number, places, True, not places))
    if problems:
        raise VerifyError(problems)
    size = len(nodes)
    deps: list[tuple[int, ...]] = [()] * size
    any_of = [False] * size
    never = [False] * size
    for number, waits, is_any, is_never in pending:
        found = []
        for w in waits:
            target = index.get(w)
            if target is None:
                problems.append(
                    Diagnostic("unknown-element", f'"{w.label}" is waited on but not declared')
                )
            else:
                found.append(target)
        deps[number] = tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found)
        any_of[number] = is_any
        never[number] = is_never
    if problems:
        raise VerifyError(problems)
    dependents: list[list[int]] = [[] for _ in range(size)]
    for n, ds in enumerate(deps):
        for m in ds:
            dependents[m].append(n)
    return WaitGraph(
        compiled,
        tuple(nodes),
        tuple(deps),
        tuple(any_of),
        tuple(never),
        index,
        tuple(tuple(d) for d in dependents),
    )


# --- the least fixpoint: what fires ---------------------------------------------------------


def propagate(graph: WaitGraph, allowed: Callable[[int], bool] | None = None) -> list[int]:
    """The nodes that fire, in an order in which they can fire (each after what it waits
    for): the least fixpoint of the firing rule. With `allowed`, nodes outside it never fire.
    Linear in the size of the graph."""
    deps, any_of, never, dependents = graph.deps, graph.any_of, graph.never, graph.dependents
    waiting = [1 if any_of[n] else len(deps[n]) for n in range(len(deps))]
    fired = bytearray(len(deps))
    order: list[int] = []
    queue = deque(
        n
        for n in range(len(deps))
        if waiting[n] == 0 and not never[n] and (allowed is None or allowed(n))
    )
    while queue:
        n = queue.popleft()
        if fired[n]:
            continue
        fired[n] = 1
        order.append(n)
        for d in dependents[n]:
            if fired[d] or never[d] or (allowed is not None and not allowed(d)):
                continue
            if any_of[d]:
                waiting[d] = 0
            else:
                waiting[d] -= 1
            if waiting[d] == 0:
                queue.append(d)
    return order


def ancestors(graph: WaitGraph, start: Iterable[int]) -> set[int]:
    """Every node that the nodes of `start` wait on, directly or not, `start` included."""
    seen = set(start)
    queue = deque(seen)
    while queue:
        for m in graph.deps[queue.popleft()]:
            if m not in seen:
                seen.add(m)
                queue.append(m)
    return seen
