"""`madeus apply FILE [-i INVENTORY] ...`: run the change `madeus plan` shows.

With no state of record (nothing deployed yet) apply is a deploy. Otherwise FILE and the
inventory are compared with the state (`madeus.state.changes`), the reconfiguration program
that makes the change is synthesised from the lifecycles (`madeus.reconfig.synthesis`),
verified (termination, port safety) and run like a hand-written program (`madeus
reconfigure`): same journal, same state of record written at the end. `madeus deploy` does the
same when a state exists and the files changed (`--redeploy` runs the whole deployment again).
Re-applying an unchanged deployment runs nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from madeus.cli._common import Loaded

if TYPE_CHECKING:
    from madeus.cli.plan import Compared
    from madeus.engine.journal import Journal, JournalState
    from madeus.errors import Diagnostic
    from madeus.reconfig.predict import Prediction
    from madeus.reconfig.program import Program
    from madeus.reconfig.state import Configuration
    from madeus.reconfig.synthesis import Synthesis
    from madeus.resolve import Deployment
    from madeus.state import Record


@dataclass(frozen=True, slots=True)
class Change:
    """A synthesised change: the program, its verdict and its prediction."""

    synthesis: Synthesis
    diagnostics: tuple[Diagnostic, ...]
    prediction: Prediction | None

    @property
    def configuration(self) -> Configuration:
        return self.synthesis.configuration

    @property
    def program(self) -> Program:
        return self.synthesis.program

    def render(self) -> str:
        """The program, its notes and (when it verifies) the predicted schedule."""
        from madeus.cli.plan import render_text

        lines = ["program (synthesised from the lifecycles; verified before it runs):"]
        lines += [f"  {ins}" for ins in self.program]
        if self.synthesis.notes:
            lines += ["", "notes:", *(f"  {note}" for note in self.synthesis.notes)]
        text = "\n".join(lines) + "\n\n"
        if self.prediction is not None:
            text += render_text(self.prediction.to_plan())
        return text


def synthesised(record: Record, loaded: Loaded, *, partial: bool) -> Change:
    """Synthesise the change from `record` to the files, verify it and predict it."""
    from madeus.reconfig.predict import ReconfigBlocked, predict
    from madeus.reconfig.synthesis import synthesise
    from madeus.verify.behaviours import verify_program

    synthesis = synthesise(record, loaded.deployment, partial=partial)
    diagnostics = tuple(verify_program(synthesis.configuration, synthesis.program))
    prediction = None
    if not diagnostics:
        try:
            prediction = predict(synthesis.configuration, synthesis.program)
        except ReconfigBlocked:  # the verifier said it finishes: kept for safety's sake
            prediction = None
    return Change(synthesis, diagnostics, prediction)


def add_parser(subparsers: Any) -> None:
    from madeus.cli.deploy import add_options

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "apply",
        help="run the change `madeus plan` shows (nothing deployed yet: deploy)",
        description="Compare the files and the inventory with the state of record, synthesise "
        "the reconfiguration program that makes the change (added instances deploy, removed "
        "ones uninstall, changed parameters run their `on change of` behaviours, users pause "
        "where the port rules require it), verify it, and run it. With no state yet: deploy. "
        "Same options as deploy.",
    )
    add_options(parser)


def cut_off(state: JournalState, deployment: Deployment) -> list[Diagnostic]:
    """The transitions the last run left cut off (running, cancelled, connection lost) that
    are not safe to run again: a change would run them again without asking, so they are
    settled first by `deploy --resume` (with --assume-done or --rerun), as a resume would."""
    from madeus.errors import Diagnostic

    last = state.last_run
    if last is None:
        return []
    components = {i.name: i.component for i in deployment.instances}
    found = []
    for tid, host in sorted(state.running):
        record = state.jobs.get((tid, host))
        if record is None or record.run != last.id:
            continue
        instance, _, name = tid.rpartition(".")
        component = components.get(instance)
        transition = component.transition(name) if component is not None else None
        if transition is None or transition.safe_to_rerun:
            continue
        found.append(
            Diagnostic(
                "apply-unsettled",
                f'transition "{tid}" was cut off on host "{host}" when run {last.id} stopped '
                "and is not declared idempotent: a change would run it again; settle it first "
                f"with `madeus deploy --resume` (--assume-done {tid}@{host} if it completed, "
                f"--rerun {tid}@{host} to run it again)",
                transition.span,
            )
        )
    return found


def apply_change(args: argparse.Namespace, loaded: Loaded, compared: Compared) -> int:
    """Run the change from the state of record to the files (`compared`: what `plan` found,
    read again once the journal is locked)."""
    from madeus.cli.reconfigure import run_program
    from madeus.errors import MadeusError
    from madeus.state import recorded

    verb = "apply"

    def start(
        loaded: Loaded, journal: Journal | None
    ) -> tuple[Configuration, Program, Prediction | None] | None:
        record = compared.record
        if journal is not None:
            record = recorded(loaded.deployment, journal.directory) or record
            if not args.simulate:
                cut = cut_off(journal.state(), loaded.deployment)
                if cut:
                    raise MadeusError(cut)
        assert record is not None
        print(compared.render(), end="")
        change = synthesised(record, loaded, partial=compared.partial)
        print(change.render(), end="")
        if change.diagnostics:
            print(
                "madeus: error: the synthesised program does not verify: nothing runs "
                "(the notes above and the diagnostics below say why)",
                file=sys.stderr,
            )
            raise MadeusError(list(change.diagnostics))
        if not change.synthesis:
            print("Nothing to run.")
            return None
        return change.configuration, change.program, change.prediction  # verified

    return run_program(args, args.file, None, verb, start=start, loaded=loaded)
