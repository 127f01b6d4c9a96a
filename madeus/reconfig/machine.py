"""The Concerto rules as a state machine: no clock, no I/O, no asyncio.

The executor (`executor.py`, real time and backends), the predictor (`predict.py`, virtual
time) and the explicit-state oracle (`madeus/verify/oracle_behaviours.py`, every interleaving)
all drive this one machine, so what is verified, predicted and run is the same semantics.

A configuration holds, per instance: the marked places, the tokens in output docks (`out`:
the source place was left, the transition has not started), the running transitions, the
tokens in input docks (`inn`: ended, the target place not reached yet), the transitions fired
in the current run of a behaviour (`fired`), and the queue of pushed behaviours (its head is
the running one). Plus the program counter and the connections.

Moves (each atomic; docs/reconfiguration.md, "Semantics"):
- exec: the instruction at the program counter; `push` queues a behaviour, `wait(i)` and
  `remove(i)` need i's queue empty, `wait_all()` every queue empty; `connect`, `disconnect`
  and `add` always proceed (a disconnect while the use port is in use is a *violation*);
- leave(i, p): i runs behaviour b, p is marked and transitions of b leave p: the token goes to
  each of their output docks. The SAFETY rule: if this empties the group of a provide port
  of i (no marked place of the group, no token in a transition between two of its places),
  no connected use port may be in use, or about to be used (a transition bound to it waiting
  in its output dock); otherwise i waits;
- fire(i, t): t (of behaviour b) has its output dock marked and every use port bound to t is
  provided (connected to an active provide port; an optional port left unconnected needs
  nothing): t starts;
- end(i, t): t ends (the environment decides when): its input dock is marked;
- reach(i, p): every transition of b entering p has its input dock marked: they are consumed
  and p is marked;
- done(i): nothing of b is left to do (no dock of b marked, nothing running, no marked place
  that b leaves): b is dequeued and the next one, if any, starts.

An instance changed `serial` (a rolling change) is one run per batch of its hosts (`web#1`,
`web#2`...: `parts`, `whole`), each with its own places, docks and queue; an instruction on
the instance applies to every batch, and its provide port is active while any batch has a
token in the group (so the safety rule holds a batch back only when no other batch provides).
The ROLLING rule: a batch makes the first move of a behaviour (a leave, fire or done) only once
every batch before it has nothing queued and no other batch is in the middle of a behaviour
(`started`: it left a place or fired, and is not done); a started behaviour goes on.

A provide port is active while a token is in its group; a use port is in use while a place
bound to it is marked, or a transition bound to it runs or holds the token in its input dock
(ended, its target not reached yet: the token goes on into the target). A transition waiting in
its output dock for a use port is not using it yet. A *violation* is a configuration with
a use port in use while not provided. A *loop* is a configuration where the running behaviour
has a marked place that it leaves towards a transition that already fired (or still holds a
token) in the same run: leaving it would run that transition twice. Behaviours must not, which
also bounds every run (the verifier relies on it); the machine stops there (`fatal`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from madeus.model import ComponentType, ProvidePort, Serial, Transition, UsePort, Value
from madeus.reconfig.program import (
    Add,
    Connect,
    Disconnect,
    Instruction,
    Program,
    Push,
    Remove,
    Wait,
    WaitAll,
)
from madeus.reconfig.state import Configuration, InstanceState, parts
from madeus.resolve import Link
from madeus.source import NO_SPAN, Span

MoveKind = Literal["exec", "leave", "fire", "end", "reach", "done"]
ProblemKind = Literal["violation", "disconnect", "loop"]


@dataclass(frozen=True, slots=True)
class Move:
    kind: MoveKind
    instance: str = ""
    name: str = ""  # a place (leave, reach), a transition (fire, end), a behaviour (done)
    index: int = -1  # exec: the instruction's index

    def __str__(self) -> str:
        if self.kind == "exec":
            return f"exec #{self.index}"
        return f"{self.kind} {self.instance}.{self.name}"


@dataclass(frozen=True, slots=True)
class Problem:
    """A violation (use port `instance.port` in use through `element` while `provider` is
    not provided), a disconnect of a use port in use, or a loop (`port` is then the
    transition that would fire again, `element` the place left)."""

    kind: ProblemKind
    instance: str
    port: str
    provider: str  # "instance.port", "" when not connected
    element: str
    element_kind: Literal["place", "transition"]

    def describe(self) -> str:
        user = f'"{self.instance}.{self.port}"'
        what = f'place "{self.instance}.{self.element}" is marked'
        if self.element_kind == "transition":
            what = f'"{self.instance}.{self.element}" runs'
        if self.kind == "loop":
            return (
                f'place "{self.instance}.{self.element}" is marked again in the same run of '
                f'behaviour "{self.provider}": "{self.instance}.{self.port}" would run twice'
            )
        if self.kind == "disconnect":
            return f'{user} is disconnected from "{self.provider}" while in use ({what})'
        if not self.provider:
            return f"{user} is in use ({what}) while not connected"
        return f'{user} is in use ({what}) while "{self.provider}" is not provided'


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a stuck configuration cannot go on, in plain words, at a source position."""

    instance: str  # "" for the program itself
    message: str
    span: Span = NO_SPAN
    transition: str = ""  # the transition the span declares, if it is one (to point at it)
    push: int = -1  # the push instruction of the blocked behaviour, or the blocked instruction


class TypeIndex:
    """What the rules need of a component type, computed once per type."""

    def __init__(self, component: ComponentType) -> None:
        self.component = component
        self.transition: dict[str, Transition] = {t.name: t for t in component.transitions}
        self.leaving: dict[tuple[str, str], tuple[str, ...]] = {}
        self.entering: dict[tuple[str, str], tuple[str, ...]] = {}
        for t in component.transitions:
            key = (t.behaviour, t.source)
            self.leaving[key] = (*self.leaving.get(key, ()), t.name)
            key = (t.behaviour, t.target)
            self.entering[key] = (*self.entering.get(key, ()), t.name)
        self.groups: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self.provides_at: dict[str, tuple[str, ...]] = {}
        self.provides: dict[str, ProvidePort] = {p.name: p for p in component.provides}
        for port in component.provides:
            places = frozenset(port.places)
            internal = frozenset(
                t.name for t in component.transitions if t.source in places and t.target in places
            )
            self.groups[port.name] = (places, internal)
            for p in places:
                self.provides_at[p] = (*self.provides_at.get(p, ()), port.name)
        self.uses: dict[str, UsePort] = {u.name: u for u in component.uses}
        self.uses_for: dict[str, tuple[str, ...]] = {}
        for use in component.uses:
            for t_name in dict.fromkeys(use.transitions):
                self.uses_for[t_name] = (*self.uses_for.get(t_name, ()), use.name)


class _Run:
    """The mutable state of one instance."""

    __slots__ = (
        "fired",
        "hosts",
        "inn",
        "ix",
        "marked",
        "name",
        "out",
        "queue",
        "running",
        "started",
    )

    def __init__(self, name: str, ix: TypeIndex, hosts: tuple[str, ...]) -> None:
        self.name = name
        self.ix = ix
        self.hosts = hosts
        self.marked: set[str] = set()
        self.out: set[str] = set()
        self.running: set[str] = set()
        self.inn: set[str] = set()
        self.fired: set[str] = set()
        self.queue: list[tuple[str, int]] = []  # (behaviour, index of its push)
        self.started = False  # the running behaviour left a place or fired a transition

    def copy(self) -> _Run:
        other = _Run(self.name, self.ix, self.hosts)
        other.marked = set(self.marked)
        other.out = set(self.out)
        other.running = set(self.running)
        other.inn = set(self.inn)
        other.fired = set(self.fired)
        other.queue = list(self.queue)
        other.started = self.started
        return other

    @property
    def behaviour(self) -> str | None:
        return self.queue[0][0] if self.queue else None

    def key(self) -> tuple[object, ...]:
        return (
            self.name,
            frozenset(self.marked),
            frozenset(self.out),
            frozenset(self.running),
            frozenset(self.inn),
            frozenset(self.fired),
            tuple(b for b, _ in self.queue),
            self.started,
        )


@dataclass(slots=True)
class _Added:
    instance: str
    component: ComponentType
    hosts: tuple[str, ...]
    params: dict[str, Value] = field(default_factory=dict)
    serial: Serial | None = None


class Machine:
    """A configuration and a program, moved by the Concerto rules.

    `advance()` applies every move that needs no time (everything but `end`) until none is
    left and returns them; `end(i, t)` records that a running transition ended (then
    advances). `moves()` and `apply()` expose single moves, for the oracle."""

    def __init__(self, configuration: Configuration, program: Program) -> None:
        self.configuration = configuration
        self.program = program
        self.pc = 0
        self.applied = 0  # moves applied so far
        self.problems: list[Problem] = []
        self.fatal: Problem | None = None
        self._types: dict[int, TypeIndex] = {}
        self.runs: dict[str, _Run] = {}
        self.links: dict[tuple[str, str], tuple[str, str]] = {}
        self.users: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.added: dict[str, _Added] = {}
        # An instance runs as itself, or with `serial` as its batches (`web#1`, `web#2`...):
        # instance -> its runs, run -> its instance.
        self.parts: dict[str, tuple[str, ...]] = {}
        self.whole: dict[str, str] = {}
        self._busy = 0
        self._dirty: dict[str, None] = {}
        self._open: set[tuple[str, str]] = set()  # use ports in violation now
        for inst in configuration.instances:
            runs = self._split(inst.name, inst.component, inst.parts())
            for run, marking in zip(runs, inst.markings(), strict=True):
                run.marked = set(marking)
                run.out = set(inst.out_docks)
                run.inn = set(inst.in_docks)
        for link in configuration.links:
            if link.user in self.parts and link.provider in self.parts:
                self._link(link.user, link.user_port, link.provider, link.provider_port)
        self._check(self.runs)
        for name in self.runs:
            self._check_loop(name)

    # --- copying (the oracle) -------------------------------------------------------------

    def copy(self) -> Machine:
        other = Machine.__new__(Machine)
        other.configuration = self.configuration
        other.program = self.program
        other.pc = self.pc
        other.applied = self.applied
        other.problems = list(self.problems)
        other.fatal = self.fatal
        other._types = self._types
        other.runs = {name: run.copy() for name, run in self.runs.items()}
        other.links = dict(self.links)
        other.users = {k: set(v) for k, v in self.users.items()}
        other.added = dict(self.added)
        other.parts = dict(self.parts)
        other.whole = dict(self.whole)
        other._busy = self._busy
        other._dirty = dict(self._dirty)
        other._open = set(self._open)
        return other

    def key(self) -> tuple[object, ...]:
        """A hashable summary of the configuration (two equal keys: equal futures)."""
        return (
            self.pc,
            tuple(self.runs[name].key() for name in sorted(self.runs)),
            frozenset(self.links.items()),
        )

    # --- queries ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every instruction executed and every queue empty."""
        return self.pc >= len(self.program) and self._busy == 0

    def behaviour_of(self, instance: str) -> str | None:
        run = self.runs.get(instance)
        return run.behaviour if run is not None else None

    def push_index(self, instance: str) -> int:
        """The index of the push instruction of the behaviour `instance` runs, -1 if none."""
        run = self.runs.get(instance)
        return run.queue[0][1] if run is not None and run.queue else -1

    def transition(self, instance: str, name: str) -> Transition:
        return self.runs[instance].ix.transition[name]

    def hosts(self, instance: str) -> tuple[str, ...]:
        """The hosts of a run (an instance, or one batch of it), or of every batch."""
        run = self.runs.get(instance)
        if run is not None:
            return run.hosts
        return tuple(h for r in self.parts[instance] for h in self.runs[r].hosts)

    def component(self, instance: str) -> ComponentType:
        """The component type of an instance (or of one of its runs)."""
        return self.runs[self.parts[self.whole.get(instance, instance)][0]].ix.component

    def active(self, instance: str, port: str) -> bool:
        """Whether provide port `instance.port` is active: a token inside its group (in one of
        its batches, at least, for an instance changed `serial`)."""
        return any(self._active(self.runs[r], port) for r in self.parts.get(instance, ()))

    def _active(self, run: _Run, port: str) -> bool:
        group = run.ix.groups.get(port)
        if group is None:
            return False
        places, internal = group
        if not run.marked.isdisjoint(places):
            return True
        if internal:
            return not (
                internal.isdisjoint(run.out)
                and internal.isdisjoint(run.running)
                and internal.isdisjoint(run.inn)
            )
        return False

    def use_element(self, instance: str, port: str) -> tuple[str, Literal["place", "transition"]]:
        """What makes use port `instance.port` in use: a marked place bound to it, or a
        transition bound to it that runs or has ended while its target place is not reached
        yet (its input dock holds the token); ("", "place") when it is not in use."""
        run = self.runs.get(instance)
        if run is None:
            return "", "place"
        use = run.ix.uses.get(port)
        if use is None:
            return "", "place"
        for p in use.places:
            if p in run.marked:
                return p, "place"
        for t in use.transitions:
            if t in run.running or t in run.inn:
                return t, "transition"
        return "", "place"

    def in_use(self, instance: str, port: str) -> bool:
        return bool(self.use_element(instance, port)[0])

    def provided(self, instance: str, port: str) -> bool:
        """A use port is provided when connected to an active provide port; an optional use
        port left unconnected needs nothing."""
        target = self.links.get((instance, port))
        if target is not None:
            return self.active(*target)
        run = self.runs.get(instance)
        use = run.ix.uses.get(port) if run is not None else None
        return use is not None and use.optional

    def violation(self, instance: str, port: str) -> Problem | None:
        element, kind = self.use_element(instance, port)
        if not element or self.provided(instance, port):
            return None
        target = self.links.get((instance, port))
        provider = f"{target[0]}.{target[1]}" if target is not None else ""
        return Problem("violation", instance, port, provider, element, kind)

    def violations(self) -> list[Problem]:
        """Every use port in use while not provided, now."""
        found = []
        for name in sorted(self.runs):
            for port in self.runs[name].ix.uses:
                problem = self.violation(name, port)
                if problem is not None:
                    found.append(problem)
        return found

    # --- enabled moves ----------------------------------------------------------------------

    def program_move(self) -> Move | None:
        if self.fatal is not None or self.pc >= len(self.program):
            return None
        ins = self.program[self.pc]
        if isinstance(ins, Wait | Remove):
            if any(self.runs[r].queue for r in self.parts.get(ins.instance, ())):
                return None
        elif isinstance(ins, WaitAll) and self._busy:
            return None
        return Move("exec", index=self.pc)

    def instance_moves(self, instance: str) -> list[Move]:
        """The enabled moves of one instance, `end` excepted."""
        run = self.runs.get(instance)
        if run is None or not run.queue or self.fatal is not None or self._held(run):
            return []
        b = run.queue[0][0]
        ix = run.ix
        moves: list[Move] = []
        leaving_left = False
        for p in sorted(run.marked):
            leaving = ix.leaving.get((b, p))
            if leaving:
                leaving_left = True
                if self._may_leave(run, p, leaving):
                    moves.append(Move("leave", instance, p))
        pending_b = False
        for t in sorted(run.out):
            if ix.transition[t].behaviour != b:
                continue
            pending_b = True
            if all(self.provided(instance, u) for u in ix.uses_for.get(t, ())):
                moves.append(Move("fire", instance, t))
        targets: dict[str, None] = {}
        for t in sorted(run.inn):
            transition = ix.transition[t]
            if transition.behaviour == b:
                pending_b = True
                targets[transition.target] = None
        for p in targets:
            if all(t in run.inn for t in ix.entering[(b, p)]):
                moves.append(Move("reach", instance, p))
        if not moves and not leaving_left and not pending_b and not run.running:
            moves.append(Move("done", instance, b, run.queue[0][1]))
        return moves

    def moves(self) -> list[Move]:
        """Every enabled move (the oracle explores them all)."""
        found: list[Move] = []
        if self.fatal is not None:
            return found
        move = self.program_move()
        if move is not None:
            found.append(move)
        for name in sorted(self.runs):
            found.extend(self.instance_moves(name))
            found.extend(Move("end", name, t) for t in sorted(self.runs[name].running))
        return found

    def _held(self, run: _Run) -> bool:
        """The rolling rule: a batch starts its next behaviour once every batch before it has
        nothing queued and no other batch is in the middle of one."""
        if run.started:
            return False
        batches = self.parts[self.whole[run.name]]
        if len(batches) == 1:
            return False
        before = True
        for name in batches:
            if name == run.name:
                before = False
                continue
            other = self.runs[name]
            if other.started or (before and other.queue):
                return True
        return False

    def _may_leave(self, run: _Run, place: str, leaving: Iterable[str]) -> bool:
        """The safety rule: leaving `place` must not empty a provide group while a connected
        use port is in use."""
        return not self._leave_blockers(run, place, leaving)

    def _leave_blockers(
        self, run: _Run, place: str, leaving: Iterable[str]
    ) -> list[tuple[str, str, str]]:
        """(provide port, user instance, user port) that forbid leaving `place`."""
        blockers = []
        whole = self.whole[run.name]
        for port in run.ix.provides_at.get(place, ()):
            places, internal = run.ix.groups[port]
            if any(q in run.marked for q in places if q != place):
                continue
            if internal and not (
                internal.isdisjoint(run.out)
                and internal.isdisjoint(leaving)
                and internal.isdisjoint(run.running)
                and internal.isdisjoint(run.inn)
            ):
                continue
            if any(self._active(self.runs[r], port) for r in self.parts[whole] if r != run.name):
                continue  # another batch provides it
            for user, user_port in sorted(self.users.get((whole, port), ())):
                if self.in_use(user, user_port) or self.about_to_use(user, user_port):
                    blockers.append((port, user, user_port))
        return blockers

    def about_to_use(self, instance: str, port: str) -> str:
        """A transition bound to use port `instance.port` waiting in its output dock (the
        instance left the source place towards it): the safety rule protects it like a use
        (the provider must not leave under a user that is about to use it). '' if none."""
        run = self.runs.get(instance)
        use = run.ix.uses.get(port) if run is not None else None
        if run is None or use is None:
            return ""
        return next((t for t in use.transitions if t in run.out), "")

    # --- applying moves ---------------------------------------------------------------------

    def apply(self, move: Move) -> list[Problem]:
        """Apply one enabled move; return the problems it revealed (also kept in
        `problems`; a loop is also `fatal`)."""
        before = len(self.problems)
        self.applied += 1
        if move.kind == "exec":
            self._exec(self.program[move.index])
            self.pc += 1
            return self.problems[before:]
        run = self.runs[move.instance]
        if move.kind == "leave":
            run.marked.discard(move.name)
            run.out.update(run.ix.leaving[(run.queue[0][0], move.name)])
            run.started = True
        elif move.kind == "fire":
            run.out.discard(move.name)
            run.running.add(move.name)
            run.fired.add(move.name)
            run.started = True
        elif move.kind == "end":
            run.running.discard(move.name)
            run.inn.add(move.name)
        elif move.kind == "reach":
            b = run.queue[0][0]
            run.inn.difference_update(run.ix.entering[(b, move.name)])
            run.marked.add(move.name)
        elif move.kind == "done":
            run.queue.pop(0)
            run.fired.clear()
            run.started = False
            if not run.queue:
                self._busy -= 1
        self._touch(run.name)
        return self.problems[before:]

    def advance(self) -> list[Move]:
        """Apply every enabled move except `end`, until none is left (the instructions first,
        then the instances whose state changed). Returns the moves applied, in order."""
        applied: list[Move] = []
        dirty = self._dirty
        while self.fatal is None:
            move = self.program_move()
            if move is not None:
                self.apply(move)
                applied.append(move)
                continue
            if not dirty:
                break
            name = next(iter(dirty))
            moves = self.instance_moves(name)
            if not moves:
                del dirty[name]
                continue
            self.apply(moves[0])
            applied.append(moves[0])
        return applied

    def end(self, instance: str, transition: str) -> list[Move]:
        """A running transition ended: apply it, then advance."""
        move = Move("end", instance, transition)
        self.apply(move)
        return [move, *self.advance()]

    def _exec(self, ins: Instruction) -> None:
        if isinstance(ins, Push):
            for name in self.parts[ins.instance]:
                run = self.runs[name]
                if not run.queue:
                    self._busy += 1
                run.queue.append((ins.behaviour, self.pc))
                self._touch(name)
        elif isinstance(ins, Connect):
            self._link(ins.user, ins.user_port, ins.provider, ins.provider_port)
            for name in (*self.parts[ins.user], *self.parts[ins.provider]):
                self._touch(name)
        elif isinstance(ins, Disconnect):
            provider = f"{ins.provider}.{ins.provider_port}"
            users = self.users.get((ins.provider, ins.provider_port), set())
            for name in self.parts[ins.user]:
                element, kind = self.use_element(name, ins.user_port)
                if element:
                    self.problems.append(
                        Problem("disconnect", name, ins.user_port, provider, element, kind)
                    )
                self.links.pop((name, ins.user_port), None)
                users.discard((name, ins.user_port))
            for name in (*self.parts[ins.user], *self.parts[ins.provider]):
                self._touch(name)
        elif isinstance(ins, Add):
            component = self.configuration.components[ins.type]
            hosts = ins.placement(self.configuration.inventory)
            params: dict[str, Value] = {
                p.name: p.default for p in component.params if p.default is not None
            }
            params.update(ins.args)
            added = _Added(ins.instance, component, hosts, params, ins.serial)
            self.added[ins.instance] = added
            for run in self._split(ins.instance, component, parts(ins.instance, hosts, ins.serial)):
                run.marked = set(component.initial_places)
                self._touch(run.name)
        elif isinstance(ins, Remove):
            for name in self.parts.pop(ins.instance, ()):
                self.runs.pop(name, None)
                self._dirty.pop(name, None)
                self.whole.pop(name, None)
            self.added.pop(ins.instance, None)
        # Wait and WaitAll only wait.

    def _split(
        self, name: str, component: ComponentType, runs: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> list[_Run]:
        """The runs of instance `name`: itself, or its batches (in order)."""
        made: list[_Run] = []
        for run_name, hosts in runs:
            run = _Run(run_name, self._index(component), hosts)
            self.runs[run_name] = run
            self.whole[run_name] = name
            self._dirty[run_name] = None
            made.append(run)
        self.parts[name] = tuple(run.name for run in made)
        return made

    def _link(self, user: str, user_port: str, provider: str, provider_port: str) -> None:
        """Each run of `user` uses `provider.provider_port`: provided while any run of the
        provider provides it."""
        for name in self.parts[user]:
            self.links[(name, user_port)] = (provider, provider_port)
            self.users.setdefault((provider, provider_port), set()).add((name, user_port))

    def _touch(self, name: str) -> None:
        """`name` changed: re-examine it and its neighbours (providers whose safety wait may
        be released, users whose transitions may now fire), and check their ports."""
        affected = self._neighbours(name)
        for other in affected:
            self._dirty[other] = None
        self._check(affected)
        self._check_loop(name)

    def _check_loop(self, name: str) -> None:
        """A loop: the running behaviour has a marked place whose leaving transition already
        fired in this run (or still holds a token): leaving it would run that transition
        twice. The run stops there (`fatal`)."""
        run = self.runs.get(name)
        if run is None or not run.queue or self.fatal is not None:
            return
        b = run.queue[0][0]
        for p in sorted(run.marked):
            for t in run.ix.leaving.get((b, p), ()):
                if t in run.fired or t in run.out or t in run.running or t in run.inn:
                    problem = Problem("loop", run.name, t, b, p, "place")
                    self.problems.append(problem)
                    self.fatal = problem
                    return

    def _neighbours(self, name: str) -> dict[str, None]:
        found: dict[str, None] = {name: None}
        run = self.runs.get(name)
        if run is None:
            return found
        whole = self.whole[name]
        for port in run.ix.uses:
            target = self.links.get((name, port))
            if target is not None:
                found.update(dict.fromkeys(self.parts.get(target[0], ())))
        for port in run.ix.groups:
            # Sorted: a set's order follows the hash seed, and the order in which instances
            # are re-examined is the order of the moves (plans, traces) that follow.
            for user, _ in sorted(self.users.get((whole, port), ())):
                found[user] = None
        # The other batches: the next one may start, another may leave its group now.
        found.update(dict.fromkeys(self.parts[whole]))
        return found

    def _check(self, names: Iterable[str]) -> None:
        """Record the violations that start now among the use ports of `names`."""
        for name in names:
            run = self.runs.get(name)
            if run is None:
                continue
            for port in run.ix.uses:
                problem = self.violation(name, port)
                if problem is None:
                    self._open.discard((name, port))
                elif (name, port) not in self._open:
                    self._open.add((name, port))
                    self.problems.append(problem)

    def _index(self, component: ComponentType) -> TypeIndex:
        ix = self._types.get(id(component))
        if ix is None or ix.component is not component:
            ix = self._types[id(component)] = TypeIndex(component)
        return ix

    # --- explanations -----------------------------------------------------------------------

    def blocked(self) -> list[Blocked]:
        """Why nothing can move (meaningful when no move is enabled and not finished)."""
        found: list[Blocked] = []
        for name in sorted(self.runs):
            found.extend(self._blocked_instance(name))
        if self.pc < len(self.program):
            ins = self.program[self.pc]
            if isinstance(ins, Wait | Remove):
                runs = [self.runs[r] for r in self.parts.get(ins.instance, ())]
                b = next((run.behaviour for run in runs if run.queue), None)
                if b is not None:
                    found.append(
                        Blocked(
                            "",
                            f'{ins} waits for "{ins.instance}" to end behaviour "{b}"',
                            ins.span,
                            push=self.pc,
                        )
                    )
            elif isinstance(ins, WaitAll):
                busy = [f'"{n}" ({r.behaviour})' for n, r in sorted(self.runs.items()) if r.queue]
                found.append(
                    Blocked("", f"wait_all() waits for {', '.join(busy)}", ins.span, push=self.pc)
                )
        return found

    def _blocked_instance(self, name: str) -> list[Blocked]:
        run = self.runs[name]
        if not run.queue or self._held(run):
            return []  # a held batch waits for the one before it, which says why
        b = run.queue[0][0]
        ix = run.ix
        found = []
        for p in sorted(run.marked):
            leaving = ix.leaving.get((b, p))
            if not leaving:
                continue
            for port, user, user_port in self._leave_blockers(run, p, leaving):
                element, kind = self.use_element(user, user_port)
                if not element:
                    waiting = self.about_to_use(user, user_port)
                    using = f'"{user}.{waiting}" is about to start'
                elif kind == "place":
                    using = f'place "{user}.{element}" is marked'
                else:
                    using = f'"{user}.{element}" runs'

                first = ix.transition[leaving[0]]
                found.append(
                    Blocked(
                        name,
                        f'"{name}" cannot leave place "{p}" (behaviour "{b}", towards '
                        f'"{name}.{first.name}"): provide port "{self.whole[name]}.{port}" '
                        f'would become inactive while "{user}.{user_port}" is in use ({using})',
                        first.span,
                        first.name,
                        run.queue[0][1],
                    )
                )
        for t in sorted(run.out):
            transition = ix.transition[t]
            if transition.behaviour != b:
                continue
            for u in ix.uses_for.get(t, ()):
                if self.provided(name, u):
                    continue
                target = self.links.get((name, u))
                why = (
                    f'"{target[0]}.{target[1]}" is not provided'
                    if target is not None
                    else "it is not connected"
                )
                found.append(
                    Blocked(
                        name,
                        f'"{name}.{t}" (behaviour "{b}") waits for use port "{name}.{u}": {why}',
                        transition.span,
                        transition.name,
                        run.queue[0][1],
                    )
                )
        targets: dict[str, None] = {}
        for t in sorted(run.inn):
            if ix.transition[t].behaviour == b:
                targets[ix.transition[t].target] = None
        for p in targets:
            missing = [t for t in ix.entering[(b, p)] if t not in run.inn]
            if missing:
                place = ix.component.place(p)
                names = ", ".join(f'"{name}.{t}"' for t in missing)
                found.append(
                    Blocked(
                        name,
                        f'place "{name}.{p}" is never reached: it also waits for {names} '
                        f'(behaviour "{b}"), which cannot run from where "{name}" is',
                        place.span if place is not None else NO_SPAN,
                        push=run.queue[0][1],
                    )
                )
        return found

    # --- the result -------------------------------------------------------------------------

    def marking_of(self, instance: str) -> frozenset[str]:
        """The marked places of an instance (of all its batches)."""
        return frozenset().union(*(self.runs[r].marked for r in self.parts[instance]))

    def marking_for_journal(self, instance: str) -> frozenset[str]:
        """The marked places, a transition that has not finished counting in its source
        place (re-run when its behaviour is pushed again); of every batch of a rolling
        change."""
        return frozenset().union(*self.batches_for_journal(instance, apart=False))

    def batches_for_journal(
        self, instance: str, *, apart: bool = True
    ) -> tuple[frozenset[str], ...]:
        """Each batch's places as `marking_for_journal` counts them; with `apart`, () when
        they are all the same (the instance's marking says it all)."""
        found = []
        for name in self.parts[instance]:
            run = self.runs[name]
            places = set(run.marked)
            for t in run.out | run.running | run.inn:
                places.add(run.ix.transition[t].source)
            found.append(frozenset(places))
        if apart and len(set(found)) <= 1:
            return ()
        return tuple(found)

    def to_configuration(self) -> Configuration:
        """The configuration now (after a complete run: where the program left things)."""
        original = {inst.name: inst for inst in self.configuration.instances}
        # A change not over: a behaviour still queued, or an instruction left that pushes one.
        unfinished = {self.whole[n] for n, run in self.runs.items() if run.queue}
        unfinished.update(
            ins.instance for ins in self.program.instructions[self.pc :] if isinstance(ins, Push)
        )
        instances = []
        for name, names in self.parts.items():
            before = original.get(name)
            recorded = None
            if before is not None:
                component, params, span = before.component, before.params, before.span
                hosts, serial = before.hosts, before.serial
                recorded = before.recorded if name in unfinished else None
            else:
                added = self.added[name]
                component, params, span = added.component, added.params, NO_SPAN
                hosts, serial = added.hosts, added.serial
            runs = [self.runs[r] for r in names]
            instances.append(
                InstanceState(
                    name,
                    component,
                    hosts,
                    self.marking_of(name),
                    params,
                    frozenset().union(*(r.out for r in runs)),
                    frozenset().union(*(r.inn | r.running for r in runs)),
                    span,
                    serial,
                    self.batches_for_journal(name),
                    recorded,
                )
            )
        spans = {
            (lk.user, lk.user_port, lk.provider, lk.provider_port): lk.span
            for lk in self.configuration.links
        }
        links = tuple(
            Link(u, up, p, pp, spans.get((u, up, p, pp), NO_SPAN))
            for (u, up), (p, pp) in self.links.items()
        )
        c = self.configuration
        return Configuration(
            c.assembly,
            tuple(instances),
            links,
            dict(c.data),
            c.components,
            c.inventory,
            "program",
            c.deployment,
        )

    def params_of(self, instance: str) -> Mapping[str, Value]:
        instance = self.whole.get(instance, instance)
        added = self.added.get(instance)
        if added is not None:
            return added.params
        return self.configuration.instance(instance).params
