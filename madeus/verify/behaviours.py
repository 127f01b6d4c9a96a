"""Verifying a reconfiguration program before it runs: termination and port safety, with z3
(docs/semantics.md, section 9).

The semantics is `madeus.reconfig.machine`'s: the Concerto rules as single moves (an
instruction; leave, fire, end, reach and done of an instance). This module encodes it
independently, as a bounded set of *events* with times, and asks z3 for an interleaving that
breaks a property.

**The bound.** A program is finite, and within one run of a behaviour (one `push`) each of its
moves happens at most once as long as the run does not *loop* (mark again a place it already
left: checked, below). So the events of every loop-free execution are drawn from a finite set,
known from the program and the component types:

    X(j)                         instruction j executed
    L(r, p)  F(r, t)  E(r, t)    run r leaves place p; fires / ends transition t
    R(r, p)  D(r)                run r reaches place p; ends (its behaviour is done)

(a run r is one push: instance, behaviour, position in the instance's queue). Each event gets
a Boolean *happens* and an integer *time*; times are pairwise distinct, so the events that
happen form one interleaving, and the configuration at any cut (the events before a time) is a
formula of them: a place is marked when its last setting event before the cut (the start, or a
reach) has no leave after it; a transition runs between its fire and its end; an output dock
holds a token between the leave of the source and the fire, an input dock between the end and
the reach of the target; a provide port is active while a token is in its group; connections
and instances are what the executed instructions made them. Each event that happens satisfies
the rule's guard in the configuration just before it: the instruction order; a run's events
after its push and after the previous run of the instance is done, and before its own done;
leave: the place marked, and the SAFETY rule (if this empties a provide group, no connected use
port is in use, or about to be used by a transition waiting in its output dock); fire: after
the leave of its source, every bound use port provided; end: after the fire; reach: after the
ends of every transition of the behaviour entering the place; done: nothing of the run left to
do; `wait(i)`/`remove(i)` after the done of every run of i pushed before, `wait_all()` after
all of them.

A rolling change (`serial`) is one set of runs per batch (`parts`); a provide port of the
instance is active while some batch holds a token in its group, and the safety guard of a
batch's leave holds when another batch provides. The rolling rule (a batch's run starts once
the runs of earlier batches that were pushed are done and no other batch's run is started
and not done) is stated once per run, at the time of its first event (`_first`), with the
time each run started (its first leave or fire); the guards carry it only for the deadlock
query. That the batches of one push run in order is implied, and stated too: it helps z3.

Three queries (satisfiable means found):
- **loop**: some run leaves a place and later reaches it again (from then on, leaving it would
  run a transition twice; the machine stops there);
- **unsafe** (loop-free): at some cut, a use port is in use while not provided (connected to
  an inactive provide port, or required and not connected), or a `disconnect` executes while
  its use port is in use;
- **deadlock** (loop-free): at the end of the events that happen, no further event is enabled
  and the program has not finished.

There is no unrolling over steps: the formula grows with the number of events (about
`instructions + sum over pushes of 2 x transitions + places`) and the interleavings of
independent instances cost nothing, which is what makes OpenStack's programs take a second.

A model is an interleaving (events sorted by time). It is replayed move by move in the state
machine (each move must be enabled there: the two readings of the rules are checked against
each other on every counterexample), which also says what blocks; `program_diagnostics` renders
one diagnostic per problem, the steps as notes at the script's and the `.mad` files' lines.
`madeus/verify/oracle_behaviours.py` explores the same state space explicitly, for the tests.

The starting configuration must hold its tokens in places (not in docks, as an interrupted
deployment may leave them): resume the deployment first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from madeus.errors import Diagnostic, Related, VerifyError
from madeus.model import ComponentType, ProvidePort, UsePort
from madeus.reconfig.machine import Blocked, Machine, Move, MoveKind, Problem
from madeus.reconfig.program import (
    Add,
    Connect,
    Disconnect,
    Program,
    Push,
    Remove,
    Wait,
    WaitAll,
)
from madeus.reconfig.state import Configuration, parts
from madeus.source import NO_SPAN, Span

Z3_TIMEOUT_MS = 120_000
WitnessKind = Literal["violation", "disconnect", "loop", "deadlock"]
# Steps of a counterexample given notes; a longer one keeps its first and last steps.
MAX_STEP_NOTES = 40


@dataclass(frozen=True, slots=True)
class Witness:
    """An interleaving (moves from the starting configuration) that ends in a problem."""

    kind: WitnessKind
    moves: tuple[Move, ...]
    problem: Problem | None = None  # violation, disconnect, loop
    blocked: tuple[Blocked, ...] = ()  # deadlock


@dataclass(frozen=True, slots=True)
class ProgramVerdict:
    events: int  # the bound: how many events an execution may have at most
    unsafe: Witness | None
    loop: Witness | None
    deadlock: Witness | None
    seconds: float = field(default=0.0, compare=False)
    # Each batch of a rolling change (`web#2`) -> its instance (`web`), as the encoding split
    # them.
    wholes: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def sound(self) -> bool:
        return self.unsafe is None and self.loop is None and self.deadlock is None

    @property
    def witnesses(self) -> tuple[Witness, ...]:
        return tuple(w for w in (self.unsafe, self.loop, self.deadlock) if w is not None)


Query = Literal["unsafe", "loop", "deadlock"]
ALL_QUERIES: tuple[Query, ...] = ("loop", "unsafe", "deadlock")


def check_program(
    configuration: Configuration,
    program: Program,
    *,
    queries: Iterable[Query] = ALL_QUERIES,
) -> ProgramVerdict:
    """Decide each query for `program` run from `configuration`. VerifyError when the
    configuration holds tokens in docks (an interrupted deployment)."""
    import z3

    started = time.perf_counter()
    docked = [i.name for i in configuration.instances if i.out_docks or i.in_docks]
    if docked:
        raise VerifyError(
            [
                Diagnostic(
                    "unfinished-deployment",
                    "cannot verify a program from an unfinished deployment: transitions of "
                    + ", ".join(f'"{n}"' for n in docked)
                    + " were interrupted or are still waiting (resume the deployment first)",
                )
            ]
        )
    enc = _Encoding(configuration, program)
    found: dict[str, Witness | None] = {"unsafe": None, "loop": None, "deadlock": None}
    solver = z3.Solver()
    solver.set("timeout", Z3_TIMEOUT_MS)
    solver.add(*enc.constraints())
    for query in queries:
        solver.push()
        solver.add(enc.query(query))
        answer = solver.check()
        if answer == z3.sat:
            found[query] = enc.witness(query, solver.model())
        elif answer != z3.unsat:  # only on a timeout
            raise VerifyError(
                [
                    Diagnostic(
                        "verifier-timeout",
                        f"z3 gave no answer in time ({query} query)" + _hint(enc),
                    )
                ]
            )
        solver.pop()
    return ProgramVerdict(
        len(enc.events),
        found["unsafe"],
        found["loop"],
        found["deadlock"],
        time.perf_counter() - started,
        dict(enc.whole),
    )


def _hint(enc: _Encoding) -> str:
    """What makes a program slow to verify, if it is a rolling change of many batches."""
    name, runs = max(enc.parts.items(), key=lambda item: len(item[1]))
    if len(runs) < 10:
        return ""
    return (
        f': "{name}" changes in {len(runs)} batches, and the cost grows with their square; '
        "fewer, larger batches (`serial 10%`) verify in seconds"
    )


def verify_program(configuration: Configuration, program: Program) -> list[Diagnostic]:
    """Every problem of `program` (loop, unsafe, deadlock), in the diagnostic format of docs/cli.md;
    [] when it terminates and keeps every port safe. The first diagnostic of a refused program
    ends with the `wait` that would make it verify, when one `wait` does (`propose_wait`)."""
    verdict = check_program(configuration, program)
    found = program_diagnostics(verdict, configuration, program)
    if found:
        proposal = propose_wait(configuration, program, verdict)
        if proposal is not None:
            first = found[0]
            found[0] = replace(first, related=(*first.related, proposal))
    return found


PROPOSALS = 30  # programs with one more `wait` verified at most, looking for one that verifies


def propose_wait(
    configuration: Configuration, program: Program, verdict: ProgramVerdict
) -> Related | None:
    """The missing `wait`, proposed only once verified: a `wait(x)` inserted before one
    instruction, x an instance the counterexamples name whose pushed behaviours may still
    run there, that makes the whole program verify. None when no such insertion does (among
    the first `PROPOSALS` tried, nearest the end first)."""
    involved: set[str] = set()
    for w in verdict.witnesses:
        if w.problem is not None:
            involved.add(w.problem.instance)
            if w.problem.provider:
                involved.add(w.problem.provider.split(".")[0])
        for b in w.blocked:
            involved.add(b.instance)
            if 0 <= b.push < len(program):
                ins = program[b.push]
                if isinstance(ins, Push | Wait | Remove):
                    involved.add(ins.instance)
    involved.discard("")
    involved = {verdict.wholes.get(name, name) for name in involved}  # a batch: its instance
    tries = 0
    for k in range(len(program) - 1, 0, -1):
        for x in sorted(involved):
            if not _pending(program, k, x):
                continue
            at = program[k]
            candidate = Program(
                (*program.instructions[:k], Wait(x, at.span), *program.instructions[k:]),
                program.source,
            )
            if check_program(configuration, candidate).sound:
                return Related(
                    f"proposed fix: wait({x!r}) before {at}: with it the program verifies",
                    at.span,
                )
            tries += 1
            if tries >= PROPOSALS:
                return None
    return None


def _pending(program: Program, k: int, instance: str) -> bool:
    """Whether a behaviour pushed on `instance` before instruction k may still run there (no
    `wait` on it, nor `wait_all()`, since its last push)."""
    for ins in reversed(program.instructions[:k]):
        if isinstance(ins, WaitAll) or (isinstance(ins, Wait) and ins.instance == instance):
            return False
        if isinstance(ins, Push) and ins.instance == instance:
            return True
    return False


# --- the encoding -------------------------------------------------------------------------

EventKey = tuple[Any, ...]  # ("X", j) | ("L"|"F"|"E"|"R", run, name) | ("D", run)
_KIND: dict[str, MoveKind] = {
    "X": "exec",
    "L": "leave",
    "F": "fire",
    "E": "end",
    "R": "reach",
    "D": "done",
}


@dataclass(frozen=True, slots=True)
class _Run:
    index: int
    instance: str  # the instance, or one batch of it (a rolling change)
    push: int  # instruction index
    behaviour: str
    previous: int  # the previous run of the instance, -1 if none
    component: ComponentType


class _Instance:
    def __init__(self, name: str, component: ComponentType, marking: frozenset[str]) -> None:
        self.name = name
        self.component = component
        self.marking = marking
        self.runs: list[int] = []
        self.added_at: int | None = None
        self.removed_at: int | None = None


class _Encoding:
    def __init__(self, configuration: Configuration, program: Program) -> None:
        import z3

        self.z3 = z3
        self.configuration = configuration
        self.program = program
        self.n = len(program)
        # `inst` holds every run of the rules: an instance, or each batch of an instance
        # changed `serial` (`parts`: instance -> its runs; `whole`: run -> instance).
        self.inst: dict[str, _Instance] = {}
        self.parts: dict[str, tuple[str, ...]] = {}
        self.whole: dict[str, str] = {}
        for i in configuration.instances:
            self._split(i.name, i.component, i.parts(), i.markings())
        self.runs: list[_Run] = []
        links: dict[tuple[str, str], tuple[str, str]] = {
            (user, lk.user_port): (lk.provider, lk.provider_port)
            for lk in configuration.links
            if lk.user in self.parts and lk.provider in self.parts
            for user in self.parts[lk.user]
        }
        links_at = [dict(links)]  # links_at[v]: after v instructions
        for j, ins in enumerate(program):
            if isinstance(ins, Add):
                component = configuration.components[ins.type]
                hosts = ins.placement(configuration.inventory)
                runs = parts(ins.instance, hosts, ins.serial)
                initial = frozenset(component.initial_places)
                for added in self._split(ins.instance, component, runs, (initial,) * len(runs)):
                    added.added_at = j
            elif isinstance(ins, Remove):
                for name in self.parts[ins.instance]:
                    self.inst[name].removed_at = j
            elif isinstance(ins, Push):
                for name in self.parts[ins.instance]:
                    inst = self.inst[name]
                    run = _Run(
                        len(self.runs),
                        name,
                        j,
                        ins.behaviour,
                        inst.runs[-1] if inst.runs else -1,
                        inst.component,
                    )
                    inst.runs.append(run.index)
                    self.runs.append(run)
            elif isinstance(ins, Connect):
                for name in self.parts[ins.user]:
                    links[(name, ins.user_port)] = (ins.provider, ins.provider_port)
            elif isinstance(ins, Disconnect):
                for name in self.parts[ins.user]:
                    links.pop((name, ins.user_port), None)
            links_at.append(dict(links))
        # (user, port) -> provider -> the pc values (instructions executed) it is connected at.
        self.link_pcs: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = {}
        for v, at in enumerate(links_at):
            for key, target in at.items():
                self.link_pcs.setdefault(key, {}).setdefault(target, []).append(v)
        self.users: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for key, targets in self.link_pcs.items():
            for target in targets:
                self.users.setdefault(target, set()).add(key)
        # The events, and what sets and clears each element of the configuration.
        self.events: dict[EventKey, tuple[Any, Any]] = {}
        self.setters: dict[tuple[str, str], list[tuple[EventKey | None, int]]] = {}
        self.clearers: dict[tuple[str, str], list[tuple[EventKey, int]]] = {}
        self.t_runs: dict[tuple[str, str], list[int]] = {}
        for j in range(self.n):
            self._event(("X", j))
        for inst in self.inst.values():
            for p in inst.marking:
                self.setters.setdefault((inst.name, p), []).append((None, -1))
        for run in self.runs:
            transitions = run.component.transitions_of(run.behaviour)
            for p in dict.fromkeys(t.source for t in transitions):
                leave: EventKey = ("L", run.index, p)
                self._event(leave)
                self.clearers.setdefault((run.instance, p), []).append((leave, run.index))
            for t in transitions:
                self._event(("F", run.index, t.name))
                self._event(("E", run.index, t.name))
                self.t_runs.setdefault((run.instance, t.name), []).append(run.index)
            for p in dict.fromkeys(t.target for t in transitions):
                reach: EventKey = ("R", run.index, p)
                self._event(reach)
                self.setters.setdefault((run.instance, p), []).append((reach, run.index))
            self._event(("D", run.index))
        # A batch's run of a rolling change: whether it started, and when (its first leave or
        # fire), for the rolling rule.
        self._rolling_at_end: dict[int, Any] = {}
        self.begun: dict[int, tuple[Any, Any]] = {}
        self.begun_constraints: dict[int, list[Any]] = {}
        for run in self.runs:
            if self._rolls(run):
                begun, first, defined = self._first(f"s{run.index}", self._starts(run))
                self.begun[run.index] = (begun, first)
                self.begun_constraints[run.index] = defined

    def _split(
        self,
        name: str,
        component: ComponentType,
        runs: tuple[tuple[str, tuple[str, ...]], ...],
        markings: tuple[frozenset[str], ...],
    ) -> list[_Instance]:
        made = [
            _Instance(run, component, marking)
            for (run, _), marking in zip(runs, markings, strict=True)
        ]
        for inst in made:
            self.inst[inst.name] = inst
            self.whole[inst.name] = name
        self.parts[name] = tuple(inst.name for inst in made)
        return made

    def _event(self, key: EventKey) -> None:
        z3 = self.z3
        label = "_".join(str(k) for k in key)
        self.events[key] = (z3.Bool(f"h_{label}"), z3.Int(f"t_{label}"))

    # --- formula helpers ----------------------------------------------------------------

    def _or(self, terms: Iterable[Any]) -> Any:
        z3 = self.z3
        kept = []
        for term in terms:
            if z3.is_true(term):
                return z3.BoolVal(True)
            if not z3.is_false(term):
                kept.append(term)
        if not kept:
            return z3.BoolVal(False)
        return kept[0] if len(kept) == 1 else z3.Or(kept)

    def _and(self, terms: Iterable[Any]) -> Any:
        z3 = self.z3
        kept = []
        for term in terms:
            if z3.is_false(term):
                return z3.BoolVal(False)
            if not z3.is_true(term):
                kept.append(term)
        if not kept:
            return z3.BoolVal(True)
        return kept[0] if len(kept) == 1 else z3.And(kept)

    def _not(self, term: Any) -> Any:
        z3 = self.z3
        if z3.is_true(term):
            return z3.BoolVal(False)
        if z3.is_false(term):
            return z3.BoolVal(True)
        return z3.Not(term)

    def h(self, key: EventKey) -> Any:
        return self.events[key][0]

    def t(self, key: EventKey) -> Any:
        return self.events[key][1]

    def before(self, key: EventKey, cut: Any) -> Any:
        """Event `key` happened before the cut (None: the end, every event that happens)."""
        h, t = self.events[key]
        return h if cut is None else self.z3.And(h, t < cut)

    def precedes(self, a: EventKey, b: EventKey) -> Any:
        """a happened, before b (b's time)."""
        h, t = self.events[a]
        return self.z3.And(h, t < self.events[b][1])

    # --- the configuration at a cut -------------------------------------------------------

    def marked(self, name: str, p: str, cut: Any) -> Any:
        """Place `name.p` holds a token at the cut: its last setting event (the start or a
        reach) before the cut has no leave after it."""
        terms = []
        clearers = self.clearers.get((name, p), [])
        for s, s_run in self.setters.get((name, p), []):
            since = self._b(True) if s is None else self.before(s, cut)
            undone = []
            for c, c_run in clearers:
                if c_run < s_run:
                    continue  # an earlier run: before the setting event
                if c_run > s_run or s is None:
                    undone.append(self.before(c, cut))
                else:  # the same run: which came first
                    undone.append(self.z3.And(self.before(c, cut), self.t(c) > self.t(s)))
            terms.append(self._and([since, self._not(self._or(undone))]))
        return self._or(terms)

    def _b(self, value: bool) -> Any:
        return self.z3.BoolVal(value)

    def out_dock(self, name: str, t: str, cut: Any) -> Any:
        source = self._transition(name, t).source
        return self._or(
            self._and(
                [self.before(("L", r, source), cut), self._not(self.before(("F", r, t), cut))]
            )
            for r in self.t_runs.get((name, t), [])
        )

    def running(self, name: str, t: str, cut: Any) -> Any:
        return self._or(
            self._and([self.before(("F", r, t), cut), self._not(self.before(("E", r, t), cut))])
            for r in self.t_runs.get((name, t), [])
        )

    def in_dock(self, name: str, t: str, cut: Any) -> Any:
        target = self._transition(name, t).target
        return self._or(
            self._and(
                [self.before(("E", r, t), cut), self._not(self.before(("R", r, target), cut))]
            )
            for r in self.t_runs.get((name, t), [])
        )

    def _transition(self, name: str, t: str) -> Any:
        found = self.inst[name].component.transition(t)
        assert found is not None
        return found

    def executed(self, v: int, cut: Any) -> Any:
        """At least v instructions executed at the cut."""
        return self._b(True) if v == 0 else self.before(("X", v - 1), cut)

    def pc_in(self, values: Sequence[int], cut: Any) -> Any:
        """The number of instructions executed at the cut is one of `values`."""
        if len(values) == self.n + 1:
            return self._b(True)
        ranges: list[tuple[int, int]] = []
        for v in sorted(values):
            if ranges and v == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], v)
            else:
                ranges.append((v, v))
        return self._or(
            self._and(
                [
                    self.executed(a, cut),
                    self._not(self.executed(b + 1, cut)) if b < self.n else self._b(True),
                ]
            )
            for a, b in ranges
        )

    def exists(self, name: str, cut: Any) -> Any:
        inst = self.inst[name]
        terms = []
        if inst.added_at is not None:
            terms.append(self.executed(inst.added_at + 1, cut))
        if inst.removed_at is not None:
            terms.append(self._not(self.executed(inst.removed_at + 1, cut)))
        return self._and(terms)

    def active(self, name: str, port: str, cut: Any) -> Any:
        """Provide port `name.port` of an instance is active: in one of its runs, at least
        (its batches, for an instance changed `serial`)."""
        return self._or(self._run_active(run, port, cut) for run in self.parts[name])

    def _run_active(self, name: str, port: str, cut: Any) -> Any:
        provide = self.inst[name].component.port(port)
        if not isinstance(provide, ProvidePort):
            return self._b(False)
        group = set(provide.places)
        terms = [self.marked(name, p, cut) for p in group]
        for t in self.inst[name].component.transitions:
            if t.source in group and t.target in group:
                terms.append(self.out_dock(name, t.name, cut))
                terms.append(self.running(name, t.name, cut))
                terms.append(self.in_dock(name, t.name, cut))
        return self._or(terms)

    def in_use(self, name: str, port: str, cut: Any) -> Any:
        use = self.inst[name].component.port(port)
        if not isinstance(use, UsePort):
            return self._b(False)
        terms = [self.marked(name, p, cut) for p in use.places]
        for t in use.transitions:
            terms.append(self.running(name, t, cut))
            terms.append(self.in_dock(name, t, cut))
        return self._or(terms)

    def about_to_use(self, name: str, port: str, cut: Any) -> Any:
        """A transition bound to the use port waits in its output dock."""
        use = self.inst[name].component.port(port)
        if not isinstance(use, UsePort):
            return self._b(False)
        return self._or(self.out_dock(name, t, cut) for t in use.transitions)

    def connected(self, user: str, port: str, target: tuple[str, str], cut: Any) -> Any:
        return self.pc_in(self.link_pcs.get((user, port), {}).get(target, []), cut)

    def provided(self, name: str, port: str, cut: Any) -> Any:
        targets = self.link_pcs.get((name, port), {})
        terms = [
            self._and([self.connected(name, port, target, cut), self.active(*target, cut)])
            for target in targets
        ]
        use = self.inst[name].component.port(port)
        if isinstance(use, UsePort) and use.optional:
            terms.append(self._not(self._or(self.connected(name, port, t, cut) for t in targets)))
        return self._or(terms)

    def violation(self, cut: Any) -> Any:
        terms = []
        for inst in self.inst.values():
            for use in inst.component.uses:
                in_use = self.in_use(inst.name, use.name, cut)
                if self.z3.is_false(in_use):
                    continue
                terms.append(
                    self._and(
                        [
                            self.exists(inst.name, cut),
                            in_use,
                            self._not(self.provided(inst.name, use.name, cut)),
                        ]
                    )
                )
        return self._or(terms)

    # --- the rules ----------------------------------------------------------------------

    def head(self, run: _Run, cut: Any) -> Any:
        """Run `run` is the running behaviour of its instance at the cut."""
        terms = [self.before(("X", run.push), cut)]
        if run.previous >= 0:
            terms.append(self.before(("D", run.previous), cut))
        terms.append(self._not(self.before(("D", run.index), cut)))
        return self._and(terms)

    def guard(self, key: EventKey, cut: Any, *, rolling: bool = True) -> Any:
        """The rule's condition for event `key` in the configuration at the cut (besides not
        having happened: the caller adds that where needed). `rolling=False` leaves the
        rolling rule out (`constraints` states it once per run, at the run's first event)."""
        kind = key[0]
        if kind == "X":
            j = key[1]
            ins = self.program[j]
            terms = [self.executed(j, cut)]
            if isinstance(ins, Wait | Remove):
                terms.extend(
                    self.before(("D", r), cut)
                    for name in self.parts[ins.instance]
                    for r in self.inst[name].runs
                    if self.runs[r].push < j
                )
            elif isinstance(ins, WaitAll):
                terms.extend(
                    self.before(("D", run.index), cut) for run in self.runs if run.push < j
                )
            return self._and(terms)
        run = self.runs[key[1]]
        name = run.instance
        component = run.component
        transitions = component.transitions_of(run.behaviour)
        terms = [self.head(run, cut)]
        if rolling and kind in ("L", "F", "D"):  # E and R come after an F
            terms.append(self._rolling(run, cut))
        if kind == "L":
            p = key[2]
            leaving = [t.name for t in transitions if t.source == p]
            terms.append(self.marked(name, p, cut))
            terms.append(self._safety(name, p, leaving, cut))
        elif kind == "F":
            t = component.transition(key[2])
            assert t is not None
            terms.append(self.before(("L", run.index, t.source), cut))
            for use in component.uses:
                if t.name in use.transitions:
                    terms.append(self.provided(name, use.name, cut))
        elif kind == "E":
            terms.append(self.before(("F", run.index, key[2]), cut))
        elif kind == "R":
            terms.extend(
                self.before(("E", run.index, t.name), cut)
                for t in transitions
                if t.target == key[2]
            )
        else:  # D: nothing left to do
            for t in transitions:
                left = self.before(("L", run.index, t.source), cut)
                fired = self.before(("F", run.index, t.name), cut)
                ended = self.before(("E", run.index, t.name), cut)
                reached = self.before(("R", run.index, t.target), cut)
                terms.append(self.z3.Implies(left, fired))
                terms.append(self.z3.Implies(fired, ended))
                terms.append(self.z3.Implies(ended, reached))
            for p in dict.fromkeys(t.source for t in transitions):
                terms.append(self._not(self.marked(name, p, cut)))
        return self._and(terms)

    def _rolls(self, run: _Run) -> bool:
        """Whether the run is a batch's (its instance changes `serial`, in several batches)."""
        return len(self.parts[self.whole[run.instance]]) > 1

    def _starts(self, run: _Run) -> list[EventKey]:
        """The events that start a run: its leaves and fires."""
        transitions = run.component.transitions_of(run.behaviour)
        return [
            *(("L", run.index, p) for p in dict.fromkeys(t.source for t in transitions)),
            *(("F", run.index, t.name) for t in transitions),
        ]

    def _first(self, label: str, keys: Sequence[EventKey]) -> tuple[Any, Any, list[Any]]:
        """(a Boolean: one of `keys` happens, the time of the first that does, the constraints
        that define both)."""
        z3 = self.z3
        any_, first = z3.Bool(f"any_{label}"), z3.Int(f"first_{label}")
        found = [any_ == self._or(self.h(k) for k in keys)]
        found += [z3.Implies(self.h(k), first <= self.t(k)) for k in keys]
        found.append(
            z3.Implies(any_, self._or(self._and([self.h(k), first == self.t(k)]) for k in keys))
        )
        return any_, first, found

    def started(self, run: _Run, cut: Any) -> Any:
        """Run `run` left a place or fired a transition before the cut."""
        begun, first = self.begun[run.index]
        return begun if cut is None else self._and([begun, first < cut])

    def _rolling(self, run: _Run, cut: Any) -> Any:
        """The rolling rule, for a batch: it starts a behaviour once every batch before it
        has nothing queued (each run pushed is done) and no other batch is in the middle of
        one (started, not done); once started, it goes on."""
        if not self._rolls(run):
            return self._b(True)
        if cut is None:  # the deadlock query asks it of every event of the run: once
            found = self._rolling_at_end.get(run.index)
            if found is None:
                found = self._rolling_at_end[run.index] = self._or(
                    [self.started(run, None), self._may_start(run, None)]
                )
            return found
        return self._or([self.started(run, cut), self._may_start(run, cut)])

    def _may_start(self, run: _Run, cut: Any) -> Any:
        batches = self.parts[self.whole[run.instance]]
        terms = []
        before = True
        for name in batches:
            if name == run.instance:
                before = False
                continue
            for r in self.inst[name].runs:
                other = self.runs[r]
                done = self.before(("D", r), cut)
                terms.append(self._not(self._and([self.started(other, cut), self._not(done)])))
                if before:
                    pushed = self.before(("X", other.push), cut)
                    terms.append(self.z3.Implies(pushed, done))
        return self._and(terms)

    def _safety(self, name: str, place: str, leaving: Sequence[str], cut: Any) -> Any:
        component = self.inst[name].component
        terms = []
        for port in component.provides:
            group = set(port.places)
            if place not in group:
                continue
            internal = [
                t.name for t in component.transitions if t.source in group and t.target in group
            ]
            if any(t in internal for t in leaving):
                continue  # the token stays in the group
            still = [self.marked(name, q, cut) for q in group if q != place]
            for t in internal:
                still.extend(
                    [
                        self.out_dock(name, t, cut),
                        self.running(name, t, cut),
                        self.in_dock(name, t, cut),
                    ]
                )
            whole = self.whole[name]
            still.extend(  # another batch provides it
                self._run_active(other, port.name, cut)
                for other in self.parts[whole]
                if other != name
            )
            users = [
                self._not(
                    self._and(
                        [
                            self.connected(user, user_port, (whole, port.name), cut),
                            self._or(
                                [
                                    self.in_use(user, user_port, cut),
                                    self.about_to_use(user, user_port, cut),
                                ]
                            ),
                        ]
                    )
                )
                for user, user_port in sorted(self.users.get((whole, port.name), ()))
            ]

            if users:
                terms.append(self._or([self._or(still), self._and(users)]))
        return self._and(terms)

    def constraints(self) -> list[Any]:
        """The events that happen form an interleaving of the rules."""
        z3 = self.z3
        found: list[Any] = []
        times = [t for _, t in self.events.values()]
        if len(times) > 1:
            found.append(z3.Distinct(times))
        for key, (h, t) in self.events.items():
            found.append(t >= 0)
            found.append(z3.Implies(h, self.guard(key, t, rolling=False)))
        # The rolling rule matters until a run starts, so it is stated once per run, at its
        # first event (a leave, fire or done): the same as in each guard, once instead of once
        # per event of the run.
        firsts: dict[int, tuple[Any, Any]] = {}
        for run in self.runs:
            if not self._rolls(run):
                continue
            found += self.begun_constraints[run.index]
            any_, first, defined = self._first(
                f"r{run.index}", [*self._starts(run), ("D", run.index)]
            )
            found += defined
            found.append(z3.Implies(any_, self._may_start(run, first)))
            firsts[run.index] = (any_, first)
        # Implied by the rule, stated for z3's sake: the batches of one push run in order.
        for run in self.runs:
            batches = self.parts[self.whole[run.instance]]
            k = batches.index(run.instance)
            if k == 0 or run.index not in firsts:
                continue
            before = next(
                r for r in self.inst[batches[k - 1]].runs if self.runs[r].push == run.push
            )
            any_, first = firsts[run.index]
            done = ("D", before)
            found.append(z3.Implies(any_, z3.And(self.h(done), self.t(done) < first)))
            if key[0] != "X" and key[0] != "D":
                # A run's events all happen before its done.
                done = ("D", key[1])
                found.append(z3.Implies(z3.And(h, self.h(done)), t < self.t(done)))
        return found

    # --- queries -----------------------------------------------------------------------------

    def loops(self) -> list[Any]:
        """A run that left a place and then reached it again."""
        z3 = self.z3
        terms = []
        for run in self.runs:
            transitions = run.component.transitions_of(run.behaviour)
            sources = {t.source for t in transitions}
            for p in dict.fromkeys(t.target for t in transitions):
                if p in sources:
                    left, reached = ("L", run.index, p), ("R", run.index, p)
                    terms.append(
                        z3.And(self.h(left), self.h(reached), self.t(left) < self.t(reached))
                    )
        return terms

    def disconnects(self) -> list[Any]:
        terms = []
        for j, ins in enumerate(self.program):
            if isinstance(ins, Disconnect):
                key = ("X", j)
                in_use = self._or(
                    self.in_use(name, ins.user_port, self.t(key)) for name in self.parts[ins.user]
                )
                terms.append(self._and([self.h(key), in_use]))
        return terms

    def query(self, which: Query) -> Any:
        z3 = self.z3
        if which == "loop":
            return self._or(self.loops())
        no_loop = self._not(self._or(self.loops()))
        if which == "unsafe":
            self.cut = z3.Int("cut")
            bad = self._or([self.violation(self.cut), *self.disconnects()])
            return self._and([no_loop, bad])
        stuck = []
        for key, (h, _) in self.events.items():
            stuck.append(self._not(self._and([self._not(h), self.guard(key, None)])))
        unfinished = [self._not(self.h(("D", run.index))) for run in self.runs]
        if self.n:
            unfinished.append(self._not(self.h(("X", self.n - 1))))
        return self._and([no_loop, *stuck, self._or(unfinished)])

    # --- witnesses ---------------------------------------------------------------------------

    def witness(self, which: Query, model: Any) -> Witness:
        """The model's interleaving (the events that happen, by time), replayed in the
        machine, which stops at the first problem."""
        z3 = self.z3
        happened = []
        for key, (h, t) in self.events.items():
            if z3.is_true(model.eval(h, model_completion=True)):
                happened.append((model.eval(t, model_completion=True).as_long(), key))
        happened.sort()
        moves = [self._move(key) for _, key in happened]
        return replay(self.configuration, self.program, moves, which)

    def _move(self, key: EventKey) -> Move:
        kind = _KIND[key[0]]
        if kind == "exec":
            return Move("exec", index=key[1])
        run = self.runs[key[1]]
        name = run.behaviour if kind == "done" else key[2]
        return Move(kind, run.instance, name, run.push if kind == "done" else -1)


def replay(
    configuration: Configuration, program: Program, moves: Sequence[Move], which: Query
) -> Witness:
    """Play `moves` in the state machine (each must be enabled) and name the problem reached.
    VerifyError when a move is not enabled: the encoding and the machine disagree."""
    machine = Machine(configuration, program)
    played: list[Move] = []
    problem: Problem | None = None
    if which == "unsafe":
        found = machine.violations()
        problem = found[0] if found else None
    elif which == "loop":
        problem = machine.fatal
    for move in moves if problem is None else ():
        enabled = machine.moves()
        match = next((e for e in enabled if _same(e, move)), None)
        if match is None:
            raise VerifyError(
                [
                    Diagnostic(
                        "verifier-bug",
                        f"internal error: the counterexample's move "
                        f"{move} is not enabled after {len(played)} moves",
                    )
                ]
            )
        new = machine.apply(match)
        played.append(match)
        if which == "unsafe":
            disconnect = [p for p in new if p.kind == "disconnect"]
            found = disconnect or machine.violations()
            if found:
                problem = found[0]
                break
        elif which == "loop" and machine.fatal is not None:
            problem = machine.fatal
            break
    if problem is None and which != "deadlock":
        # The problem is the next move: a disconnect of a use port in use, or a loop.
        for move in machine.moves():
            trial = machine.copy()
            new = trial.apply(move)
            hit = (
                trial.fatal
                if which == "loop"
                else next((p for p in new if p.kind == "disconnect"), None)
            )
            if hit is not None:
                machine.apply(move)
                played.append(move)
                problem = hit
                break
    if which == "deadlock":
        if machine.moves() or machine.finished:
            raise VerifyError(
                [Diagnostic("verifier-bug", "internal error: the deadlock does not replay")]
            )
        return Witness("deadlock", tuple(played), None, tuple(machine.blocked()))
    if problem is None:
        raise VerifyError(
            [Diagnostic("verifier-bug", f"internal error: the {which} witness does not replay")]
        )
    kind: WitnessKind = (
        "loop"
        if which == "loop"
        else ("disconnect" if problem.kind == "disconnect" else "violation")
    )
    return Witness(kind, tuple(played), problem)


def _same(a: Move, b: Move) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "exec":
        return a.index == b.index
    return a.instance == b.instance and a.name == b.name


# --- diagnostics ----------------------------------------------------------------------------


def program_diagnostics(
    verdict: ProgramVerdict, configuration: Configuration, program: Program
) -> list[Diagnostic]:
    return [_diagnostic(w, configuration, program) for w in verdict.witnesses]


def _q(name: str) -> str:
    return f'"{name}"'


def _diagnostic(w: Witness, configuration: Configuration, program: Program) -> Diagnostic:
    from madeus.verify.explain import Locator

    locator = Locator()
    steps, blame = _steps(w, configuration, program, locator)
    if w.kind == "deadlock":
        first = w.blocked[0] if w.blocked else Blocked("", "nothing can move")
        message = f"the program can block: {first.message}"
        if 0 <= first.push < len(program):
            blame = program[first.push].span  # the push of what blocks, or the instruction
        related = [*steps]
        for b in w.blocked:
            span = locator.find(b.span, "transition", b.transition) if b.transition else b.span
            related.append(Related(f"blocked: {b.message}", span))
        return Diagnostic("program-deadlock", message, blame, related=tuple(related))
    assert w.problem is not None
    if w.kind == "loop":
        message = f"the program may not terminate: {w.problem.describe()}"
        return Diagnostic("program-loop", message, blame, related=tuple(steps))
    message = f"unsafe program: {w.problem.describe()}"
    return Diagnostic("port-safety", message, blame, related=tuple(steps))


def _steps(
    w: Witness, configuration: Configuration, program: Program, locator: Any
) -> tuple[list[Related], Span]:
    """The interleaving as notes, numbered (instructions, transitions starting and ending,
    behaviours ending; the places left and reached between them are implied), and the span
    to blame: the instruction of the last move, or the push of the behaviour that made it."""
    machine = Machine(configuration, program)
    notes: list[Related] = []
    blame = program[0].span if len(program) else NO_SPAN
    for position, move in enumerate(w.moves, 1):
        last = position == len(w.moves)
        if move.kind == "exec":
            ins = program[move.index]
            notes.append(Related(f"step {len(notes) + 1}: {ins}", ins.span))
            blame = ins.span
        else:
            push = machine.push_index(move.instance)
            if push >= 0:
                blame = program[push].span
            text, span = _move_text(machine, program, move, locator)
            if move.kind in ("fire", "end", "done") or last:
                notes.append(Related(f"step {len(notes) + 1}: {text}", span))
        machine.apply(move)
    if len(notes) > MAX_STEP_NOTES:
        head = notes[:10]
        tail = notes[-(MAX_STEP_NOTES - 11) :]
        skipped = len(notes) - len(head) - len(tail)
        notes = [*head, Related(f"... {skipped} more steps ...", tail[0].span), *tail]
    if w.kind == "violation" and not w.moves and w.problem is not None:
        link = configuration.provider_of(w.problem.instance, w.problem.port)
        notes.append(
            Related(
                "in the starting configuration already", link.span if link is not None else NO_SPAN
            )
        )
    return notes, blame


def _move_text(machine: Machine, program: Program, move: Move, locator: Any) -> tuple[str, Span]:
    run = machine.runs.get(move.instance)
    b = machine.behaviour_of(move.instance) or "?"
    tid = f"{move.instance}.{move.name}"
    if run is None:
        return str(move), NO_SPAN
    component = run.ix.component
    if move.kind in ("fire", "end"):
        t = run.ix.transition[move.name]
        span = locator.find(t.span, "transition", t.name)
        verb = "starts" if move.kind == "fire" else "ends"
        return f"{_q(tid)} {verb} (behaviour {_q(t.behaviour)})", span
    if move.kind == "done":
        push = machine.push_index(move.instance)
        span = program[push].span if push >= 0 else NO_SPAN
        return f"{_q(move.instance)} ends behaviour {_q(move.name)}", span
    place = component.place(move.name)
    span = place.span if place is not None else NO_SPAN
    if move.kind == "leave":
        return f"{_q(move.instance)} leaves place {_q(move.name)} (behaviour {_q(b)})", span
    return f"{_q(move.instance)} reaches place {_q(move.name)} (behaviour {_q(b)})", span
