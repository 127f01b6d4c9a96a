"""An explicit-state explorer of the Madeus rules: every interleaving of the token game.

This is the reference the z3 encodings are tested against (each verdict must agree with an
explicit exploration of the state space on every small model the tests generate). It shares no
code with them: it reads the model (component types, connections) directly and plays the rules
of docs/semantics.md, one move at a time, exploring all interleavings breadth-first.

A configuration holds, per instance, the marked places, the reached places (R), the marked
output docks (one per deploy transition, on its source place's side), the running
transitions, the marked input docks (one per deploy transition, on its target's side) and
which transitions have ended. Initially the initial places are marked and reached. Moves:
- Reach(p): p not yet reached, p has input docks and all of them are marked: they are
  consumed, p is marked and added to R. (A place with no input dock is never reached unless
  initial; deployment is monotone, a place is reached at most once.)
- Leave(p): p is marked and deploy transitions leave it: p's token goes to each of their
  output docks.
- Fire(t): t's output dock is marked and every use port bound to t is provided (a place of
  the connected provide group is in R): t starts running.
- End(t): t is running: it ends, its input dock is marked. (Termin and End in one move: no
  rule can observe the difference.)
A configuration with no move is *final* when every deploy transition has ended, a *deadlock*
otherwise. A *port-safety violation* is a reachable configuration in which a connected use port
is in use (a bound place marked, or a bound transition running) while no place of its
provide group is in R.

The state space grows exponentially with parallelism: this is for small models (tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from madeus import net
from madeus.errors import Diagnostic, VerifyError
from madeus.model import DEFAULT_BEHAVIOUR
from madeus.net import Provider
from madeus.resolve import Deployment

K = TypeVar("K")
M = TypeVar("M")

DEFAULT_MAX_STATES = 200_000

MoveKind = Literal["reach", "leave", "fire", "end"]


@dataclass(frozen=True, slots=True)
class Move:
    kind: MoveKind
    instance: str
    name: str  # a place (reach, leave) or a transition (fire, end)

    def __str__(self) -> str:
        return f"{self.kind} {self.instance}.{self.name}"


@dataclass(frozen=True, slots=True)
class Violation:
    """Use port `instance.port` in use through `element` (a place or a transition) while not
    provided; `moves` leads from the initial configuration to such a configuration."""

    instance: str
    port: str
    element: str
    element_kind: Literal["place", "transition"]
    moves: tuple[Move, ...]


@dataclass(frozen=True, slots=True)
class OracleResult:
    states: int
    deadlock: bool
    # The transitions ended in each configuration with no move (all the same set: the
    # deployment is confluent, which the tests check through this field).
    terminal_ended: frozenset[frozenset[str]]
    deadlock_moves: tuple[Move, ...]  # leading to one deadlock, when there is one
    violations: tuple[Violation, ...]  # one per (instance, port, element), with moves

    @property
    def unsafe(self) -> frozenset[tuple[str, str, str]]:
        """(instance, use port, bound place) of every place binding found in use while its
        provider is not provided."""
        return frozenset(
            (v.instance, v.port, v.element) for v in self.violations if v.element_kind == "place"
        )

    def blocked(self, all_transitions: frozenset[str]) -> frozenset[str]:
        """The transitions that have not ended in the terminal configurations."""
        ended = frozenset().union(*self.terminal_ended) if self.terminal_ended else frozenset()
        return all_transitions - ended


class OracleLimit(VerifyError):
    """The state space is larger than the limit given."""


@dataclass(frozen=True, slots=True)
class _Rule:
    move: Move
    need: int  # bits that must all be set
    forbid: int  # bits that must all be clear
    clear: int
    set: int
    guards: tuple[int, ...]  # each: a mask of which some bit must be set (ports provided)


@dataclass(frozen=True, slots=True)
class _Check:
    """A use port: in use when some bit of `in_use` is set, provided when some bit of
    `provided` is set."""

    instance: str
    port: str
    elements: tuple[tuple[int, str, Literal["place", "transition"]], ...]  # bit, name, kind
    provided: int


def transitions_of(deployment: Deployment) -> frozenset[str]:
    """`instance.transition` of every deploy transition."""
    return frozenset(
        f"{inst.name}.{t.name}"
        for inst in deployment.instances
        for t in inst.component.transitions_of(DEFAULT_BEHAVIOUR)
    )


def explore(
    deployment: Deployment,
    max_states: int = DEFAULT_MAX_STATES,
    *,
    only: frozenset[str] | None = None,
) -> OracleResult:
    """Explore every interleaving; raise OracleLimit past `max_states` configurations.
    With `only` (transition ids), no other transition may start: the configurations reachable
    by ending just those (to replay a counterexample's set of transitions)."""
    rules, checks, initial, all_ended = _compile(deployment)
    if only is not None:
        rules = [
            r for r in rules if r.move.kind != "fire" or f"{r.move.instance}.{r.move.name}" in only
        ]
    parent: dict[int, tuple[int, Move] | None] = {initial: None}
    queue = deque([initial])
    terminal: set[frozenset[str]] = set()
    deadlock_state: int | None = None
    violations: dict[tuple[str, str, str], Violation] = {}
    ended_bits = _ended_bits(deployment)
    while queue:
        state = queue.popleft()
        for check in checks:
            if state & check.provided:
                continue
            for bit, element, kind in check.elements:
                key = (check.instance, check.port, element)
                if state & bit and key not in violations:
                    violations[key] = Violation(
                        check.instance, check.port, element, kind, path_to(parent, state)
                    )
        moved = False
        for rule in rules:
            if state & rule.need != rule.need or state & rule.forbid:
                continue
            if not all(state & guard for guard in rule.guards):
                continue
            moved = True
            after = (state & ~rule.clear) | rule.set
            if after not in parent:
                if len(parent) >= max_states:
                    raise OracleLimit(
                        [Diagnostic("oracle-limit", f"more than {max_states} configurations")]
                    )
                parent[after] = (state, rule.move)
                queue.append(after)
        if not moved:
            terminal.add(frozenset(name for bit, name in ended_bits if state & bit))
            if state & all_ended != all_ended and deadlock_state is None:
                deadlock_state = state
    return OracleResult(
        states=len(parent),
        deadlock=deadlock_state is not None,
        terminal_ended=frozenset(terminal),
        deadlock_moves=() if deadlock_state is None else path_to(parent, deadlock_state),
        violations=tuple(violations[k] for k in sorted(violations)),
    )


def path_to(parent: Mapping[K, tuple[K, M] | None], state: K) -> tuple[M, ...]:
    """The moves of a breadth-first search's tree (`parent`) from its root to `state`."""
    moves: list[M] = []
    step = parent[state]
    while step is not None:
        previous, move = step
        moves.append(move)
        step = parent[previous]
    moves.reverse()
    return tuple(moves)


class _Bits:
    def __init__(self) -> None:
        self.count = 0
        self.bits: dict[tuple[str, ...], int] = {}

    def __call__(self, *key: str) -> int:
        bit = self.bits.get(key)
        if bit is None:
            bit = self.bits[key] = 1 << self.count
            self.count += 1
        return bit


def _ended_bits(deployment: Deployment) -> list[tuple[int, str]]:
    # Recomputed the same way as in _compile (bits are allocated in a fixed order).
    bits = _Bits()
    _allocate(deployment, bits)
    return [
        (bits("ended", inst.name, t.name), f"{inst.name}.{t.name}")
        for inst in deployment.instances
        for t in inst.component.transitions_of(DEFAULT_BEHAVIOUR)
    ]


def _allocate(deployment: Deployment, bits: _Bits) -> None:
    for inst in deployment.instances:
        for p in inst.component.places:
            bits("marked", inst.name, p.name)
            bits("reached", inst.name, p.name)
        for t in inst.component.transitions_of(DEFAULT_BEHAVIOUR):
            for what in ("out", "running", "in", "ended"):
                bits(what, inst.name, t.name)


def _compile(deployment: Deployment) -> tuple[list[_Rule], list[_Check], int, int]:
    # The lifecycle rules are the oracle's own (the reference the wait graph is tested
    # against); which provide port serves which use port is the net's, as everywhere.
    provider = net.compile(deployment).provider
    bits = _Bits()
    _allocate(deployment, bits)
    rules: list[_Rule] = []
    checks: list[_Check] = []
    initial = 0
    all_ended = 0
    for inst in deployment.instances:
        name = inst.name
        component = inst.component
        deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
        for p in component.places:
            if p.initial:
                initial |= bits("marked", name, p.name) | bits("reached", name, p.name)
            entering = [t for t in deploy if t.target == p.name]
            leaving = [t for t in deploy if t.source == p.name]
            if entering:
                docks = 0
                for t in entering:
                    docks |= bits("in", name, t.name)
                rules.append(
                    _Rule(
                        Move("reach", name, p.name),
                        need=docks,
                        forbid=bits("reached", name, p.name),
                        clear=docks,
                        set=bits("marked", name, p.name) | bits("reached", name, p.name),
                        guards=(),
                    )
                )
            if leaving:
                outs = 0
                for t in leaving:
                    outs |= bits("out", name, t.name)
                rules.append(
                    _Rule(
                        Move("leave", name, p.name),
                        need=bits("marked", name, p.name),
                        forbid=0,
                        clear=bits("marked", name, p.name),
                        set=outs,
                        guards=(),
                    )
                )
        for t in deploy:
            guards = []
            for use in component.uses:
                if t.name in use.transitions:
                    provided = _provided(provider, bits, name, use.name)
                    if provided is not None:
                        guards.append(provided)
            rules.append(
                _Rule(
                    Move("fire", name, t.name),
                    need=bits("out", name, t.name),
                    forbid=0,
                    clear=bits("out", name, t.name),
                    set=bits("running", name, t.name),
                    guards=tuple(guards),
                )
            )
            rules.append(
                _Rule(
                    Move("end", name, t.name),
                    need=bits("running", name, t.name),
                    forbid=0,
                    clear=bits("running", name, t.name),
                    set=bits("in", name, t.name) | bits("ended", name, t.name),
                    guards=(),
                )
            )
            all_ended |= bits("ended", name, t.name)
        deploy_names = {t.name for t in deploy}
        for use in component.uses:
            provided = _provided(provider, bits, name, use.name)
            if provided is None:
                continue
            elements: list[tuple[int, str, Literal["place", "transition"]]] = [
                (bits("running", name, t), t, "transition")
                for t in dict.fromkeys(use.transitions)
                if t in deploy_names
            ]
            elements.extend(
                (bits("marked", name, p), p, "place") for p in dict.fromkeys(use.places)
            )
            if elements:
                checks.append(_Check(name, use.name, tuple(elements), provided))
    return rules, checks, initial, all_ended


def _provided(
    provider: Mapping[tuple[str, str], Provider], bits: _Bits, instance: str, port: str
) -> int | None:
    """The mask of the reached bits of the provide group connected to `instance.port`; None
    when the port is not connected. An empty group (or an unknown port) gives 0: never
    provided."""
    served = provider.get((instance, port))
    if served is None:
        return None
    mask = 0
    if served.port is not None:
        for place in served.port.places:
            mask |= bits("reached", served.instance.name, place)
    return mask
