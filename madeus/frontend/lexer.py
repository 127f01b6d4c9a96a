"""The lexer of `.mad` files: one regular expression, one match per token, and the values of
literal tokens (strings, durations).

Contextual as lark's: a keyword is a keyword only where the parser state accepts it (elsewhere
it is a name), and a number is a `SIGNED_INT` only where one is expected; those decisions are
the parser's (`madeus.frontend.parse`), which asks lark's parser what its state accepts.
`tests/test_frontend.py` checks that the tokens are the ones lark's own lexer sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import cast

from lark import Token

from madeus.source import Span

# lark's own token class: the parser feeds tokens to lark's LALR parser, which wants them.
Tok = Token


def token_span(path: str, tok: Tok) -> Span:
    """Where `tok` is (our tokens always have their positions; lark's type allows None)."""
    return Span(
        path,
        cast(int, tok.line),
        cast(int, tok.column),
        cast(int, tok.end_line),
        cast(int, tok.end_column),
    )


# One match per token, blanks before it included; `lastindex` says which class matched
# (None for the blanks at the very end). Mirrors the terminals of madeus.lark; no DOTALL,
# since `\\.` must not cross a line, as in lark.
TOKEN_RE = re.compile(
    r"""
    [ \t\r\f]*
    (?:
     (\#[^\n]*)                                          # 1 comment
    |(\n[ \t\r\f\n]*)                                   # 2 newlines and the indentation
    |(\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|"(?:[^"\\\n]|\\.)*")  # 3 STRING
    |([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*)            # 4 NAME or keyword
    |((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)                      # 5 DURATION
    |([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)                 # 6 SIGNED_NUMBER or SIGNED_INT
    |(->|[{}()\[\]:,=.~*%])                                # 7 punctuation
    |(.)                                                   # 8 anything else: an error
    |\Z
    )
    """,
    re.VERBOSE,
)
(
    KIND_COMMENT,
    KIND_NEWLINES,
    KIND_STRING,
    KIND_WORD,
    KIND_DURATION,
    KIND_NUMBER,
    KIND_PUNCT,
    KIND_BAD,
) = range(1, 9)

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
RESUME = re.compile(r"^(?:component|assembly|import)\b", re.MULTILINE)


def scan_tokens(text: str, start: int, end: int) -> Iterator[tuple[bool, str, int, int]]:
    """`(is a string literal, token text, start, end)` for each token of `text[start:end]`,
    comments and newlines left out: to find a name inside an element's span again."""
    for match in TOKEN_RE.finditer(text, start, end):
        kind = match.lastindex
        if kind is not None and kind > KIND_NEWLINES:
            yield kind == KIND_STRING, match.group(kind), match.start(kind), match.end(kind)


def parse_duration(text: str) -> float:
    """`1m30s` -> 90.0, `500ms` -> 0.5. Raises ValueError if `text` is not a duration."""
    if _DURATION_RE.fullmatch(text) is None:
        raise ValueError(f"not a duration: {text!r}")
    return duration_seconds(text)


def duration_seconds(text: str) -> float:
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def decode_string(raw: str) -> str:
    """The value of a string literal (quotes included in `raw`)."""
    if not raw.startswith('"""') and "\\" not in raw:
        return raw[1:-1]
    return decode_string_mapped(raw)[0]


def decode_string_mapped(raw: str) -> tuple[str, list[int]]:
    """The value of a string literal and, for each of its characters, its index in `raw`.

    `\\"` `\\\\` `\\n` `\\t` are escapes; any other backslash is kept as written (shell
    commands are full of them). A triple-quoted string loses one leading newline and its
    common indentation, which is removed before escapes are read."""
    if raw.startswith('"""'):
        start = 3
        body = raw[3:-3]
        if body.startswith("\n"):
            body, start = body[1:], 4
        chars, where = _dedent(body, start)
    else:
        chars, where = raw[1:-1], list(range(1, len(raw) - 1))
    if "\\" not in chars:
        return chars, where
    out: list[str] = []
    out_where: list[int] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if char == "\\" and i + 1 < len(chars):
            escaped = _ESCAPES.get(chars[i + 1])
            if escaped is not None:
                out.append(escaped)
                out_where.append(where[i])
                i += 2
                continue
        out.append(char)
        out_where.append(where[i])
        i += 1
    return "".join(out), out_where


def _dedent(body: str, start: int) -> tuple[str, list[int]]:
    """textwrap.dedent, keeping track of where each character came from."""
    lines = body.split("\n")
    indents = [line[: len(line) - len(line.lstrip(" \t"))] for line in lines if line.strip(" \t")]
    margin = _common_prefix(indents)
    chars: list[str] = []
    where: list[int] = []
    offset = start
    for number, line in enumerate(lines):
        if number:
            chars.append("\n")
            where.append(offset - 1)
        if line.strip(" \t"):
            kept = line[len(margin) :]
            chars.append(kept)
            where.extend(range(offset + len(margin), offset + len(line)))
        offset += len(line) + 1
    return "".join(chars), where


def _common_prefix(texts: Sequence[str]) -> str:
    if not texts:
        return ""
    low, high = min(texts), max(texts)
    size = 0
    while size < len(low) and low[size] == high[size]:
        size += 1
    return low[:size]
