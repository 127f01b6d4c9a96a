"""Files and imports: an entry `.mad` file and everything it imports, to one `Module`.

`import "lib/mariadb.mad"` and `import "components/*.mad"` are relative to the importing
file. Imported files contribute their component types (and those they import, at the place
of each import statement); only the entry file may define an assembly. A file reached twice
(a diamond) is read once. Syntax errors and unreadable files raise `ParseError`; every other
problem of every file is reported together in one `CheckError`.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from madeus.errors import CheckError, Diagnostic, ParseError, Related
from madeus.frontend.build import ImportStmt, ParsedFile
from madeus.frontend.checks import check_assembly, check_components, sort_diagnostics
from madeus.frontend.parse import parse_text
from madeus.memory import gc_paused
from madeus.model import Assembly, ComponentType, Module
from madeus.source import Span

__all__ = ["MAX_FILE_BYTES", "load_file", "load_text"]

# Far above any real assembly (10,000 components take 12 MB) and well below what would
# exhaust memory while parsing.
MAX_FILE_BYTES = 64 * 1024 * 1024
_GLOB_CHARS = frozenset("*?[")


def load_file(path: str | os.PathLike[str]) -> Module:
    """Load a `.mad` file and its imports. Spans carry `path` as given (imported files:
    joined to the importing file's directory).

    Raises `ParseError` (syntax, unreadable files) or `CheckError` (everything else)."""
    display = os.fspath(path)
    loader = _Loader()
    text = loader.read(display, None)
    if text is None:
        raise ParseError(loader.unreadable)
    return loader.load(display, text)


def load_text(text: str, path: str = "<string>") -> Module:
    """Load `.mad` source given as a string; imports are relative to `path`'s directory."""
    return _Loader().load(path, _normalize(text))


def _normalize(text: str) -> str:
    return text.replace("\r\n", "\n") if "\r" in text else text


@dataclass(slots=True)
class _Frame:
    """A file being loaded: its items left to walk, and the import that brought it."""

    path: str
    real: str
    items: Iterator[object]
    imported_at: Span | None


@dataclass(slots=True)
class _Loader:
    sources: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    unreadable: list[Diagnostic] = field(default_factory=list)
    syntax: list[Diagnostic] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)

    # -- reading

    def read(self, path: str, imported_at: Span | None) -> str | None:
        """The text of `path`, or None after recording why it cannot be had."""
        where = imported_at or Span(path, 0, 0, 0, 0)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            self.unreadable.append(
                Diagnostic("file-unreadable", f'cannot read "{path}": {reason}', where)
            )
            return None
        if len(data) > MAX_FILE_BYTES:
            self.unreadable.append(
                Diagnostic(
                    "file-too-large",
                    f'"{path}" is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB',
                    where,
                )
            )
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            self.unreadable.append(_encoding_problem(path, data, error.start))
            return None
        return _normalize(text)

    def parse(self, path: str, text: str) -> ParsedFile | None:
        self.sources[path] = text
        self.files.append(path)
        try:
            parsed = parse_text(text, path)
        except ParseError as error:
            self.syntax.extend(error.diagnostics)
            return None
        self.problems.extend(parsed.diagnostics)
        return parsed

    # -- walking the imports

    def load(self, path: str, text: str) -> Module:
        with gc_paused():
            return self._load(path, text)

    def _load(self, path: str, text: str) -> Module:
        entry = self.parse(path, text)
        components: list[ComponentType] = []
        assemblies: list[Assembly] = []
        if entry is not None:
            self._walk(entry, components, assemblies)
        if self.unreadable or self.syntax:
            raise ParseError(sort_diagnostics([*self.unreadable, *self.syntax]))
        assembly = self._entry_assembly(assemblies, tuple(components))
        module = Module(tuple(components), assembly, tuple(self.files))
        if assembly is not None:
            found = check_assembly(assembly, self.sources)
        else:
            found = check_components(module.components, self.sources)
        problems = sort_diagnostics([*self.problems, *found])
        if problems:
            raise CheckError(problems)
        return module

    def _walk(
        self, entry: ParsedFile, components: list[ComponentType], assemblies: list[Assembly]
    ) -> None:
        """Depth first over the imports, without recursion (import chains can be long)."""
        entry_real = os.path.realpath(entry.path)
        stack = [_Frame(entry.path, entry_real, iter(entry.items), None)]
        seen = {entry_real}
        while stack:
            frame = stack[-1]
            item = next(frame.items, None)
            if item is None:
                stack.pop()
            elif isinstance(item, ComponentType):
                components.append(item)
            elif isinstance(item, Assembly):
                if frame.imported_at is None:
                    assemblies.append(item)
                else:
                    self._imported_assembly(item, frame)
            elif isinstance(item, ImportStmt):
                # One file at a time, in the order the import lists them.
                frame.items = itertools.chain(self._targets(item, frame), frame.items)
            elif isinstance(item, _Target):
                child = self._enter(item, stack, seen)
                if child is not None:
                    stack.append(child)

    def _targets(self, stmt: ImportStmt, frame: _Frame) -> list[_Target]:
        if "\0" in stmt.path:  # no file name holds one (and glob, open would raise)
            self.problems.append(
                Diagnostic("import-bad-path", "an import path cannot hold a NUL byte", stmt.span)
            )
            return []
        joined = os.path.normpath(os.path.join(os.path.dirname(frame.path), stmt.path))
        if not _GLOB_CHARS.intersection(stmt.path):
            if not os.path.exists(joined):
                self.problems.append(
                    Diagnostic(
                        "import-missing", f'imported file "{joined}" does not exist', stmt.span
                    )
                )
                return []
            return [_Target(joined, stmt.span)]
        # A glob naturally matches the file that holds it: that is not an import of itself.
        matches = [
            match
            for match in sorted(glob.glob(joined, recursive=True))
            if os.path.isfile(match) and os.path.realpath(match) != frame.real
        ]
        if not matches:
            self.problems.append(
                Diagnostic("import-glob-empty", f'no file matches "{joined}"', stmt.span)
            )
        return [_Target(os.path.normpath(match), stmt.span) for match in matches]

    def _enter(self, target: _Target, stack: list[_Frame], seen: set[str]) -> _Frame | None:
        real = os.path.realpath(target.path)
        on_stack = [frame.real for frame in stack]
        if real in on_stack:
            loop = [frame.path for frame in stack[on_stack.index(real) :]] + [target.path]
            self.problems.append(
                Diagnostic("import-cycle", "import cycle: " + " -> ".join(loop), target.span)
            )
            return None
        if real in seen:
            return None
        seen.add(real)
        if os.path.isdir(target.path):
            self.problems.append(
                Diagnostic(
                    "import-missing", f'"{target.path}" is a directory, not a file', target.span
                )
            )
            return None
        text = self.read(target.path, target.span)
        if text is None:
            return None
        parsed = self.parse(target.path, text)
        if parsed is None:
            return None
        return _Frame(target.path, real, iter(parsed.items), target.span)

    def _imported_assembly(self, assembly: Assembly, frame: _Frame) -> None:
        assert frame.imported_at is not None
        self.problems.append(
            Diagnostic(
                "import-assembly",
                f'imported file "{frame.path}" defines assembly "{assembly.name}": only the file '
                "given to madeus may define an assembly",
                assembly.span,
                related=(Related("imported here", frame.imported_at),),
            )
        )

    def _entry_assembly(
        self, assemblies: list[Assembly], components: tuple[ComponentType, ...]
    ) -> Assembly | None:
        if not assemblies:
            return None
        first = assemblies[0]
        for extra in assemblies[1:]:
            self.problems.append(
                Diagnostic(
                    "duplicate-assembly",
                    f'a file defines at most one assembly: "{extra.name}" is a second one',
                    extra.span,
                    related=(Related(f'assembly "{first.name}" is defined here', first.span),),
                )
            )
        return replace(first, components=components)


@dataclass(frozen=True, slots=True)
class _Target:
    """One file an import statement names (a glob names several)."""

    path: str
    span: Span


def _encoding_problem(path: str, data: bytes, offset: int) -> Diagnostic:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return Diagnostic(
        "file-encoding",
        f"file is not valid UTF-8 (byte 0x{data[offset]:02x})",
        Span(path, line, column, line, column + 1),
    )
