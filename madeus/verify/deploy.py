"""Termination of the monotone deployment: does every deploy transition eventually start?

The encoding (docs/semantics.md, sections 4 and 5): one integer time per node of the wait
graph (`madeus.verify.graph`): for a transition its start (it ends one unit later: any positive
duration gives the same verdict), for a place the time it is reached, for a port the time it
is provided. A node waiting for m fires no earlier than m: `time(n) >= time(m) + w(m)`, with
w(m) = 1 when m is a transition (waited on until it ends), else 0; a provide port takes a
disjunction over the places of its group. Each wait is tracked by its own Boolean literal, so
an unsat core is a set of waits, from which `explain.py` builds the waiting cycle.
Theorem (docs/semantics.md): these constraints are satisfiable iff every transition starts in
every execution; unsatisfiable ones contain a cycle of waits.

The decomposition, which makes 100,000-transition assemblies take seconds:
1. the least fixpoint of the firing rule (`graph.propagate`, linear) says which nodes fire;
2. the strongly connected components of the wait graph are computed (Tarjan, linear); a node
   outside every cycle is decided by the topological argument (it fires iff what it waits
   for fires, and that was decided before it);
3. every cyclic component is given to z3: the nodes of it that fire must be schedulable (one
   satisfiable query for all components at once), and every cycle of waits among the nodes
   that do not fire must be infeasible (one unsat query per knot, whose cores are the cycles
   reported). z3 and the fixpoint must agree; if they did not, VerifyError says so (a bug).
z3 is imported inside the functions: importing `madeus.verify` stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from madeus.errors import Diagnostic, VerifyError
from madeus.scc import is_cyclic, strongly_connected
from madeus.verify.graph import WaitGraph, propagate

log = logging.getLogger(__name__)

# How long one z3 call may take (ms). Past it, the fixpoint's verdict stands alone and the
# cycle is found by walking the graph (`DeployVerdict.z3_timeouts` counts such cases).
Z3_TIMEOUT_MS = 60_000
# At most this many cycles are reported per knot of blocked nodes: a knot can hold
# exponentially many cycles; the first few, each missing a wait of the ones before, suffice.
MAX_CYCLES_PER_KNOT = 8


# --- the encoding ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait:
    """`owner` fires no earlier than one of `paths` (each: the nodes the wait goes through,
    the last one being the node whose time bounds the owner's). No path: impossible."""

    owner: int
    paths: tuple[tuple[int, ...], ...]


# Whether a node outside the encoded members counts as fired for `owner`'s wait on it.
External = Callable[[int, int], bool]


def encode_waits(graph: WaitGraph, members: Collection[int], external: External) -> list[Wait]:
    """The waits of `members`. A dependency outside `members` is decided by
    `external(owner, dep)`: fired (the wait on it is met: dropped) or not (an AND wait on it
    is impossible, an OR alternative is removed).

    Chains of nodes that wait for exactly one node (a use port waits for its provider, a
    provide port bound to one place, a place entered by one transition) are folded into the
    waits that lead to them: the time of such a node can always be taken equal to the least
    value its one constraint allows, so folding changes no verdict, and z3's problems have
    about as many variables as transitions (a 1,000-component ring: 2,000, not 6,000)."""
    deps, any_of, nodes = graph.deps, graph.any_of, graph.nodes

    def requirements(n: int) -> list[tuple[int, ...]] | None:
        """What n waits for inside `members`: a list of alternative sets (one node of each
        set is enough; an empty set is impossible); None when n waits for nothing."""
        if any_of[n]:
            inside = []
            for m in deps[n]:
                if m in members:
                    inside.append(m)
                elif external(n, m):
                    return None
            return [tuple(inside)]
        result: list[tuple[int, ...]] = []
        for m in deps[n]:
            if m in members:
                result.append((m,))
            elif not external(n, m):
                result.append(())
        return result or None

    reqs = {n: requirements(n) for n in members}

    def single(n: int) -> int | None:
        """The one node n waits for, when n is a non-transition node waiting for one node."""
        r = reqs[n]
        if nodes[n].kind == "transition" or r is None or len(r) != 1 or len(r[0]) != 1:
            return None
        return r[0][0]

    folded: dict[int, tuple[int, ...]] = {}

    def fold(m: int) -> tuple[int, ...]:
        # Every cycle of the wait graph goes through a transition, which is never folded:
        # this walk ends.
        path = [m]
        while (nxt := single(path[-1])) is not None:
            known = folded.get(nxt)
            if known is not None:
                path.extend(known)
                break
            path.append(nxt)
        for i, node in enumerate(path):
            if node in folded:
                break
            folded[node] = tuple(path[i:])
        return tuple(path)

    waits: list[Wait] = []
    for n in sorted(members):
        r = reqs[n]
        if r is None or single(n) is not None:
            continue
        waits.extend(Wait(n, tuple(fold(m) for m in alternatives)) for alternatives in r)
    return waits


class Encoding:
    """A z3 solver holding waits, each tracked by its own literal (or asserted plainly)."""

    def __init__(self, graph: WaitGraph) -> None:
        import z3

        self._z3 = z3
        self.graph = graph
        self.solver = z3.Solver()
        self.solver.set("timeout", Z3_TIMEOUT_MS)
        # Bellman-Ford difference logic: these are difference constraints, and it is several
        # times faster than the default simplex on long cycles. (A z3 without the option
        # keeps its default.)
        with contextlib.suppress(z3.Z3Exception):
            self.solver.set("arith.solver", 1)
        self.times: dict[int, Any] = {}
        self.literals: list[Any] = []
        self.waits: list[Wait] = []
        self._position: dict[str, int] = {}

    def time(self, n: int) -> Any:
        t = self.times.get(n)
        if t is None:
            t = self.times[n] = self._z3.Int(f"t{n}")
            self.solver.add(t >= 0)
        return t

    def add(self, waits: Iterable[Wait], *, tracked: bool) -> None:
        z3 = self._z3
        weight = self.graph.weight
        for wait in waits:
            owner = self.time(wait.owner)
            options = [owner >= self.time(p[-1]) + weight(p[-1]) for p in wait.paths]
            formula = (
                z3.Or(options) if len(options) > 1 else options[0] if options else z3.BoolVal(False)
            )
            if tracked:
                name = f"w{len(self.literals)}"
                self._position[name] = len(self.literals)
                literal = z3.Bool(name)
                self.literals.append(literal)
                self.waits.append(wait)
                self.solver.add(z3.Implies(literal, formula))
            else:
                self.solver.add(formula)

    def check(self, active: Iterable[int] | None = None) -> str:
        """The answer, `sat`, `unsat` or `unknown` (timeout), assuming the tracked waits of
        `active` (indexes into `waits`; all of them by default)."""
        chosen = self.literals if active is None else [self.literals[i] for i in active]
        return str(self.solver.check(*chosen))

    def core(self) -> list[int]:
        """The tracked waits (indexes into `waits`) of the last unsat answer's core."""
        return sorted(self._position[str(lit)] for lit in self.solver.unsat_core())


def feasible_monolithic(graph: WaitGraph) -> bool:
    """The whole deployment as one z3 problem, no decomposition: every node that can fire at
    all (not a place nothing enters) must fire. Slow on large assemblies; the tests use it to
    check that the decomposition gives the same verdict."""
    members = {n for n in range(len(graph)) if not graph.never[n]}
    encoding = Encoding(graph)
    encoding.add(encode_waits(graph, members, lambda _n, _m: False), tracked=False)
    answer = encoding.check()
    if answer == "unknown":  # pragma: no cover - only on a timeout
        raise VerifyError([Diagnostic("verifier-timeout", "z3 gave no answer in time")])
    return answer == "sat"


# --- the verdict ----------------------------------------------------------------------------

ProblemKind = Literal["deadlock", "never-starts", "unreachable-provider"]


@dataclass(frozen=True, slots=True)
class DeployProblem:
    """Why some transitions never start.

    - `deadlock`: `nodes` is a cycle of waits, starting at a transition: nodes[0] waits for
      nodes[1], ..., the last waits for nodes[0];
    - `never-starts`: (transition, its source place that no deploy transition enters);
    - `unreachable-provider`: (transition, use port, provide port), the provide port's places
      being all never reached.
    `downstream`: the other transitions that never start because of this (at least in part).
    """

    kind: ProblemKind
    nodes: tuple[int, ...]
    downstream: tuple[int, ...] = ()
    by_z3: bool = True  # False when z3 timed out and the cycle was found by walking the graph


@dataclass(frozen=True, slots=True)
class DeployVerdict:
    graph: WaitGraph = field(repr=False)
    fired: frozenset[int] = field(repr=False)
    problems: tuple[DeployProblem, ...]
    cyclic_components: int  # components of the wait graph handed to z3
    z3_queries: int
    z3_timeouts: int

    @property
    def sound(self) -> bool:
        return not self.problems

    def blocked_transitions(self) -> list[str]:
        """`instance.transition` of every transition that never starts."""
        return [self.graph.nodes[n].label for n in self.graph.transitions() if n not in self.fired]


def check_deploy(graph: WaitGraph) -> DeployVerdict:
    order = propagate(graph)
    fired = frozenset(order)
    deps = graph.deps
    components = strongly_connected(len(graph), deps.__getitem__)
    cyclic = [c for c in components if is_cyclic(c, deps.__getitem__)]
    counter = _Counter()
    _certify_fired(graph, fired, cyclic, counter)
    problems: list[DeployProblem] = []
    if len(fired) < len(graph):
        problems = _explain_blocked(graph, fired, counter)
    return DeployVerdict(
        graph, fired, tuple(problems), len(cyclic), counter.queries, counter.timeouts
    )


class _Counter:
    def __init__(self) -> None:
        self.queries = 0
        self.timeouts = 0


def _certify_fired(
    graph: WaitGraph, fired: frozenset[int], cyclic: Sequence[Sequence[int]], counter: _Counter
) -> None:
    """z3's verdict on the cyclic components: the nodes of each that fire can be scheduled,
    given that what they wait for outside the component fires (decided before them). All
    components in one solver: their variables are disjoint, so one satisfiable query proves
    them all."""
    waits: list[Wait] = []
    for component in cyclic:
        members = {n for n in component if n in fired}
        if members:
            waits.extend(encode_waits(graph, members, lambda _n, m: m in fired))
    if not waits:
        return
    encoding = Encoding(graph)
    encoding.add(waits, tracked=False)
    counter.queries += 1
    answer = encoding.check()
    if answer == "unknown":  # pragma: no cover - only on a timeout
        counter.timeouts += 1
        log.warning("z3 timed out certifying the schedulable cycles; the fixpoint stands")
    elif answer != "sat":
        raise VerifyError(
            [
                Diagnostic(
                    "verifier-bug",
                    "internal error: z3 finds no schedule for transitions the fixpoint "
                    "starts (please report this with the assembly)",
                )
            ]
        )


def _explain_blocked(
    graph: WaitGraph, fired: frozenset[int], counter: _Counter
) -> list[DeployProblem]:
    """Every reason why something never fires: the cycles of waits among blocked nodes (from
    z3's unsat cores), and the places that no deploy transition enters."""
    nodes, deps, any_of, never = graph.nodes, graph.deps, graph.any_of, graph.never
    blocked = [n for n in range(len(graph)) if n not in fired]
    blocked_set = set(blocked)

    # The blocking graph: n -> m when n's failure to fire is (partly) because m never fires.
    # A provide port with some places that can fire elsewhere and some that nothing enters:
    # the latter are named in the cycle's text, they do not make a problem of their own.
    def blocking(n: int) -> list[int]:
        inside = [m for m in deps[n] if m in blocked_set]
        if any_of[n] and not all(never[m] for m in inside):
            inside = [m for m in inside if not never[m]]
        return inside

    edges = {n: blocking(n) for n in blocked}
    knots = [
        c
        for c in strongly_connected(len(graph), edges.__getitem__, blocked)
        if is_cyclic(c, edges.__getitem__)
    ]
    problems: list[tuple[DeployProblem, set[int]]] = []
    for knot in sorted(knots, key=min):
        cycles, by_z3 = _knot_cycles(graph, set(knot), counter)
        problems.extend(
            (DeployProblem("deadlock", cycle, by_z3=by_z3), set(knot) if i == 0 else set())
            for i, cycle in enumerate(cycles)
        )
    for n in blocked:
        node = nodes[n]
        if node.kind != "transition":
            continue
        for m in deps[n]:
            target = nodes[m]
            if target.kind == "place" and never[m]:
                problems.append((DeployProblem("never-starts", (n, m)), {n}))
            elif target.kind == "use" and m in blocked_set:
                provide = deps[m][0] if deps[m] else None
                if provide is not None and all(never[x] for x in deps[provide]):
                    problems.append((DeployProblem("unreachable-provider", (n, m, provide)), {n}))
    return _with_downstream(graph, problems, edges)


def _with_downstream(
    graph: WaitGraph,
    problems: Sequence[tuple[DeployProblem, set[int]]],
    edges: dict[int, list[int]],
) -> list[DeployProblem]:
    """Attach to each problem the other blocked transitions that wait on it."""
    nodes = graph.nodes
    reverse: dict[int, list[int]] = {}
    for n, targets in edges.items():
        for m in targets:
            reverse.setdefault(m, []).append(n)
    reported = {
        n for problem, _ in problems for n in problem.nodes if nodes[n].kind == "transition"
    }
    result = []
    for problem, seeds in problems:
        if not seeds:
            result.append(problem)
            continue
        seen = set(seeds)
        stack = list(seeds)
        while stack:
            for d in reverse.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        downstream = tuple(
            sorted(n for n in seen if nodes[n].kind == "transition" and n not in reported)
        )
        result.append(DeployProblem(problem.kind, problem.nodes, downstream, by_z3=problem.by_z3))
    return result


def _knot_cycles(
    graph: WaitGraph, knot: set[int], counter: _Counter
) -> tuple[list[tuple[int, ...]], bool]:
    """The cycles of waits of one knot (a strongly connected set of blocked nodes), from z3's
    unsat cores: the knot's waits on each other cannot all be met (each of its nodes waits on
    another one of it: for a provide port, every place of the group is blocked). After each
    core, the wait of the cycle that a person would change (a port binding, when there is
    one) is dropped and z3 asked again, so that independent cycles are all reported."""
    any_of = graph.any_of
    # Waits on nodes outside the knot: for an AND node, dropped (the knot is infeasible on its
    # own, without them); for a provide port, those places never fire either: removed.
    waits = encode_waits(graph, knot, lambda n, _m: not any_of[n])
    encoding = Encoding(graph)
    encoding.add(waits, tracked=True)
    active = set(range(len(waits)))
    cycles: list[tuple[int, ...]] = []
    while len(cycles) < MAX_CYCLES_PER_KNOT:
        counter.queries += 1
        answer = encoding.check(sorted(active))
        if answer == "sat":
            break
        if answer == "unknown":  # pragma: no cover - only on a timeout
            counter.timeouts += 1
            if not cycles:
                return [_walk_cycle(graph, waits, active)], False
            break
        core = encoding.core()
        cycle, used = _core_cycle(graph, waits, core)
        cycles.append(cycle)
        active.discard(_to_drop(graph, waits, used))
    if not cycles:
        raise VerifyError(
            [
                Diagnostic(
                    "verifier-bug",
                    "internal error: z3 schedules transitions the fixpoint blocks "
                    "(please report this with the assembly)",
                )
            ]
        )
    # Which cycle a core shows first depends on z3's search: report them in a fixed order.
    return sorted(cycles), True


def _core_cycle(
    graph: WaitGraph, waits: Sequence[Wait], core: Iterable[int]
) -> tuple[tuple[int, ...], list[int]]:
    """One cycle through the waits of an unsat core: within the core, some nodes can never
    fire (the fixpoint of the core's waits alone); each of them waits on another one of them,
    so walking from one we come back to one we met. The cycle is rotated to start at its
    earliest transition and, among the cycles through it, is a shortest one."""
    return _cycle_among(graph, [waits[i] for i in core], list(core))


def _walk_cycle(graph: WaitGraph, waits: Sequence[Wait], active: Iterable[int]) -> tuple[int, ...]:
    chosen = sorted(active)
    return _cycle_among(graph, [waits[i] for i in chosen], chosen)[0]


def _cycle_among(
    graph: WaitGraph, waits: Sequence[Wait], ids: Sequence[int]
) -> tuple[tuple[int, ...], list[int]]:
    by_owner: dict[int, list[int]] = {}
    for position, wait in enumerate(waits):
        by_owner.setdefault(wait.owner, []).append(position)
    # Fixpoint of the core's waits alone: owners with no core wait are free.
    stuck = set(by_owner)
    changed = True
    while changed:
        changed = False
        for owner in list(stuck):
            if all(any(p[-1] not in stuck for p in waits[i].paths) for i in by_owner[owner]):
                stuck.discard(owner)
                changed = True
    # Edges among the stuck nodes: through the first wait of each that cannot be met.
    step: dict[int, tuple[int, tuple[int, ...]]] = {}  # owner -> (wait position, path)
    successors: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for owner in stuck:
        for i in by_owner[owner]:
            paths = waits[i].paths
            if paths and all(p[-1] in stuck for p in paths):
                successors[owner] = [(i, p) for p in sorted(paths, key=lambda p: p[-1])]
                step[owner] = successors[owner][0]
                break
    # Walk until a node repeats: that node is on a cycle.
    node = min(stuck)
    seen: set[int] = set()
    while node not in seen:
        seen.add(node)
        node = step[node][1][-1]
    on_cycle = []
    start = node
    while True:
        on_cycle.append(node)
        node = step[node][1][-1]
        if node == start:
            break
    transitions = [n for n in on_cycle if graph.nodes[n].kind == "transition"]
    first = min(transitions) if transitions else min(on_cycle)
    path, used = _shortest_cycle(first, successors)
    return path, [ids[i] for i in used]


def _shortest_cycle(
    start: int, successors: dict[int, list[tuple[int, tuple[int, ...]]]]
) -> tuple[tuple[int, ...], list[int]]:
    """Breadth-first: the fewest waits from `start` back to it; the nodes of the cycle (the
    folded ones included) and the waits used."""
    parent: dict[int, tuple[int, int, tuple[int, ...]]] = {}
    frontier = [start]
    found = False
    while frontier and not found:
        following = []
        for node in frontier:
            for i, path in successors.get(node, ()):
                target = path[-1]
                if target == start:
                    parent[start] = (node, i, path)
                    found = True
                    break
                if target not in parent:
                    parent[target] = (node, i, path)
                    following.append(target)
            if found:
                break
        frontier = following
    chain: list[tuple[int, int, tuple[int, ...]]] = []
    node = start
    while True:
        previous, i, path = parent[node]
        chain.append((previous, i, path))
        node = previous
        if node == start:
            break
    chain.reverse()
    nodes: list[int] = []
    used: list[int] = []
    for owner, i, path in chain:
        nodes.append(owner)
        nodes.extend(path[:-1])
        used.append(i)
    return tuple(nodes), used


def _to_drop(graph: WaitGraph, waits: Sequence[Wait], used: Sequence[int]) -> int:
    """The wait to give up before looking for another cycle: a transition's wait on a use
    port (what a person would change: the binding) when there is one, else the first."""
    for i in used:
        wait = waits[i]
        if graph.nodes[wait.owner].kind == "transition" and any(
            graph.nodes[p[0]].kind == "use" for p in wait.paths
        ):
            return i
    return used[0]
