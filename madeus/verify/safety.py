"""Port safety of the monotone deployment: no use port in use while its provider is not provided.

A use port is in use while a token is in an element bound to it (docs/semantics.md):
- bound to a *transition*: in use while the transition runs. The transition starts only once
  the port is provided, and in deployment a provided port stays provided (monotone): such a
  binding is always safe. Nothing to check (the oracle checks it anyway, in the tests).
- bound to a *place* (Concerto-style): in use while the place is marked. The place does not
  wait for the port: if it can be reached before any place of the connected provide group,
  the port is in use while its provider is not provided.

For each place binding the question "is there an execution reaching the place while no place
of the provide group has been reached?" is encoded for z3 over the place's ancestors in the
wait graph: a Boolean `done(n)` (n has fired by then) and an integer time per node, with
`done(n) -> done(m) and time(n) >= time(m) + w(m)` for what n waits for (a disjunction for a
provide port), `done(place)` and `not done(x)` for each place x of the group. A model is an
execution prefix (times order it); docs/semantics.md, section 6, shows the converse.

Shortcuts decide the common cases without z3 (each argued in docs/semantics.md, section 6):
- a group holding an initial place is provided from the start: safe;
- a place that is never reached is never marked: safe;
- a place whose ancestors hold no place of the group can be reached before any of them
  (delay the provider): unsafe as soon as it is reached at all;
- a place that waits, through AND waits only, for a place of the group: safe.
`check_safety(..., shortcuts=False)` asks z3 every time (the tests compare both ways).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from madeus.errors import Diagnostic, VerifyError
from madeus.resolve import Link
from madeus.verify.graph import WaitGraph, ancestors, propagate

Z3_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class UnsafeUse:
    """Use port `instance.port`, bound to `place`, can be in use while `link`'s provide port
    is not provided: ending the transitions of `witness` in this order reaches `place`, while
    none of `waiting` (the transitions entering the provide group's places) has ended."""

    instance: str
    port: str
    place: str
    link: Link
    group: tuple[str, ...]  # the places of the provide port (of instance link.provider)
    witness: tuple[str, ...]  # transition ids, in an order in which they can end
    waiting: tuple[str, ...]
    decided_by: Literal["z3", "shortcut"]


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    unsafe: tuple[UnsafeUse, ...]
    checked: int  # place bindings checked
    z3_queries: int

    @property
    def safe(self) -> bool:
        return not self.unsafe


def check_safety(
    graph: WaitGraph, fired: frozenset[int], *, shortcuts: bool = True
) -> SafetyVerdict:
    compiled = graph.net
    order = propagate(graph)
    rank = {n: i for i, n in enumerate(order)}
    unsafe: list[UnsafeUse] = []
    checked = 0
    queries = 0
    for inst in compiled.instances:
        for use in inst.shape.component.uses:
            if not use.places:
                continue
            served = compiled.provider.get((inst.name, use.name))
            # Optional and unconnected: nothing is used. (An unknown provide port never gets
            # here: build_wait_graph refuses the net.)
            if served is None or served.port is None:
                continue
            provide = served.port
            link = Link(inst.name, use.name, served.instance.name, provide.name, served.span)
            initial = served.instance.shape.initial
            group = tuple(dict.fromkeys(provide.places))
            group_nodes = [_place(graph, link.provider, x) for x in group]
            for place in dict.fromkeys(use.places):
                checked += 1
                p = _place(graph, inst.name, place)
                if shortcuts and any(x in initial for x in group):
                    continue
                found: tuple[tuple[int, ...], str] | None
                if shortcuts:
                    found = _shortcut(graph, p, group_nodes, fired, rank)
                    if found is None:
                        continue
                    if found == _ASK_Z3:
                        queries += 1
                        found = _ask_z3(graph, p, group_nodes)
                else:
                    queries += 1
                    found = _ask_z3(graph, p, group_nodes)
                if found is None:
                    continue
                witness, how = found
                unsafe.append(
                    UnsafeUse(
                        inst.name,
                        use.name,
                        place,
                        link,
                        group,
                        tuple(graph.nodes[n].label for n in witness),
                        _waiting(graph, group_nodes),
                        "z3" if how == "z3" else "shortcut",
                    )
                )
    return SafetyVerdict(tuple(unsafe), checked, queries)


_ASK_Z3: tuple[tuple[int, ...], str] = ((), "ask")


def _place(graph: WaitGraph, instance: str, place: str) -> int:
    n = graph.node_of("place", instance, place)
    if n is None:
        raise VerifyError(
            [Diagnostic("unknown-element", f'"{instance}.{place}" is bound to but not declared')]
        )
    return n


def _shortcut(
    graph: WaitGraph,
    p: int,
    group: Sequence[int],
    fired: frozenset[int],
    rank: dict[int, int],
) -> tuple[tuple[int, ...], str] | None:
    """None: safe; a witness: unsafe; _ASK_Z3: undecided."""
    if p not in fired:
        return None
    cone = ancestors(graph, [p])
    if not any(x in cone for x in group):
        return _witness(graph, p, rank), "shortcut"
    if _and_reaches(graph, p, set(group)):
        return None
    return _ASK_Z3


def _and_reaches(graph: WaitGraph, start: int, goals: set[int]) -> bool:
    """Whether `start` waits, through waits that admit no alternative, for a node of
    `goals`: then that node has fired whenever `start` has."""
    seen = {start}
    queue = deque([start])
    while queue:
        n = queue.popleft()
        if n in goals:
            return True
        deps = graph.deps[n]
        if graph.any_of[n] and len(deps) != 1:
            continue
        for m in deps:
            if m not in seen:
                seen.add(m)
                queue.append(m)
    return False


def _witness(graph: WaitGraph, p: int, rank: dict[int, int]) -> tuple[int, ...]:
    """The transitions that must end for `p` to fire, choosing for each provide port the
    place of its group that fires first, in an order in which they can end. A transition
    is taken only for the place it enters, so no place of a group that `p` does not need
    gets a transition of it ended."""
    needed = {p}
    queue = deque([p])
    while queue:
        n = queue.popleft()
        deps: Iterable[int] = graph.deps[n]
        if graph.any_of[n]:
            deps = [min((m for m in graph.deps[n] if m in rank), key=rank.__getitem__)]
        for m in deps:
            if m not in needed:
                needed.add(m)
                queue.append(m)
    return tuple(
        sorted((n for n in needed if graph.nodes[n].kind == "transition"), key=rank.__getitem__)
    )


def _waiting(graph: WaitGraph, group: Sequence[int]) -> tuple[str, ...]:
    """The transitions entering the group's places: none has ended in a witness (a
    transition's end only serves the place it enters, which the witness does not need)."""
    labels: dict[str, None] = {}
    for x in group:
        for m in graph.deps[x]:
            labels[graph.nodes[m].label] = None
    return tuple(labels)


def _ask_z3(graph: WaitGraph, p: int, group: Sequence[int]) -> tuple[tuple[int, ...], str] | None:
    import z3

    # The group's places are encoded with their own waits: an initial one is done from the
    # start, and `not done(x)` must not be satisfiable for it.
    cone = ancestors(graph, [p, *group])
    solver = z3.Solver()
    solver.set("timeout", Z3_TIMEOUT_MS)
    done: dict[int, Any] = {n: z3.Bool(f"d{n}") for n in cone}
    time: dict[int, Any] = {n: z3.Int(f"t{n}") for n in cone}
    deps, any_of, never = graph.deps, graph.any_of, graph.never
    for n in cone:
        solver.add(time[n] >= 0)
        if never[n] or (any_of[n] and not deps[n]):
            solver.add(z3.Not(done[n]))
            continue
        if not deps[n]:
            solver.add(done[n])  # an initial place: reached in the initial configuration
            continue
        options = [z3.And(done[m], time[n] >= time[m] + graph.weight(m)) for m in deps[n]]
        if any_of[n]:
            solver.add(z3.Implies(done[n], z3.Or(options)))
        else:
            solver.add(z3.Implies(done[n], z3.And(options)))
    solver.add(done[p])
    for x in group:
        solver.add(z3.Not(done[x]))
    answer = solver.check()
    if answer == z3.unsat:
        return None
    if answer != z3.sat:  # pragma: no cover - only on a timeout
        raise VerifyError(
            [Diagnostic("verifier-timeout", "z3 gave no answer in time on a port-safety query")]
        )
    model = solver.model()
    allowed = {n for n in cone if z3.is_true(model.eval(done[n], model_completion=True))}
    # The model's fired nodes, replayed in an order in which they can fire.
    order = propagate(graph, allowed.__contains__)
    rank = {n: i for i, n in enumerate(order)}
    if p not in rank:  # pragma: no cover - the model is well-founded: cannot happen
        raise VerifyError([Diagnostic("verifier-bug", "internal error: bad port-safety model")])
    return _witness(graph, p, rank), "z3"
