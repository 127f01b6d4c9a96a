"""Placeholders in action strings and data values, shared by the front end and the engine.

A template is plain text with `{name}` placeholders: a parameter, a data use port, or
`host.name` / `host.address` / `host.vars.KEY`. `{{` and `}}` stand for literal braces, so a
shell command written `awk '{{print $1}}'` reaches the shell as `awk '{print $1}'`.

Values are substituted, never evaluated. This module substitutes text as it is (data values,
paths, Ansible names); shell commands go through `shell.py`, which never pastes a value into
shell code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from madeus.errors import Diagnostic, MadeusError

__all__ = [
    "MissingValueError",
    "TemplateError",
    "placeholders",
    "render",
    "template_pieces",
]

# `{{`, `}}`, a whole `{...}` without inner braces, or a lone brace (an error).
_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(MadeusError):
    """The template itself is malformed; `offset` is where, in the template string."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__([Diagnostic("bad-template", reason)])
        self.reason = reason
        self.offset = offset


class MissingValueError(MadeusError, KeyError):
    """A placeholder has no value. Also a `KeyError`, as for a missing mapping key."""

    def __init__(self, name: str) -> None:
        super().__init__([Diagnostic("missing-value", f'no value for placeholder "{{{name}}}"')])
        self.name = name

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and all.
        return self.diagnostics[0].message


def template_pieces(text: str) -> Iterator[tuple[str, str | None, int]]:
    """Yield `(literal, placeholder name or None, offset of the piece)` in order."""
    pos = 0
    for match in _PIECE.finditer(text):
        start = match.start()
        if start > pos:
            yield text[pos:start], None, pos
        piece = match.group()
        if piece == "{{":
            yield "{", None, start
        elif piece == "}}":
            yield "}", None, start
        elif piece == "{":
            raise TemplateError('"{" is not closed (write "{{" for a literal brace)', start)
        elif piece == "}":
            raise TemplateError('"}" has no matching "{" (write "}}" for a literal brace)', start)
        else:
            name = match.group(1)
            if _NAME.fullmatch(name) is None:
                raise TemplateError(
                    f'"{piece}" is not a placeholder name (write "{{{{" and "}}}}" for literal '
                    "braces)",
                    start,
                )
            yield "", name, start
        pos = match.end()
    if pos < len(text):
        yield text[pos:], None, pos


def placeholders(text: str) -> list[tuple[str, int]]:
    """The placeholders of `text` as `(name, offset of its "{")`, in order.

    Raises `TemplateError` for a lone brace or a malformed placeholder.
    """
    if "{" not in text and "}" not in text:
        return []
    return [(name, offset) for _, name, offset in template_pieces(text) if name is not None]


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute every placeholder of `text` by its value, as it is (never for a shell).

    Raises `MissingValueError` (a `KeyError`) for a placeholder without a value and
    `TemplateError` for a malformed template.
    """
    if "{" not in text and "}" not in text:
        return text
    parts: list[str] = []
    for literal, name, _ in template_pieces(text):
        if name is None:
            parts.append(literal)
            continue
        try:
            value = values[name]
        except KeyError:
            raise MissingValueError(name) from None
        parts.append(value)
    return "".join(parts)
