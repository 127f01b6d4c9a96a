"""`madeus reconfigure FILE SCRIPT.py [-i INVENTORY] [--simulate[=local|remote]] ...`: run a
reconfiguration program, verified first.

FILE is loaded and resolved; the current configuration comes from the journal of FILE and the
inventory (the journal of simulated runs with `--simulate`): the markings a reconfiguration
recorded last, else where the ended deploy transitions leave the tokens (`--assume-deployed`
starts from a complete deployment instead). SCRIPT.py defines `reconfigure(r)`, which writes
the program with the builder `r` (`r.state` is that configuration). The program is verified
(termination and port safety, z3) and refused with the interleaving that breaks it (exit 1), or
run: every transition through the same backends as `madeus deploy`. The journal then holds each
instance's new marking. Exit 0 on success, 1 on errors (all reported), 2 on a usage error, 130
when interrupted.

`madeus plan FILE --reconfigure SCRIPT.py` (`run_plan` here) predicts the program's makespan and
critical path; `madeus destroy` (destroy.py) runs a program derived from the behaviours.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madeus.cli._common import (
    EXIT_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Loaded,
    add_failure_args,
    add_habit_args,
    add_inventory_arg,
    add_simulate_args,
    add_ssh_args,
    add_state_arg,
    check_run_args,
    fail,
    inventory_words,
    report,
    reports_errors,
    run_options_of,
    state_base,
    time_scale,
)
from madeus.errors import Diagnostic

if TYPE_CHECKING:
    from collections.abc import Callable

    from madeus.engine.journal import Journal
    from madeus.reconfig.predict import Prediction
    from madeus.reconfig.program import Program
    from madeus.reconfig.state import Configuration
    from madeus.trace import Trace

    # What gives `apply` its configuration and program, once the journal is locked, and the
    # program's prediction: it was verified then (None: nothing to run).
    Start = Callable[
        [Loaded, Journal | None], tuple[Configuration, Program, Prediction | None] | None
    ]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options `reconfigure` and `destroy` share."""
    add_inventory_arg(parser)
    add_state_arg(parser)
    add_habit_args(parser)
    add_simulate_args(parser, ". Reads and writes the journal of simulated runs")
    parser.add_argument("--trace", metavar="OUT.json", help="also write the trace to OUT.json")
    parser.add_argument("--gantt", metavar="OUT.svg|OUT.html", help="draw a Gantt chart of the run")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="run the program even without verifying it (termination, port safety)",
    )
    parser.add_argument(
        "--assume-deployed",
        action="store_true",
        help="start from a complete deployment instead of what the journal says",
    )
    add_ssh_args(parser)
    add_failure_args(parser)


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reconfigure",
        help="run a verified reconfiguration program (behaviours, connections)",
        description="Load FILE and the current configuration (the journal), run SCRIPT.py's "
        "reconfigure(r) to build the program, verify it (termination, port safety; an unsafe "
        "program is refused with the interleaving that breaks it), run it, and record the new "
        "configuration in the journal.",
    )
    parser.add_argument("file", metavar="FILE", help="the .mad file of the assembly")
    parser.add_argument("script", metavar="SCRIPT.py", help="defines reconfigure(r): the program")
    add_run_options(parser)
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    script = args.script
    return run_program(args, args.file, lambda s: _script_program(script, s), "reconfigure")


def _script_program(script: str, state: Configuration) -> Program:
    from madeus.reconfig.script import load_program

    return load_program(script, state)


@dataclass(slots=True)
class _Outputs:
    trace: str | None
    gantt: Path | None


def run_program(
    args: argparse.Namespace,
    file: str,
    build: Any,
    verb: str,
    *,
    start: Start | None = None,
    loaded: Loaded | None = None,
) -> int:
    """Load FILE and the configuration, build the program (`build(configuration)`), verify,
    predict, run, record. Shared by `reconfigure`, `destroy` and `apply`. `start(loaded,
    journal)`, if given, gives both the configuration and the program once the journal is
    locked (None: nothing to run)."""
    from madeus.cli.check import load_existing
    from madeus.engine.journal import JournalError

    refused = check_run_args(args, verb)
    if refused is not None:
        return refused
    gantt = Path(args.gantt) if args.gantt else None
    if loaded is None:
        loaded = load_existing(file, args)
    outputs = _Outputs(args.trace, gantt)
    try:
        from madeus.reconfig.state import open_state_journal

        simulate = bool(args.simulate)
        journal: Journal | None = open_state_journal(
            file,
            loaded.inventory_key,
            simulate=simulate,
            base=state_base(args, loaded, simulate=simulate),
        )
    except ImportError:  # pragma: no cover - a build without the journal
        journal = None
    except JournalError:
        raise
    if journal is None:
        return _run_locked(args, file, loaded, build, verb, None, outputs, start)
    with journal:
        return _run_locked(args, file, loaded, build, verb, journal, outputs, start)


def current_configuration(
    args: argparse.Namespace, file: str, loaded: Loaded, journal: Journal | None, verb: str
) -> Configuration | None:
    """The configuration to start from; None after printing why there is none."""
    from madeus.reconfig.state import deployed, journal_configuration

    deployment = loaded.deployment
    if getattr(args, "assume_deployed", False):
        return deployed(deployment)
    if journal is None:
        print("note: no journal: starting from a complete deployment", file=sys.stderr)
        return deployed(deployment)
    state = journal_configuration(deployment, journal)
    if state is None:
        simulate = " --simulate" if args.simulate else ""
        inventory = inventory_words(args)
        fail(
            f"the journal of {file}{' (simulated runs)' if args.simulate else ''} records no "
            f"deployment: deploy it first (`madeus deploy {file}{inventory}{simulate}`), or "
            "pass --assume-deployed"
        )
        return None
    return state


def _run_locked(
    args: argparse.Namespace,
    file: str,
    loaded: Loaded,
    build: Any,
    verb: str,
    journal: Journal | None,
    outputs: _Outputs,
    start: Start | None = None,
) -> int:
    import asyncio

    from madeus.engine.runlog import DEFAULT_RUNS, new_run_id
    from madeus.errors import BackendError
    from madeus.reconfig.executor import ReconfigError, reconfigure
    from madeus.reconfig.predict import ReconfigBlocked, predict
    from madeus.reconfig.state import Recorder

    verified = False
    prediction: Prediction | None = None
    if start is not None:
        begun = start(loaded, journal)
        if begun is None:
            return EXIT_OK
        state, program, prediction = begun
        verified = True
    else:
        found = current_configuration(args, file, loaded, journal, verb)
        if found is None:
            return EXIT_ERRORS
        state, program = found, build(found)
    if args.limit:
        from madeus.reconfig.programs import outside_limit

        outside = outside_limit(state, program, args.limit)
        if outside:
            report(outside)
            return EXIT_ERRORS
    if not args.no_verify and not verified:
        from madeus.verify.behaviours import verify_program

        diagnostics = verify_program(state, program)
        if diagnostics:
            report(diagnostics)
            print(
                "madeus: error: refusing to run a program that does not verify "
                "(--no-verify to run it anyway)",
                file=sys.stderr,
            )
            return EXIT_ERRORS
    if prediction is None:
        try:
            prediction = predict(state, program)
        except ReconfigBlocked:  # only an unverified program gets here
            prediction = None
    if prediction is not None:
        report(idle_warnings(prediction, state, program))
    scale = time_scale(args)
    run_dir = DEFAULT_RUNS / new_run_id()
    from madeus.cli.deploy import make_progress

    predicted = prediction.makespan * scale if prediction is not None else 0.0
    steps = len(prediction.steps) if prediction is not None else 0
    progress = make_progress(sys.stdout, predicted, steps, quiet=args.quiet, check=args.check)
    failure: ReconfigError | None = None
    code = EXIT_OK
    try:
        with progress:
            try:
                result = asyncio.run(
                    reconfigure(
                        state,
                        program,
                        run_options_of(args),
                        on_event=progress.on_event,
                        run_dir=run_dir,
                        prediction=prediction,
                        recorder=(
                            Recorder(journal) if journal is not None and not args.check else None
                        ),
                    )
                )
                for problem in result.problems:  # only an unverified program gets these
                    print(f"warning: {problem.describe()}", file=sys.stderr)
            except ReconfigError as error:
                failure = error
                code = EXIT_ERRORS
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BackendError as error:
        return fail(str(error))
    ended = progress.ended
    if ended is None:
        print("interrupted", file=sys.stderr)
        return code
    trace = ended.trace
    try:
        write_outputs(trace, prediction, outputs.trace, outputs.gantt, scale)
    except OSError as error:
        fail(f"cannot write {error.filename}: {error.strerror}")
        code = code or EXIT_ERRORS
    print_summary(
        verb, trace, prediction, scale, bool(args.simulate), run_dir, outputs, check=args.check
    )
    if failure is not None:
        report(failure.diagnostics)
    if code == EXIT_OK:
        from madeus.reconfig.check import check_trace

        broken = check_trace(state, trace, program, tolerance=max(0.05 * scale, 0.005))
        for text in broken:
            print(f"warning: the trace breaks the rules: {text}", file=sys.stderr)
    if code == EXIT_INTERRUPTED:
        print("interrupted: running transitions were cancelled", file=sys.stderr)
    if journal is not None and not args.check:
        print(f"journal:   {journal.directory}/")
    return code


def idle_warnings(
    prediction: Prediction, state: Configuration, program: Program
) -> list[Diagnostic]:
    """A push whose behaviour runs no transition from where the instance is (a likely
    mistake: `update` pushed on a running service whose `update` starts from `stopped`)."""
    from madeus.reconfig.program import Push

    found = []
    for index in prediction.idle_pushes:
        ins = program[index]
        assert isinstance(ins, Push)
        where = ""
        if state.has(ins.instance):
            places = ", ".join(sorted(state.marking(ins.instance))) or "nowhere"
            where = f" (it starts in {places})"
        found.append(
            Diagnostic(
                "idle-push",
                f'{ins} runs no transition: no transition of behaviour "{ins.behaviour}" '
                f'can leave where "{ins.instance}" is then{where}',
                ins.span,
                severity="warning",
            )
        )
    return found


def write_outputs(
    trace: Trace,
    prediction: Prediction | None,
    trace_path: str | None,
    gantt: Path | None,
    scale: float,
) -> None:
    from madeus.viz.gantt import write_gantt

    if trace_path:
        trace.write(trace_path)
    if gantt is not None:
        plan = prediction.to_plan() if prediction is not None else None
        write_gantt(gantt, trace, plan, time_scale=scale)


def print_summary(
    verb: str,
    trace: Trace,
    prediction: Prediction | None,
    scale: float,
    simulated: bool,
    run_dir: Path,
    outputs: _Outputs,
    *,
    check: bool = False,
) -> None:
    done = sum(1 for e in trace.events if e.status == "ok")
    what = {"reconfigure": "reconfigured", "destroy": "destroyed", "apply": "applied"}.get(
        verb, verb
    )
    if simulated:
        what += " (simulated)"
    if check:
        print(
            f"checked {verb} of {trace.assembly}: {done}/{len(trace.events)} jobs would run "
            "(nothing changed, nothing recorded)"
        )
    else:
        print(f"{what} {trace.assembly}: {done}/{len(trace.events)} jobs ok")
        print(f"makespan:  {trace.makespan:.3f} s")
    if prediction is not None and not check:
        predicted = prediction.makespan * scale
        scaled = f" ({prediction.makespan:.3f} s x {scale:g})" if simulated else ""
        ratio = f"{trace.makespan / predicted:.3f}" if predicted > 0 else "n/a"
        print(f"predicted: {predicted:.3f} s{scaled}, ratio {ratio}")
    print(f"logs:      {run_dir}/")
    traces = [str(run_dir / "trace.json"), *([outputs.trace] if outputs.trace else [])]
    print(f"trace:     {', '.join(traces)}")
    if outputs.gantt is not None:
        print(f"gantt:     {outputs.gantt}")


# --- madeus plan FILE --reconfigure SCRIPT.py ---------------------------------------------------


def run_plan(args: argparse.Namespace) -> int:
    """`madeus plan FILE --reconfigure SCRIPT.py`: the program's predicted schedule, makespan
    and critical path, from the configuration the journal records (else from a complete
    deployment). Errors are raised (the plan verb reports them)."""
    import json

    from madeus.cli.check import load_existing
    from madeus.cli.plan import render_text
    from madeus.reconfig.predict import predict
    from madeus.reconfig.script import load_program
    from madeus.reconfig.state import deployed, read_configuration

    loaded = load_existing(args.file, args)
    state = None  # with --limit: the program is checked against it, below
    try:
        state = read_configuration(
            loaded.deployment, args.file, loaded.inventory_key, base=state_base(args, loaded)
        )
    except ImportError:  # pragma: no cover - a build without the journal
        state = None
    origin = "the journal"
    if state is None:
        state = deployed(loaded.deployment)
        origin = "a complete deployment (the journal records none)"
    program = load_program(args.reconfigure, state)
    if args.limit:
        from madeus.errors import MadeusError
        from madeus.reconfig.programs import outside_limit

        outside = outside_limit(state, program, args.limit)
        if outside:
            raise MadeusError(outside)
    prediction = predict(state, program)
    report(idle_warnings(prediction, state, program))
    if args.format == "json":
        text = json.dumps(prediction.to_json(), indent=2) + "\n"
    else:
        plan = prediction.to_plan()
        text = f"program {args.reconfigure}, from {origin}\n\n" + render_text(plan)
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    with open(args.output, "w", encoding="utf-8") as out:
        out.write(text)
    return EXIT_OK
