"""`madeus deploy FILE [-i INVENTORY]`: run the deployment, every transition as soon as it may.

Without `-i` everything runs on this machine. `--simulate` replaces each action by a sleep of its
declared duration times `--time-scale` (`--simulate=remote`: the sleep runs on the real hosts,
over SSH). Logs, the plan used and the trace go to `.madeus/runs/<run-id>/`; the journal (what
started and ended, durably) to `.madeus/state/<key>/`, locked for the run, which `--resume`
continues. Progress is drawn from the engine's events only: a live table on a terminal, one
plain line per start and end otherwise. Exit 0 when every transition succeeded, 1 on a failure
(the failed transition, its host, exit status and the tail of its stderr are printed), 130 when
interrupted (SIGINT or SIGTERM: running transitions are cancelled; a second signal exits at
once).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from madeus.cli._common import (
    EXIT_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
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
from madeus.engine.events import Event, RunEnded, RunStarted, TransitionEnded, TransitionStarted

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from madeus.cli.plan import Compared
    from madeus.engine.errors import DeployError
    from madeus.engine.journal import Journal
    from madeus.plan import Plan
    from madeus.trace import Trace

# Above this many jobs a terminal shows only failures line by line (the live table still shows
# what runs): printing 100,000 lines would cost more than the deployment.
_LINES_LIMIT = 500


def add_parser(subparsers: Any) -> None:
    deploy: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="run a deployment (or simulate it); with a state of record, the change",
        description="Run every transition of the assembly as soon as its dependencies allow, "
        "locally, over SSH or through Ansible. Logs, the plan and the trace of each run go to "
        ".madeus/runs/<run-id>/. When the deployment has a state of record and the files "
        "changed, run the change as `madeus apply` does (--redeploy: everything again).",
    )
    add_options(deploy)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of `deploy` and `apply` (one verb: apply is deploy with a state)."""
    parser.add_argument("file", metavar="FILE", help="the .mad file holding the assembly")
    add_inventory_arg(parser)
    add_state_arg(parser)
    parser.add_argument(
        "--redeploy",
        action="store_true",
        help="run the whole deployment again even when its state of record says nothing changed",
    )
    add_habit_args(parser)
    add_simulate_args(parser)
    parser.add_argument("--trace", metavar="OUT.json", help="also write the trace to OUT.json")
    parser.add_argument("--gantt", metavar="OUT.svg|OUT.html", help="draw a Gantt chart of the run")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="deploy even without the z3 verification",
    )
    add_ssh_args(parser)
    parser.add_argument(
        "--agents",
        action="store_true",
        help="run each site's part on an agent started on one of its hosts, over the SSH "
        "connection (also on when a host of the inventory sets madeus_agent: true; "
        "docs/agents.md)",
    )
    policy = add_failure_args(parser)
    policy.add_argument(
        "--resume",
        action="store_true",
        help="continue from the journal of the last run of this assembly and inventory: what "
        "ended is skipped; what was running runs again if idempotent",
    )
    policy.add_argument(
        "--assume-done",
        action="append",
        default=[],
        metavar="ID[@HOST]",
        help="with --resume: take this transition (on HOST, else on all its hosts) as done "
        "(repeatable)",
    )
    policy.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="ID[@HOST]",
        help="with --resume: run this transition again, even if it was running or ended "
        "(repeatable)",
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    import asyncio

    from madeus.cli.check import find_verifier, load_existing
    from madeus.engine import DeployError, deploy
    from madeus.engine.journal import open_journal
    from madeus.engine.runlog import DEFAULT_RUNS, new_run_id
    from madeus.errors import BackendError
    from madeus.plan import build_plan

    refused = check_run_args(args, "deploy")
    if refused is not None:
        return refused
    gantt = Path(args.gantt) if args.gantt else None
    if (args.assume_done or args.rerun) and not args.resume:
        option = "--assume-done" if args.assume_done else "--rerun"
        print(f"madeus deploy: error: {option} only applies with --resume", file=sys.stderr)
        return 2
    loaded = load_existing(args.file, args, limited=True)
    deployment = loaded.deployment
    # With a state of record, `apply` (and `deploy` when the files changed) runs the change.
    # A rehearsal (--simulate) or a run with injected failures is asked for its own sake.
    whole = args.resume or args.redeploy
    asked = whole or args.check or args.simulate or args.inject_failure
    if (args.verb == "apply" and not whole) or not asked:
        from madeus.cli.plan import compare

        change = compare(args, loaded)
        if change.record is not None:
            if not change.changes and change.record.complete:
                _nothing_to_do(change)
                return EXIT_OK
            from madeus.cli.apply import apply_change

            return apply_change(args, loaded, change)
    # Verify before planning: on a deadlock the verifier names the waiting cycle, where the
    # plan could only say which transitions never start.
    if not args.no_verify:
        verify = find_verifier()
        if verify is not None:
            diagnostics = list(verify(deployment))
            if any(d.severity == "error" for d in diagnostics):
                report(diagnostics)
                print(
                    "madeus: error: refusing to deploy an assembly that does not verify "
                    "(--no-verify to deploy anyway)",
                    file=sys.stderr,
                )
                return EXIT_ERRORS
    plan = build_plan(deployment)
    scale = time_scale(args)
    run_id = new_run_id()
    run_dir = DEFAULT_RUNS / run_id  # created by the engine once the run can start
    # The journal's lock keeps two runs of this assembly and inventory apart; an unwritable
    # journal stops everything here, before anything runs. A check run records nothing.
    journal = (
        None
        if args.check
        else open_journal(
            args.file,
            loaded.inventory_key,
            simulate=bool(args.simulate),
            base=state_base(args, loaded, simulate=bool(args.simulate)),
        )
    )
    with journal if journal is not None else contextlib.nullcontext():
        if journal is not None:
            _note_journal(journal, args.resume)
        progress = make_progress(
            sys.stdout,
            plan.predicted_makespan * scale,
            len(plan.transitions),
            quiet=args.quiet,
            check=args.check,
        )
        failure: DeployError | None = None
        code = EXIT_OK
        try:
            with progress:
                try:
                    interrupted = asyncio.run(
                        _interruptible(
                            deploy(
                                deployment,
                                run_options_of(args),
                                plan=plan,
                                on_event=progress.on_event,
                                run_dir=run_dir,
                                journal=journal,
                                resume=args.resume,
                                assume_done=args.assume_done,
                                rerun=args.rerun,
                                run_id=run_id,
                            ),
                            journal.flush if journal is not None else _nothing,
                        )
                    )
                    if interrupted:
                        code = EXIT_INTERRUPTED
                except DeployError as error:
                    failure = error
                    code = EXIT_ERRORS
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except BackendError as error:  # a backend missing, a host unreachable: nothing ran
            for diagnostic in error.diagnostics:
                fail(diagnostic.message)
            return EXIT_ERRORS
    ended = progress.ended
    if ended is None:  # interrupted before the engine started: nothing ran
        print("interrupted", file=sys.stderr)
        return code
    trace = ended.trace
    try:
        _write_outputs(trace, plan, args.trace, gantt, scale)
    except OSError as error:
        fail(f"cannot write {error.filename}: {error.strerror}")
        code = code or EXIT_ERRORS
    _print_summary(
        trace, plan, scale, bool(args.simulate), run_dir, args.trace, gantt, check=args.check
    )
    # The failure last: it is what the operator must read.
    if failure is not None:
        _print_failure(failure, run_dir)
        _print_not_started(trace, plan)
    if code == EXIT_INTERRUPTED:
        print("interrupted: running transitions were cancelled", file=sys.stderr)
    if code != EXIT_OK and journal is not None:
        print(
            f"the journal keeps what ended: `madeus deploy {args.file}"
            f"{inventory_words(args)}"
            f"{' --simulate' if args.simulate else ''} --resume` continues",
            file=sys.stderr,
        )
    return code


def _nothing() -> None:
    return None


def _nothing_to_do(change: Compared) -> None:
    record = change.record
    assert record is not None
    print(
        f"No changes: the deployment matches its state of record ({change.where}, updated "
        f"{record.updated_at}); nothing to do (--redeploy runs it all again)"
    )


async def _interruptible(work: Coroutine[Any, Any, object], force: Callable[[], None]) -> bool:
    """Run `work`; the first SIGINT or SIGTERM cancels it (the engine kills what runs and
    records it), the second exits at once (status 130) after `force` (the journal's flush).
    True when a signal interrupted it."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        if len(received) == 1:
            print(
                f"\nmadeus: {name}: cancelling the running transitions "
                "(send it again to exit at once)",
                file=sys.stderr,
                flush=True,
            )
            task.cancel()
            return
        print(f"\nmadeus: {name} again: exiting now", file=sys.stderr, flush=True)
        try:
            force()
        finally:
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            continue
        installed.append(sig)
    try:
        await work
    except asyncio.CancelledError:
        if not received:
            raise
        return True
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return False


def _note_journal(journal: Journal, resume: bool) -> None:
    """Tell the operator what happens to the journal of the previous run."""
    last = journal.last_stop()
    if resume and last is None:
        print(
            f"note: nothing to resume in {journal.directory}: deploying from the start",
            file=sys.stderr,
        )
    elif not resume and last is not None and last != "ok":
        print(
            f"note: the previous run did not finish ({last}); its journal moves to "
            f"{journal.directory / 'history'}/ (--resume would have continued it)",
            file=sys.stderr,
        )


def _print_not_started(trace: Trace, plan: Plan) -> None:
    ran = {(e.id, e.host) for e in trace.events}
    waiting = [t.id for t in plan.transitions if any((t.id, h) not in ran for h in t.hosts)]
    if waiting:
        shown = ", ".join(waiting[:5]) + (
            f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        )
        print(f"not started: {len(waiting)} transitions ({shown})", file=sys.stderr)


def _write_outputs(
    trace: Trace, plan: Plan, trace_path: str | None, gantt: Path | None, scale: float
) -> None:
    from madeus.viz.gantt import write_gantt

    if trace_path:
        trace.write(trace_path)
    if gantt is not None:
        write_gantt(gantt, trace, plan, time_scale=scale)


def _print_failure(error: DeployError, run_dir: Path) -> None:
    from madeus.engine.runlog import log_stem

    err = sys.stderr
    for failure in error.failures:
        print(f"madeus: error: {failure.describe()}", file=err)
        if failure.stderr_tail:
            print("stderr (last lines):", file=err)
            for line in failure.stderr_tail.splitlines():
                print(f"  {line}", file=err)
        log = run_dir / f"{log_stem(failure.transition, failure.host)}.err"
        if log.exists():
            print(f"log: {log}", file=err)


def _print_summary(
    trace: Trace,
    plan: Plan,
    scale: float,
    simulated: bool,
    run_dir: Path,
    trace_path: str | None,
    gantt: Path | None,
    *,
    check: bool = False,
) -> None:
    predicted = plan.predicted_makespan * scale
    done = sum(1 for e in trace.events if e.status == "ok")
    skipped = sum(1 for e in trace.events if e.status == "skipped")
    jobs = sum(len(t.hosts) for t in plan.transitions)
    what = "stopped" if done + skipped < jobs else "simulated" if simulated else "deployed"
    before = f" ({skipped} skipped: done in an earlier run)" if skipped else ""
    if check:
        # What ran was a rehearsal: its times say nothing of a real run.
        print(
            f"checked {trace.assembly}: {done}/{jobs} jobs "
            f"{'would run' if what != 'stopped' else 'checked before it stopped'}"
            " (nothing changed, nothing recorded)"
        )
    else:
        print(f"{what} {trace.assembly}: {done + skipped}/{jobs} jobs ok{before}")
        scaled = f" ({plan.predicted_makespan:.3f} s x {scale:g})" if simulated else ""
        ratio = f"{trace.makespan / predicted:.3f}" if predicted > 0 else "n/a"
        print(f"makespan:  {trace.makespan:.3f} s")
        print(f"predicted: {predicted:.3f} s{scaled}, ratio {ratio}")
    print(f"logs:      {run_dir}/")
    traces = [str(run_dir / "trace.json"), *([trace_path] if trace_path else [])]
    print(f"trace:     {', '.join(traces)}")
    if gantt is not None:
        print(f"gantt:     {gantt}")


# --- progress -----------------------------------------------------------------------------


class Progress:
    """Renders engine events. Subclasses draw; this keeps the last RunEnded (the trace)."""

    def __init__(self) -> None:
        self.ended: RunEnded | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_event(self, event: Event) -> None:
        if type(event) is RunEnded:
            self.ended = event
        self.handle(event)

    def handle(self, event: Event) -> None:
        raise NotImplementedError


class PlainProgress(Progress):
    """`[  1.234s] start mariadb.pull @ control-1` and `[  3.456s] ok    mariadb.pull @
    control-1 (2.222s)`: one line per start and end, for logs and pipes. `quiet`: only the
    ends that did not succeed; `check`: each end followed by what the action would do."""

    def __init__(self, out: TextIO, *, quiet: bool = False, check: bool = False) -> None:
        super().__init__()
        self._out = out
        self._quiet = quiet
        self._check = check

    def handle(self, event: Event) -> None:
        if self._quiet and not (type(event) is TransitionEnded and _failed(event)):
            return
        if isinstance(event, TransitionStarted):
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self._out.write(f"[{event.time:7.3f}s] start {event.id} @ {event.host}{retry}\n")
        elif isinstance(event, TransitionEnded):
            took = event.end - event.start
            extra = ""
            if event.exit_status is not None and event.status != "ok":
                extra = f", exit status {event.exit_status}"
            if not event.final:
                extra += ", will retry"
            self._out.write(
                f"[{event.end:7.3f}s] {event.status:<5} {event.id} @ {event.host} "
                f"({took:.3f}s{extra})\n"
            )
            if self._check and event.status == "ok" and event.message:
                self._out.write(_indented(event.message))


def _failed(event: TransitionEnded) -> bool:
    return event.status not in ("ok", "skipped")


def _indented(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


class LiveProgress(Progress):
    """A rich live display: what runs now (with elapsed times), done/total, elapsed against
    predicted, failures. Rich redraws from its own thread; the lock keeps it from reading the
    state while an event updates it."""

    def __init__(
        self,
        console: Console,
        predicted: float,
        transitions: int,
        *,
        quiet: bool = False,
        check: bool = False,
    ) -> None:
        super().__init__()
        from rich.live import Live

        self._console = console
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], float] = {}  # (id, host) -> monotonic start
        self._predicted = predicted
        self._jobs = transitions
        self._done = 0
        self._failed: list[str] = []
        self._t0 = time.monotonic()
        self._assembly = ""
        self._quiet = self._always_quiet = quiet
        self._check = check
        self._live = Live(self, console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def handle(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self._t0 = time.monotonic()
                self._jobs = event.jobs
                self._assembly = event.assembly
                self._quiet = (
                    self._always_quiet or event.jobs > _LINES_LIMIT or event.skipped > _LINES_LIMIT
                )
            elif isinstance(event, TransitionStarted):
                self._running[(event.id, event.host)] = time.monotonic()
            elif isinstance(event, TransitionEnded):
                self._running.pop((event.id, event.host), None)
                if event.final:
                    self._done += 1
                if event.status != "ok" and event.final:
                    self._failed.append(f"{event.id} @ {event.host} ({event.status})")
        if isinstance(event, TransitionEnded) and (not self._quiet or _failed(event)):
            style = {"ok": "green", "cancelled": "yellow", "skipped": "dim"}.get(
                event.status, "red"
            )
            took = event.end - event.start
            self._console.print(
                f"[dim]\\[{event.end:7.3f}s][/dim] [{style}]{event.status:<9}[/{style}] "
                f"{event.id} @ {event.host} [dim]({took:.3f}s)[/dim]",
                highlight=False,
            )
            if self._check and event.status == "ok" and event.message:
                self._console.print(_indented(event.message), end="", markup=False, highlight=False)

    def __rich__(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = time.monotonic()
            running = sorted(self._running.items(), key=lambda kv: kv[1])
            done, jobs, failed = self._done, self._jobs, list(self._failed)
        elapsed = now - self._t0
        head = Text.assemble(
            (f"{self._assembly} ", "bold"),
            f"{done}/{jobs} done, {len(running)} running, ",
            f"{elapsed:.1f} s elapsed / {self._predicted:.1f} s predicted",
        )
        if failed:
            head.append(f", {len(failed)} failed", style="bold red")
        table = Table(show_header=False, box=None, padding=(0, 1))
        for (tid, host), started in running[:15]:
            table.add_row(
                Text("●", style="cyan"),
                tid,
                Text(f"@ {host}", style="dim"),
                f"{now - started:6.1f}s",
            )
        if len(running) > 15:
            table.add_row("", f"... and {len(running) - 15} more", "", "")
        return Group(head, table)


def make_progress(
    out: TextIO, predicted: float, transitions: int, *, quiet: bool = False, check: bool = False
) -> Progress:
    if out.isatty():
        from rich.console import Console

        return LiveProgress(Console(file=out), predicted, transitions, quiet=quiet, check=check)
    return PlainProgress(out, quiet=quiet, check=check)
