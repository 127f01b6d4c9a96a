"""Reconfiguration: behaviours, provide groups and programs (the Concerto rules, docs/semantics.md).

    from madeus.reconfig import ProgramBuilder, deployed, predict, reconfigure_sync
    state = deployed(deployment)                       # or from the journal
    r = ProgramBuilder(state)
    r.push("keystone", "stop").push("mariadb", "stop").wait_all()
    program = r.build()                                # data: print it, verify it, run it
    from madeus.verify.behaviours import verify_program
    assert verify_program(state, program) == []        # termination and port safety (z3)
    print(predict(state, program).makespan)
    result = reconfigure_sync(state, program, simulate=True, time_scale=0.01)

Modules: `program.py` (instructions, the builder), `state.py` (configurations, the journal),
`machine.py` (the rules, as a state machine), `executor.py` (running it), `predict.py`
(makespan and critical path), `check.py` (checking a trace against the safety rule),
`script.py` (running a `reconfigure(r)` script), `programs.py` (programs derived from the
behaviours: `destroy`). See docs/reconfiguration.md.
"""

from madeus.reconfig.check import check_trace
from madeus.reconfig.executor import (
    ReconfigError,
    ReconfigResult,
    reconfigure,
    reconfigure_sync,
)
from madeus.reconfig.machine import Blocked, Machine, Move, Problem
from madeus.reconfig.predict import PredictedStep, Prediction, ReconfigBlocked, predict
from madeus.reconfig.program import (
    Add,
    Connect,
    Disconnect,
    Instruction,
    Program,
    ProgramBuilder,
    ProgramError,
    Push,
    Remove,
    Wait,
    WaitAll,
)
from madeus.reconfig.programs import destroy_program
from madeus.reconfig.script import load_program
from madeus.reconfig.state import (
    Configuration,
    InstanceState,
    deployed,
    final_places,
    from_journal,
    initial,
)

__all__ = [
    "Add",
    "Blocked",
    "Configuration",
    "Connect",
    "Disconnect",
    "InstanceState",
    "Instruction",
    "Machine",
    "Move",
    "PredictedStep",
    "Prediction",
    "Problem",
    "Program",
    "ProgramBuilder",
    "ProgramError",
    "Push",
    "ReconfigBlocked",
    "ReconfigError",
    "ReconfigResult",
    "Remove",
    "Wait",
    "WaitAll",
    "check_trace",
    "deployed",
    "destroy_program",
    "final_places",
    "from_journal",
    "initial",
    "load_program",
    "predict",
    "reconfigure",
    "reconfigure_sync",
]
