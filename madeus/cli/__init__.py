"""The `madeus` command line: the only code that prints or chooses exit codes.

Every module in this package whose name does not start with `_` is a verb: it defines
`add_parser(subparsers) -> None` (registering `run(args) -> int` as the parser's `func` default)
and must import nothing heavy at module level, so `madeus --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from madeus import __version__
from madeus.cli._common import EXIT_INTERRUPTED, normalise_simulate, set_verbosity, verb_index
from madeus.cli._streams import guard_stdout
from madeus.errors import did_you_mean

WARNING_ACTIONS = ("default", "error", "ignore", "always", "module", "once")


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each verb's own (for errors in the verb's words)."""
    parser = argparse.ArgumentParser(
        prog="madeus",
        description="Deploy distributed software from verified lifecycle models.",
    )
    parser.add_argument("--version", action="version", version=f"madeus {__version__}")
    parser.add_argument(
        "-W",
        dest="warnings",
        action="append",
        default=[],
        choices=WARNING_ACTIONS,
        metavar="ACTION",
        help="show Python warnings raised in the libraries madeus uses (hidden by default), "
        "as python -W ACTION would: default, always, error, once, module or ignore",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").add_parser(sub)
    return parser, dict(sub.choices)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse like argparse, but say a usage error in the verb's own words: its usage line,
    and the verb or option that was probably meant."""
    parser, verbs = _build()
    at = verb_index(argv)
    verb = argv[at] if at < len(argv) else None
    if verb is not None and verb not in verbs:
        parser.error(f"unknown verb {verb!r}{did_you_mean(verb, verbs, quote=False)}")
    args, extra = parser.parse_known_args(argv)
    if extra:
        own = verbs.get(getattr(args, "verb", "") or "", parser)
        # argparse lists a parser's options nowhere public; `_actions` is stable since 2.7.
        options = [o for action in own._actions for o in action.option_strings]
        words = [f"{w}{did_you_mean(w.split('=')[0], options, quote=False)}" for w in extra]
        own.error(f"unrecognized arguments: {' '.join(words)}")
    return args


def filter_warnings(actions: list[str]) -> None:
    """Warnings raised inside third-party libraries (asyncssh's DSA deprecation with a recent
    cryptography, among others) are for their developers, not for an operator: they would
    print Python source lines that read like a traceback. They stay hidden unless asked for,
    with `madeus -W ACTION` or Python's own `-W` / PYTHONWARNINGS (which this leaves alone).
    Warnings of madeus itself are shown."""
    if actions:
        for action in actions:
            warnings.simplefilter(action)  # type: ignore[arg-type]
        return
    if sys.warnoptions:  # python -W ... or PYTHONWARNINGS: the user's choice
        return
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"madeus(\.|$)")


def main(argv: list[str] | None = None) -> int:
    args = _parse(normalise_simulate(sys.argv[1:] if argv is None else argv))
    with warnings.catch_warnings(), guard_stdout():
        filter_warnings(args.warnings)
        set_verbosity(getattr(args, "verbosity", 0))
        try:
            code: int = args.func(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return code
