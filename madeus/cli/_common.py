"""What every verb shares: loading an assembly with its inventory, and reporting errors."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from madeus.errors import Diagnostic, MadeusError, SourceCache, render_all
from madeus.inventory import Inventory
from madeus.model import Module
from madeus.resolve import Deployment

if TYPE_CHECKING:
    from madeus.backends.router import Habits
    from madeus.engine.options import RunOptions

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Verb = Callable[[argparse.Namespace], int]

SIMULATE_MODES = ("local", "remote")


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    module: Module
    deployment: Deployment

    @property
    def inventory_key(self) -> tuple[str, ...] | None:
        """The inventory's sources (what a journal belongs to); None for this machine."""
        inventory = self.deployment.inventory
        return None if inventory.local else inventory.sources


def add_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the .mad file holding the assembly")


def add_inventory_arg(parser: argparse.ArgumentParser) -> None:
    """The inventory options, as `ansible-inventory` and `ansible-playbook` take them."""
    group = parser.add_argument_group(
        "inventory (read by Ansible: whatever ansible-inventory accepts)"
    )
    group.add_argument(
        "-i",
        "--inventory",
        action="append",
        default=[],
        metavar="INVENTORY",
        help="an inventory source: a file (INI, YAML, JSON), a directory, a plugin "
        "configuration, or a host list (h1,h2,); repeatable. Default: $ANSIBLE_INVENTORY, "
        "else everything runs on this machine",
    )
    group.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="VARS",
        help="extra variables, as key=value, YAML/JSON or @FILE; repeatable",
    )
    group.add_argument(
        "--vault-id", action="append", default=[], metavar="ID", help="a vault identity"
    )
    group.add_argument(
        "--vault-password-file",
        "--vault-pass-file",
        action="append",
        default=[],
        dest="vault_password_files",
        metavar="FILE",
        help="a vault password file",
    )
    group.add_argument(
        "-J",
        "--ask-vault-password",
        "--ask-vault-pass",
        action="store_true",
        dest="ask_vault_pass",
        help="ask for the vault password",
    )


def load_inventory_of(
    args: argparse.Namespace, patterns: list[str] | None = None
) -> Inventory | None:
    """The inventory the options name: the `-i` sources, else $ANSIBLE_INVENTORY's; None
    when there is none (everything runs on this machine). `patterns`: host patterns to match
    while Ansible reads it."""
    import os

    from madeus.inventory import InventoryOptions, load_inventory, local_inventory

    password = None
    if args.ask_vault_pass:  # asked once here, answered to every Ansible process
        import getpass

        password = getpass.getpass("Vault password: ")
    options = InventoryOptions(
        vault_ids=tuple(args.vault_id),
        vault_password_files=tuple(args.vault_password_files),
        extra_vars=tuple(args.extra_vars),
        vault_password=password,
    )
    sources: list[str] | None = list(args.inventory)
    if not sources:
        if not os.environ.get("ANSIBLE_INVENTORY"):
            return local_inventory(options) if options.extra_vars else None
        sources = None  # Ansible's own default: ANSIBLE_INVENTORY
    return load_inventory(sources, options, patterns or ())


def inventory_words(args: argparse.Namespace) -> str:
    """The `-i` (and `-l`) options again, for the commands madeus suggests."""
    import shlex

    words = "".join(f" -i {shlex.quote(source)}" for source in args.inventory)
    limit = getattr(args, "limit", None)
    return words + (f" -l {shlex.quote(limit)}" if limit else "")


def add_habit_args(parser: argparse.ArgumentParser, *, runs: bool = True) -> None:
    """Ansible's command-line habits, as `ansible-playbook` spells them (`-e` and the vault
    options come with the inventory's). `runs`: the options of a verb that runs actions
    (all of them); else `-l` and `-v` alone (plan)."""
    group = parser.add_argument_group("as ansible-playbook")
    group.add_argument(
        "-l",
        "--limit",
        metavar="PATTERN",
        help="only the hosts this Ansible host pattern matches (web:&db, all:!storage...), "
        "with what they need",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="verbosity",
        help="say more (-vv: debugging)" + ("; Ansible actions get the same -v" if runs else ""),
    )
    if not runs:
        return
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only failures and the summary, not each start and end",
    )
    group.add_argument(
        "--check",
        action="store_true",
        help="change nothing: Ansible actions run in check mode, other actions are printed, "
        "not run; nothing is recorded as done",
    )
    group.add_argument(
        "--diff",
        action="store_true",
        help="Ansible actions show what they change (with --check: what they would change)",
    )
    parser.add_argument(
        "--max-parallel",
        type=positive_int,
        metavar="N",
        help="at most N jobs (transition x host) at once; hosts may set their own limit "
        "with the inventory variable madeus_max_parallel",
    )
    group.add_argument(
        "-f",
        "--forks",
        type=positive_int,
        dest="max_parallel",
        metavar="N",
        help="at most N jobs at once (the same as --max-parallel)",
    )
    group.add_argument(
        "-u",
        "--user",
        dest="remote_user",
        metavar="USER",
        help="connect as USER where the inventory does not say (ansible_user)",
    )
    group.add_argument(
        "--private-key",
        "--key-file",
        dest="private_key",
        metavar="FILE",
        help="the SSH private key where the inventory does not say (ansible_ssh_private_key_file)",
    )
    group.add_argument(
        "-b",
        "--become",
        action="store_true",
        help="run actions as root (sudo) where the inventory does not say (ansible_become)",
    )


def habits_of(args: argparse.Namespace) -> Habits:
    """The habits the options ask for, as backends apply them."""
    from madeus.backends.router import Habits

    return Habits(
        check=args.check,
        diff=args.diff,
        remote_user=args.remote_user,
        private_key=args.private_key,
        become=args.become,
        verbosity=args.verbosity,
    )


def set_verbosity(verbosity: int) -> None:
    """`-v`: madeus's own notes on what it does (INFO); `-vv`: debugging (DEBUG). On the
    `madeus` logger only: the libraries' loggers stay quiet."""
    import logging

    logger = logging.getLogger("madeus")
    for handler in [h for h in logger.handlers if getattr(h, "madeus_cli", False)]:
        logger.removeHandler(handler)
    logger.propagate = verbosity <= 0  # said once, here, not again by a root handler
    if verbosity <= 0:
        logger.setLevel(logging.NOTSET)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.madeus_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("madeus: %(levelname)s: %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


# The verbs whose `--simulate` takes an optional mode (`status --simulate` is a plain flag).
SIMULATE_VERBS = ("deploy", "reconfigure", "destroy")


def normalise_simulate(argv: list[str]) -> list[str]:
    """`--simulate` takes an optional mode. A bare `--simulate` followed by anything but a mode
    (FILE, another option) is `--simulate=local`, so argparse never takes FILE for the mode."""
    out = list(argv)
    at = verb_index(out)
    if at >= len(out) or out[at] not in SIMULATE_VERBS:
        return out
    for i, word in enumerate(out):
        if word == "--":
            break
        if word == "--simulate" and (i + 1 == len(out) or out[i + 1] not in SIMULATE_MODES):
            out[i] = "--simulate=local"
    return out


def verb_index(argv: list[str]) -> int:
    """Where the verb is (or should be): the first word after the global options."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "-W" else 1
    return i


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _simulate_mode(text: str) -> str:
    if text not in SIMULATE_MODES:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r} (choose local or remote)")
    return text


def add_simulate_args(parser: argparse.ArgumentParser, journal_note: str = "") -> None:
    """`--simulate[=local|remote]` and `--time-scale X`, as `deploy`, `reconfigure` and
    `destroy` share them."""
    parser.add_argument(
        "--simulate",
        nargs="?",
        const="local",
        type=_simulate_mode,
        metavar="local|remote",
        help="replace every action by a sleep of its declared duration times --time-scale; "
        f"`remote` sleeps on the real hosts over SSH (default: local){journal_note}",
    )
    parser.add_argument(
        "--time-scale",
        type=non_negative_float,
        metavar="X",
        help="with --simulate: multiply simulated durations by X (default 1; 0 runs them all "
        "at once)",
    )


def time_scale(args: argparse.Namespace) -> float:
    """The scale of simulated durations: 1 for real runs."""
    if not args.simulate or args.time_scale is None:
        return 1.0
    scale: float = args.time_scale
    return scale


def check_run_args(args: argparse.Namespace, verb: str) -> int | None:
    """What the options of a verb that runs (deploy, reconfigure, destroy) can only reveal
    together, checked before anything runs: None when all is well, else the exit status after
    saying why."""
    if args.time_scale is not None and not args.simulate:
        print(
            f"madeus {verb}: error: --time-scale only applies with --simulate (a real run "
            "takes the time it takes)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if getattr(args, "check", False) and (args.simulate or getattr(args, "resume", False)):
        other = "--simulate" if args.simulate else "--resume"
        print(
            f"madeus {verb}: error: --check does not go with {other} (a check run only "
            "shows what a real run would do)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.gantt and Path(args.gantt).suffix.lower() not in (".svg", ".html", ".htm"):
        print(f"madeus {verb}: error: --gantt takes a .svg or .html file", file=sys.stderr)
        return EXIT_USAGE
    for option, path in (("--trace", args.trace), ("--gantt", args.gantt)):
        problem = unwritable(path) if path else None
        if problem is not None:
            return fail(f"cannot write {option} {path}: {problem} (nothing ran)")
    return None


def unwritable(path: str) -> str | None:
    """Why `path` cannot be written, found by trying (a file created for the test is removed
    again); None when it can."""
    target = Path(path)
    existed = target.exists()
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        target.unlink(missing_ok=True)
    return None


def add_ssh_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--known-hosts",
        metavar="FILE",
        help="check SSH host keys against FILE (default: known_hosts beside the inventory, "
        "else ~/.ssh/known_hosts)",
    )
    parser.add_argument(
        "--insecure-no-host-key-check",
        action="store_true",
        help="accept any SSH host key (dangerous: only for throw-away hosts)",
    )
    parser.add_argument(
        "--ssh-keepalive-interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="send an SSH keepalive after SECONDS of silence (default: the inventory's "
        "madeus_ssh_keepalive_interval, else 5)",
    )
    parser.add_argument(
        "--ssh-keepalive-count-max",
        type=positive_int,
        metavar="N",
        help="declare a host lost after N unanswered keepalives (default: the inventory's "
        "madeus_ssh_keepalive_count_max, else 3)",
    )


def add_failure_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What happens on a failure, and rehearsing one: deploy, apply, reconfigure, destroy."""
    parser.add_argument(
        "--scheduling",
        choices=("critical-path", "fifo"),
        default="critical-path",
        help="when a limit binds, start first the job with the longest remaining path "
        "(default), or in order of readiness (fifo: a diagnostic aid, to compare)",
    )
    parser.add_argument(
        "--let-running-finish",
        action="store_true",
        help="after a failure, let running transitions finish instead of cancelling them",
    )
    policy = parser.add_argument_group("failures, resuming and rehearsals")
    policy.add_argument(
        "--keep-going",
        action="store_true",
        help="after a failure, still run everything that does not depend on it; report every "
        "failure at the end (exit 1)",
    )
    policy.add_argument(
        "--retry-backoff",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="before retrying a failed attempt (`retries N`), wait SECONDS x 2^(attempt-1), "
        "at most 60 s, with jitter (default 0: retry at once)",
    )
    policy.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        metavar="ID[@HOST]",
        help="make this transition fail without running it, to rehearse failures and "
        "resumes (repeatable; meant for --simulate)",
    )
    return policy


def run_options_of(args: argparse.Namespace) -> RunOptions:
    """The options of a run, once, from the command line of a verb that runs."""
    from madeus.engine.options import RunOptions

    return RunOptions(
        simulate=args.simulate or False,
        time_scale=time_scale(args),
        max_parallel=args.max_parallel,
        scheduling=args.scheduling,
        let_running_finish=args.let_running_finish,
        keep_going=args.keep_going,
        retry_backoff=args.retry_backoff,
        inject_failures=tuple(args.inject_failure),
        known_hosts=args.known_hosts,
        insecure_no_host_key_check=args.insecure_no_host_key_check,
        ssh_keepalive_interval=args.ssh_keepalive_interval,
        ssh_keepalive_count_max=args.ssh_keepalive_count_max,
        habits=habits_of(args),
        agents=getattr(args, "agents", False),
    )


def _positive_seconds(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0: {text!r}")
    return value


def add_state_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="where the states of record are kept (default: $MADEUS_STATE, else .madeus/state "
        "beside the assembly file)",
    )


def state_base(args: argparse.Namespace, loaded: Loaded, *, simulate: bool = False) -> Path:
    """The base directory of FILE's state (`madeus.state.locate`), whatever the working
    directory."""
    from madeus.state import locate

    override = getattr(args, "state", None)
    return locate(args.file, loaded.inventory_key, override=override, simulate=simulate)


def load(file: str, args: argparse.Namespace | None = None, *, limited: bool = False) -> Loaded:
    """Parse, check and resolve FILE against the inventory the options name; raise
    MadeusError with every problem found. `limited`: restricted to what the hosts of
    `--limit` need (deploy, plan)."""
    return resolve_module(file, load_module(file), args, limited=limited)


def resolve_module(
    file: str, module: Module, args: argparse.Namespace | None = None, *, limited: bool = False
) -> Loaded:
    """FILE's assembly (already loaded as `module`) resolved against the inventory."""
    if module.assembly is None:
        raise MadeusError(
            [
                Diagnostic(
                    "no-assembly",
                    f"{file} defines no assembly, only component types (`madeus check` checks "
                    "them; `madeus graph --view component:NAME` draws one)",
                )
            ]
        )
    from madeus.resolve import resolve

    assembly = module.assembly
    targets = [i.target for i in assembly.instances]
    targets += [i.target for f in assembly.families for i in f.instances]
    patterns = sorted({t.name for t in targets if t is not None and t.pattern and t.name})
    limit = getattr(args, "limit", None)
    if limit:
        patterns.append(limit)
    inv = load_inventory_of(args, patterns) if args is not None else None
    if inv is None or inv.local:
        # `all` is this machine without an inventory, as one would expect: not worth a note.
        named = sorted({t.name for t in targets if t is not None and t.name} - {"all"})
        if named:
            shown = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
            print(
                f"note: no inventory (-i): every target ({shown}) is this machine",
                file=sys.stderr,
            )
    deployment = resolve(assembly, inv)
    report(deployment.warnings)
    if limit and limited:
        deployment = _limited(deployment, limit)
    return Loaded(Path(file), module, deployment)


def _limited(deployment: Deployment, pattern: str) -> Deployment:
    """`--limit PATTERN`: what the pattern's hosts need (resolve.limit), said on stderr."""
    from madeus.resolve import limit, limit_hosts

    limited = limit(deployment, limit_hosts(deployment.inventory, pattern))
    said = []
    if limited.left_out:
        said.append(f"left out {_listed(limited.left_out)} (not needed there)")
    for name, away in limited.narrowed.items():
        said.append(f"{name} not on {_listed(away)}")
    if not limited.deployment.instances:
        raise MadeusError(
            [Diagnostic("limit", f"--limit {pattern}: no instance runs on its hosts")]
        )
    if said:
        print(f"note: --limit {pattern}: " + "; ".join(said), file=sys.stderr)
    return limited.deployment


def _listed(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:6])
    return shown + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def load_module(file: str) -> Module:
    """Parse and check FILE and its imports (an assembly or a library of component types);
    a missing or unreadable FILE is a diagnostic naming it."""
    from madeus.frontend import load_file
    from madeus.source import Span

    path = Path(file)
    problem = None
    if not path.exists():
        problem = "no such file"
    elif not path.is_file():
        problem = "not a file (a directory?)"
    if problem is not None:
        raise MadeusError([Diagnostic("no-file", problem, Span(file, 0, 0, 0, 0))])
    return load_file(file)


def report(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> None:
    """Print diagnostics to standard error, with a count when there are several."""
    if not diagnostics:
        return
    print(render_all(diagnostics, SourceCache()), file=sys.stderr)
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if errors > 1:
        print(f"{errors} errors", file=sys.stderr)


def reports_errors(verb: Verb) -> Verb:
    """Turn a MadeusError escaping a verb into diagnostics on stderr and exit status 1."""

    @functools.wraps(verb)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return verb(args)
        except MadeusError as error:
            report(error.diagnostics)
            return EXIT_ERRORS

    return wrapper


def fail(message: str, code: int = EXIT_ERRORS) -> int:
    print(f"madeus: error: {message}", file=sys.stderr)
    return code
