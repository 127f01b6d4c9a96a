"""An explicit-state explorer of the Concerto rules: every interleaving of a reconfiguration
program, breadth-first, on small models (the reference `behaviours.py`'s z3 verdicts are tested
against: docs/semantics.md, section 8).

It drives the same state machine as the executor (`madeus.reconfig.machine`): from the starting
configuration, every enabled move (an instruction, a leave, fire, end, reach or done of an
instance) is tried in every configuration, configurations are identified by `Machine.key()`,
and the first (so shortest) path to each kind of problem is kept:
- *unsafe*: a configuration where a use port is in use while not provided, or a `disconnect`
  of a use port in use;
- *loop*: a behaviour leaving a place towards a transition already fired in the same run (the
  configuration is not explored further);
- *deadlock*: a configuration with no move that has not finished the program.
The z3 encoding shares none of this: it encodes the rules on its own, and agreement of the two
on hundreds of generated programs is what the tests check.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from madeus.errors import Diagnostic, VerifyError
from madeus.reconfig.machine import Machine, Move, Problem
from madeus.reconfig.program import Program
from madeus.reconfig.state import Configuration
from madeus.verify.oracle import path_to

DEFAULT_MAX_STATES = 200_000


class OracleLimit(VerifyError):
    """The state space is larger than the limit given."""


@dataclass(frozen=True, slots=True)
class ProgramOracleResult:
    states: int
    unsafe: tuple[Move, ...] | None  # moves to the first unsafe configuration (or move)
    unsafe_problem: Problem | None
    loop: tuple[Move, ...] | None
    deadlock: tuple[Move, ...] | None
    finished: bool  # some execution finishes the program

    @property
    def sound(self) -> bool:
        return self.unsafe is None and self.loop is None and self.deadlock is None


def explore_program(
    configuration: Configuration, program: Program, max_states: int = DEFAULT_MAX_STATES
) -> ProgramOracleResult:
    """Explore every interleaving; raise OracleLimit past `max_states` configurations."""
    start = Machine(configuration, program)
    parent: dict[object, tuple[object, Move] | None] = {start.key(): None}
    queue: deque[Machine] = deque([start])
    unsafe: tuple[Move, ...] | None = None
    unsafe_problem: Problem | None = None
    loop: tuple[Move, ...] | None = None
    deadlock: tuple[Move, ...] | None = None
    finished = False
    initial = start.violations()
    if initial:
        unsafe, unsafe_problem = (), initial[0]
    while queue:
        machine = queue.popleft()
        key = machine.key()
        moves = machine.moves()
        if not moves:
            if machine.finished:
                finished = True
            elif deadlock is None:
                deadlock = path_to(parent, key)
            continue
        for move in moves:
            after = machine.copy()
            problems = after.apply(move)
            if after.fatal is not None:
                if loop is None:
                    loop = (*path_to(parent, key), move)
                continue
            if unsafe is None:
                found = [p for p in problems if p.kind == "disconnect"] or after.violations()
                if found:
                    unsafe, unsafe_problem = (*path_to(parent, key), move), found[0]
            new = after.key()
            if new in parent:
                continue
            if len(parent) >= max_states:
                raise OracleLimit(
                    [Diagnostic("oracle-limit", f"more than {max_states} configurations")]
                )
            parent[new] = (key, move)
            queue.append(after)
    return ProgramOracleResult(len(parent), unsafe, unsafe_problem, loop, deadlock, finished)
