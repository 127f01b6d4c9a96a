"""Running a reconfiguration script: `SCRIPT.py` defines `reconfigure(r)`, which writes the
program with the builder `r` (`madeus.reconfig.program.ProgramBuilder`; `r.state` is the
configuration it starts from).

A mistake in the script (a syntax error, an exception, a misused builder) is reported as a
diagnostic at the script's line, in the usual format, never as a traceback.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from pathlib import Path

from madeus.errors import Diagnostic
from madeus.model import ComponentType
from madeus.reconfig.program import Program, ProgramBuilder, ProgramError
from madeus.reconfig.state import Configuration
from madeus.source import Span

ENTRY = "reconfigure"


def load_program(
    script: str | os.PathLike[str],
    configuration: Configuration,
    components: Mapping[str, ComponentType] | None = None,
) -> Program:
    """Run `script`'s `reconfigure(r)` and return the program it built; ProgramError with
    every problem found (at the script's lines)."""
    path = os.fspath(script)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProgramError([Diagnostic("no-file", "no such file", _at(path))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramError([Diagnostic("no-file", f"cannot read: {exc}", _at(path))]) from None
    try:
        code = compile(text, path, "exec")
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 1
        span = Span(path, line, col, line, col + 1)
        raise ProgramError([Diagnostic("script-syntax", exc.msg, span)]) from None
    namespace: dict[str, object] = {"__name__": "__madeus_reconfigure__", "__file__": path}
    try:
        exec(code, namespace)
    except Exception as exc:
        raise ProgramError([_exception(exc, path)]) from None
    entry = namespace.get(ENTRY)
    if not callable(entry):
        raise ProgramError(
            [
                Diagnostic(
                    "script-entry",
                    f"the script defines no function {ENTRY}(r) (it receives the program builder)",
                    _at(path),
                )
            ]
        )
    builder = ProgramBuilder(configuration, components, source=path)
    try:
        entry(builder)
    except ProgramError:
        raise
    except Exception as exc:
        problems = [*builder.problems, _exception(exc, path)]
        raise ProgramError(problems) from None
    return builder.build()


def _at(path: str) -> Span:
    return Span(path, 0, 0, 0, 0)


def _exception(exc: BaseException, path: str) -> Diagnostic:
    """The exception at the deepest line of the script it went through."""
    where = _at(path)
    real = os.path.realpath(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == real and frame.lineno is not None:
            col = (frame.colno or 0) + 1
            end = (frame.end_colno or col) + 1 if frame.end_lineno == frame.lineno else col + 1
            where = Span(path, frame.lineno, col, frame.lineno, end)
    message = str(exc) or type(exc).__name__
    return Diagnostic("script-error", f"{type(exc).__name__}: {message}", where)
