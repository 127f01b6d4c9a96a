"""Errors and diagnostics.

Library code raises a `MadeusError` subclass carrying one or more `Diagnostic`s; only the CLI
prints them (with `render`) and chooses the exit code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from madeus.source import NO_SPAN, Span

Severity = Literal["error", "warning", "note"]


def did_you_mean(word: str, candidates: Iterable[str], *, quote: bool = True) -> str:
    """` (did you mean "X"?)` for the candidate closest to a misspelled `word`, else ""."""
    import difflib

    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.7)
    if not close:
        return ""
    return f' (did you mean "{close[0]}"?)' if quote else f" (did you mean {close[0]}?)"


@dataclass(frozen=True, slots=True)
class Related:
    """Another place a diagnostic points to ("first declared here")."""

    message: str
    span: Span


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem, at one position. `code` is a stable kebab-case identifier."""

    code: str
    message: str
    span: Span = NO_SPAN
    severity: Severity = "error"
    related: tuple[Related, ...] = field(default=())

    def render(self, sources: SourceCache | None = None) -> str:
        """`PATH:LINE:COL: error: MESSAGE`, the source line and a caret (docs/cli.md)."""
        cache = sources if sources is not None else SourceCache()
        parts = [_render_one(self.span, self.severity, self.message, cache)]
        parts.extend(_render_one(r.span, "note", r.message, cache) for r in self.related)
        return "\n".join(parts)


class SourceCache:
    """Reads source files once, for rendering many diagnostics."""

    def __init__(self, texts: dict[str, str] | None = None) -> None:
        self._lines: dict[str, list[str]] = {
            path: text.splitlines() for path, text in (texts or {}).items()
        }

    def line(self, path: str, number: int) -> str | None:
        if path not in self._lines:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            self._lines[path] = text.splitlines()
        lines = self._lines[path]
        return lines[number - 1] if 0 < number <= len(lines) else None


def _render_one(span: Span, severity: str, message: str, cache: SourceCache) -> str:
    if not span.known:
        where = "madeus" if span == NO_SPAN else span.path
        return f"{where}: {severity}: {message}"
    head = f"{span.path}:{span.line}:{span.col}: {severity}: {message}"
    text = cache.line(span.path, span.line)
    if text is None:
        return head
    text = text.expandtabs(1)
    start = max(span.col - 1, 0)
    if span.end_line == span.line and span.end_col > span.col:
        width = span.end_col - span.col
    else:
        width = max(len(text.rstrip()) - start, 1)
    width = max(1, min(width, max(len(text) - start, 1)))
    caret = " " * start + "^" + "~" * (width - 1)
    return f"{head}\n{text}\n{caret}"


def render_all(diagnostics: Iterable[Diagnostic], sources: SourceCache | None = None) -> str:
    cache = sources if sources is not None else SourceCache()
    return "\n".join(d.render(cache) for d in diagnostics)


class MadeusError(Exception):
    """Root of every error the library raises on purpose."""

    def __init__(self, diagnostics: Iterable[Diagnostic] | str) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("error", diagnostics)]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics))


class StateError(MadeusError):
    """A deployment's state of record cannot be found, read or written (`madeus.state`)."""


class ParseError(MadeusError):
    """The text is not in the language."""


class CheckError(MadeusError):
    """The text parses but the model is ill-formed (unknown names, cycles...)."""


class InventoryError(MadeusError):
    """The inventory cannot be read or does not fit the assembly."""


class VerifyError(MadeusError):
    """The model is well-formed but may deadlock or use a service that is not provided."""


class BackendError(MadeusError):
    """A backend could not run an action (not: the action ran and failed)."""
