"""Shell commands with placeholders, built from pieces: values never become shell code.

A shell action is a template (`template.py`): shell code with `{name}` placeholders. Pasting a
quoted value into the text is only safe where the quoting is known: `shlex.quote` makes one
word outside quotes, but inside `"..."` or `'...'` the same quotes end the surrounding string
and the value runs. So the command is scanned once with a small POSIX shell lexer that knows
the quoting context of every placeholder, and the value itself never enters the code:

- each distinct value becomes a shell variable, assigned (quoted) at the top of the script,
  where the context is ours: `_madeus_1='...'`;
- each placeholder becomes a reference to it, written for its context: `"${_madeus_1}"`
  outside quotes (one word, whatever the value holds), `${_madeus_1}` inside `"..."` or in a
  here-document body, `'"${_madeus_1}"'` inside `'...'` (the quote is closed and reopened).

The shell expands a reference once and never reads the result as code, so even a context
misjudged by the lexer (a `case` pattern's `)` inside `$(...)`, say) can only change how the
value is split into words, never run it. Where no reference can stand for the value, the
placeholder is refused when the assembly is checked (`unsafe_placeholders`, positioned
diagnostics): inside backquotes, `${...}`, `$((...))` or `((...))`, `$'...'`, right after a
backslash, in a here-document delimiter, in the body of a here-document whose delimiter is
quoted (nothing is expanded there).

The script reaches the shell on its standard input, never in its argv: `/bin/sh -c 'eval
"$(cat)"'` reads it whole, then runs it with standard input at its end (a command that reads
its input sees end of file, as before). Values of any size and secrets therefore never show in
`ps`, and the 128 KiB limit on one argument does not apply. Only a NUL byte cannot be carried
by any shell: a value holding one fails the job with a plain message.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from madeus.errors import MadeusError
from madeus.template import MissingValueError, TemplateError, template_pieces

__all__ = [
    "SHELL_ARGV",
    "SHELL_COMMAND",
    "ShellTemplate",
    "ShellValueError",
    "UnsafePlaceholder",
    "parse_shell",
    "shell_argv",
    "shell_script",
    "unsafe_placeholders",
]

# What runs the script: it arrives on standard input (see the module docstring).
SHELL_COMMAND = 'eval "$(cat)"'
SHELL_ARGV = ("/bin/sh", "-c", SHELL_COMMAND)


def shell_argv(become_user: str | None = None) -> tuple[str, ...]:
    """`SHELL_ARGV`, run as `become_user` through sudo when given (`-b`, `ansible_become`).
    `-n`: sudo never prompts (a password it would need fails the job, with sudo's message);
    the script exports its own environment, so sudo's environment reset loses nothing."""
    if become_user is None:
        return SHELL_ARGV
    return ("sudo", "-n", "-H", "-u", become_user, "--", *SHELL_ARGV)


Context = Literal["word", "single", "double", "expand"]
_REFERENCE = {
    "word": '"${{{}}}"',
    "single": "'\"${{{}}}\"'",
    "double": "${{{}}}",
    "expand": "${{{}}}",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLANK = " \t"
_OPERATOR = ";&|<>()\n"
_WORD_END = _BLANK + _OPERATOR


class UnsafePlaceholder(TemplateError):
    """A placeholder where no quoting keeps a value literal; `offset` is its `{` in the
    template."""


class ShellValueError(MadeusError):
    """A value that no shell can carry (a NUL byte), or an invalid environment name."""


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    context: Context
    offset: int


@dataclass(frozen=True, slots=True)
class ShellTemplate:
    parts: tuple[str | Slot, ...]
    names: tuple[str, ...]  # distinct placeholder names, in order of appearance


@functools.lru_cache(maxsize=4096)
def parse_shell(text: str) -> ShellTemplate:
    """Scan a shell action's template. Raises `TemplateError` for a malformed template and
    `UnsafePlaceholder` for the first placeholder in a context no quoting can handle."""
    return _Lexer(text).run()


def unsafe_placeholders(text: str) -> list[UnsafePlaceholder]:
    """Every placeholder of `text` in a refused context (for `madeus check`: all of them, not
    only the first). A malformed template raises `TemplateError`."""
    found: list[UnsafePlaceholder] = []
    _Lexer(text, found).run()
    return found


def shell_script(text: str, values: Mapping[str, str], env: Mapping[str, str] | None = None) -> str:
    """The script for `SHELL_ARGV`'s standard input: `env` exported, each value assigned to a
    variable, then the command with references in place of placeholders.

    Raises `MissingValueError` (a placeholder without a value), `TemplateError` /
    `UnsafePlaceholder` (see `parse_shell`) and `ShellValueError` (a NUL byte, a bad name)."""
    template = parse_shell(text)
    lines: list[str] = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ShellValueError(f"invalid environment variable name {name!r}")
        lines.append(f"export {name}={_quote(value, f'environment variable {name}')}\n")
    variables: dict[str, str] = {}
    for n, name in enumerate(template.names, 1):
        try:
            value = values[name]
        except KeyError:
            raise MissingValueError(name) from None
        variables[name] = var = f"_madeus_{n}"
        lines.append(f"{var}={_quote(value, f'{{{name}}}')}\n")
    for part in template.parts:
        if isinstance(part, str):
            lines.append(part)
        else:
            lines.append(_REFERENCE[part.context].format(variables[part.name]))
    return "".join(lines)


def _quote(value: str, what: str) -> str:
    if "\0" in value:
        raise ShellValueError(
            f"the value of {what} holds a NUL byte, which no shell command can carry"
        )
    return shlex.quote(value)


# --- the lexer ---------------------------------------------------------------------------------

_Kind = Literal["cmd", "subst", "sq", "dq", "bq", "brace", "arith", "dsq", "comment", "heredoc"]

# Where a placeholder is refused, and what to write instead.
_REFUSED: dict[_Kind, str] = {
    "bq": "inside backquotes: write $(...) instead of `...`",
    "brace": "inside a parameter expansion ${...}: assign the value to a variable first "
    "(v={p}; ... ${v...})",
    "arith": "inside an arithmetic expression: assign the value to a variable first "
    "(n={p}; ... $((n + 1)))",
    "dsq": "inside $'...' quotes: use '...' or \"...\" quotes",
}
_AFTER_BACKSLASH = "right after a backslash: remove the backslash"
_IN_DELIMITER = "in a here-document delimiter: write the delimiter as plain text"
_IN_QUOTED_HEREDOC = (
    "in the body of a here-document with a quoted delimiter: nothing is expanded there, "
    "unquote the delimiter (<<EOF, not <<'EOF')"
)


@dataclass(slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool


@dataclass(slots=True)
class _Frame:
    kind: _Kind
    refuse: str | None
    depth: int = 0  # open parentheses (subshells, or arithmetic groups) inside this frame
    doc: _Heredoc | None = None  # a here-document's body: its delimiter...
    line_start: int = 0  # ...and where its current line starts


class _Lexer:
    """One pass over the template: literal characters and placeholders, with a stack of
    quoting contexts. `found` given: refused placeholders are collected there instead of
    raising at the first."""

    def __init__(self, text: str, found: list[UnsafePlaceholder] | None = None) -> None:
        # The template as one sequence: characters (`{{` already a literal `{`) and
        # placeholders (with their offset in the template, for diagnostics).
        self.items: list[str | Slot] = []
        for literal, name, offset in template_pieces(text):
            if name is not None:
                self.items.append(Slot(name, "word", offset))
            else:
                self.items.extend(literal)
        self.found = found
        self.stack: list[_Frame] = [_Frame("cmd", None)]
        self.parts: list[str | Slot] = []
        self.literal: list[str] = []
        self.word_start = True
        self.heredocs: list[_Heredoc] = []
        self.i = 0

    # --- output ---------------------------------------------------------------------------

    def run(self) -> ShellTemplate:
        while self.i < len(self.items):
            item = self.items[self.i]
            if isinstance(item, Slot):
                self._slot(item)
                self.i += 1
            else:
                self._char(item)
        self._flush()
        names = tuple(dict.fromkeys(p.name for p in self.parts if isinstance(p, Slot)))
        return ShellTemplate(tuple(self.parts), names)

    def _flush(self) -> None:
        if self.literal:
            self.parts.append("".join(self.literal))
            self.literal.clear()

    def _emit(self, n: int = 1) -> None:
        """Copy the next `n` items (characters) to the output."""
        for item in self.items[self.i : self.i + n]:
            assert isinstance(item, str)
            self.literal.append(item)
        self.i += n

    def _peek(self, k: int = 1) -> str | Slot | None:
        j = self.i + k
        return self.items[j] if j < len(self.items) else None

    def _slot(self, slot: Slot, context: Context | None = None, refuse: str | None = None) -> None:
        frame = self.stack[-1]
        reason = refuse or frame.refuse
        if reason is None:
            context = context or _CONTEXT.get(frame.kind)
            if context is None:
                reason = _REFUSED.get(frame.kind, "here: move it out of this construct")
        if reason is not None:
            self._refuse(slot, reason)
            return
        assert context is not None
        self._flush()
        self.parts.append(Slot(slot.name, context, slot.offset))
        self.word_start = False

    def _refuse(self, slot: Slot, reason: str) -> None:
        where, _, hint = reason.partition(": ")
        problem = UnsafePlaceholder(
            f'placeholder "{{{slot.name}}}" {where} cannot be substituted safely; '
            + hint.replace("{p}", "{" + slot.name + "}"),
            slot.offset,
        )
        if self.found is None:
            raise problem
        self.found.append(problem)
        # Go on as if it were a word, so the rest of the command is still scanned.
        self._flush()
        self.parts.append(slot)

    def _push(self, kind: _Kind, width: int) -> None:
        parent = self.stack[-1].refuse
        own = _REFUSED.get(kind) if kind not in ("comment",) else None
        self._emit(width)
        self.stack.append(_Frame(kind, parent or own))
        self.word_start = kind in ("subst", "cmd")

    def _pop(self, width: int) -> None:
        self._emit(width)
        self.stack.pop()
        self.word_start = False

    # --- characters -----------------------------------------------------------------------

    def _escaped_char(self, c: str, close: str) -> None:
        """Inside backquotes or `$'...'`: a backslash escapes, `close` ends the frame."""
        if c == "\\":
            self._backslash()
        elif c == close:
            self._pop(1)
        else:
            self._emit()

    def _char(self, c: str) -> None:
        kind = self.stack[-1].kind
        if kind in ("cmd", "subst"):
            self._command_char(c)
        elif kind == "sq":
            self._pop(1) if c == "'" else self._emit()
        elif kind == "dq":
            self._double_char(c)
        elif kind == "bq":
            self._escaped_char(c, "`")
        elif kind == "brace":
            self._brace_char(c)
        elif kind == "arith":
            self._arith_char(c)
        elif kind == "heredoc":
            self._heredoc_char(c)
        elif kind == "dsq":
            self._escaped_char(c, "'")
        else:  # comment: up to the end of the line, which the enclosing frame then reads
            if c == "\n":
                self.stack.pop()
            else:
                self._emit()

    def _backslash(self) -> None:
        nxt = self._peek()
        if isinstance(nxt, Slot):
            self._emit()
            self.i += 1
            self._refuse(nxt, _AFTER_BACKSLASH)
            return
        self._emit(2 if nxt is not None else 1)

    def _expansion(self) -> bool:
        """At `$` or a backquote, outside single quotes: open what it starts, if anything."""
        c, nxt = self.items[self.i], self._peek()
        if c == "`":
            self._push("bq", 1)
            return True
        if nxt == "(":
            if self._peek(2) == "(":
                self._push("arith", 3)
            else:
                self._push("subst", 2)
            return True
        if nxt == "{":
            self._push("brace", 2)
            return True
        if nxt == "'" and self.stack[-1].kind in ("cmd", "subst"):
            self._push("dsq", 2)
            return True
        return False

    def _command_char(self, c: str) -> None:
        frame = self.stack[-1]
        if c == "\\":
            self._backslash()
            self.word_start = False
        elif c == "'":
            self._push("sq", 1)
        elif c == '"':
            self._push("dq", 1)
        elif c in "$`" and self._expansion():
            pass
        elif c == "#" and self.word_start:
            self._push("comment", 1)
        elif c == "(" and self.word_start and self._peek() == "(":
            self._push("arith", 2)  # bash's ((...)) arithmetic command
        elif c == "(":
            frame.depth += 1
            self._emit()
            self.word_start = True
        elif c == ")" and frame.kind == "subst" and frame.depth == 0:
            self._pop(1)
        elif c == ")":
            frame.depth = max(frame.depth - 1, 0)
            self._emit()
            self.word_start = True
        elif c == "<" and self._peek() == "<" and self._peek(2) != "<":
            self._heredoc_operator()
        elif c == "\n":
            self._emit()
            self.word_start = True
            if self.heredocs:
                self._open_heredocs()
        else:
            self._emit()
            self.word_start = c in _WORD_END

    def _double_char(self, c: str) -> None:
        if c == "\\":
            self._backslash()
        elif c == '"':
            self._pop(1)
        elif c in "$`" and self._expansion():
            pass
        else:
            self._emit()

    def _brace_char(self, c: str) -> None:
        if c == "\\":
            self._backslash()
        elif c == "}":
            self._pop(1)
        elif c == "'":
            self._push("sq", 1)
        elif c == '"':
            self._push("dq", 1)
        elif c in "$`" and self._expansion():
            pass
        else:
            self._emit()

    def _arith_char(self, c: str) -> None:
        frame = self.stack[-1]
        if c == "(":
            frame.depth += 1
            self._emit()
        elif c == ")" and frame.depth == 0 and self._peek() == ")":
            self._pop(2)
        elif c == ")":
            frame.depth = max(frame.depth - 1, 0)
            self._emit()
        elif c in "$`" and self._expansion():
            pass
        else:
            self._emit()

    # --- here-documents ---------------------------------------------------------------------

    def _heredoc_operator(self) -> None:
        """`<<` or `<<-`, then its delimiter word, read here (a body starts at the next
        newline outside quotes)."""
        self._emit(2)
        strip_tabs = self._peek(0) == "-"
        if strip_tabs:
            self._emit()
        while self._peek(0) in tuple(_BLANK):
            self._emit()
        word: list[str] = []
        quoted = False
        quote: str | None = None
        while (item := self._peek(0)) is not None:
            if isinstance(item, Slot):
                self.i += 1
                self._refuse(item, _IN_DELIMITER)
                continue
            if quote is None and item in _WORD_END:
                break
            if quote is not None and item == quote:
                quote = None
            elif quote is None and item in "'\"":
                quote, quoted = item, True
            elif quote is None and item == "\\":
                quoted = True
                self._emit()
                nxt = self._peek(0)
                if isinstance(nxt, str):
                    word.append(nxt)
                    self._emit()
                continue
            else:
                word.append(item)
            self._emit()
        self.heredocs.append(_Heredoc("".join(word), quoted, strip_tabs))
        self.word_start = False

    def _open_heredocs(self) -> None:
        """Just after the newline that ends the line of `<<` operators: their bodies follow,
        one after the other (the first on top of the stack)."""
        pending, self.heredocs = self.heredocs, []
        parent = self.stack[-1].refuse
        for doc in reversed(pending):
            refuse = parent or (_IN_QUOTED_HEREDOC if doc.quoted else None)
            self.stack.append(_Frame("heredoc", refuse, doc=doc, line_start=self.i))

    def _heredoc_char(self, c: str) -> None:
        """A body: quotes are plain text there; with an unquoted delimiter, `$...` and
        backquotes expand (and a backslash escapes them), with a quoted one nothing does. A
        line equal to the delimiter ends it."""
        frame = self.stack[-1]
        doc = frame.doc
        assert doc is not None
        if c == "\n":
            line = self.items[frame.line_start : self.i]
            text = "".join(x for x in line if isinstance(x, str))
            self._emit()
            if doc.strip_tabs:
                text = text.lstrip("\t")
            if len(text) == len(line) and text == doc.delimiter:
                self.stack.pop()  # the next here-document's body starts here
                if self.stack[-1].kind == "heredoc":
                    self.stack[-1].line_start = self.i
                else:
                    self.word_start = True
            else:
                frame.line_start = self.i
        elif doc.quoted:
            self._emit()
        elif c == "\\":
            self._backslash()
        elif c in "$`" and self._expansion():
            pass
        else:
            self._emit()


_CONTEXT: dict[_Kind, Context] = {
    "cmd": "word",
    "subst": "word",
    "sq": "single",
    "dq": "double",
    "comment": "expand",
    "heredoc": "expand",
}
