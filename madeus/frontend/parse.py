"""Text to model: one `.mad` file to its imports, component types and assembly.

The grammar (`dsl/madeus.lark`) defines the language; lark compiles it to LALR(1) tables. The
stages are apart: `lexer.py` (tokens), this module (the loop that feeds them to lark's
interactive parser), `build.py` (the transformer lark calls at each reduction: model objects,
no intermediate tree) and `messages.py` (syntax errors in plain words). The lexer is our own,
one regular expression for every token: lark's generic lexer and tree are several times
slower on files of a million tokens (a `chain` of 100,000 transitions; bench/README.md has
the parser's figures).

The lexer is contextual, as lark's: before each token it asks the parser what its state
accepts (`InteractiveParser.choices`), so that a keyword where a name is expected is a name.
After a syntax error the parser resumes at the next line that starts a top-level item, so one
run reports the first error of each broken item.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

from lark import Lark
from lark.exceptions import UnexpectedToken

from madeus.errors import Diagnostic, ParseError, did_you_mean
from madeus.frontend.build import Item, ModelBuilder, ParsedFile
from madeus.frontend.grammar import keywords, model_parser
from madeus.frontend.lexer import (
    KIND_COMMENT,
    KIND_DURATION,
    KIND_NEWLINES,
    KIND_NUMBER,
    KIND_PUNCT,
    KIND_STRING,
    KIND_WORD,
    RESUME,
    TOKEN_RE,
    Tok,
    token_span,
)
from madeus.frontend.messages import (
    CONSTRUCTS,
    SyntaxFailure,
    describe,
    expected_phrases,
    join_phrases,
    open_construct,
    quote,
)
from madeus.memory import gc_paused
from madeus.source import Span

__all__ = ["parse_text", "tokenize"]

MAX_SYNTAX_ERRORS = 20

# lark binds the builder's methods when it builds the parser (about 40 ms): one parser and
# one builder per thread, the builder started afresh for each file.
_local = threading.local()


def _model_parser() -> tuple[Lark, ModelBuilder, dict[str, str]]:
    made: tuple[Lark, ModelBuilder, dict[str, str]] | None = getattr(_local, "parser", None)
    if made is None:
        builder = ModelBuilder("")
        parser = model_parser(builder)
        made = _local.parser = (parser, builder, keywords(parser))
    return made


class _Parser:
    def __init__(self, text: str, path: str, seen: list[Tok] | None = None) -> None:
        self.text = text
        self.path = path
        self.lark, self.builder, self.keywords = _model_parser()
        self.builder.begin(path)
        self.words = {name: text for text, name in self.keywords.items()}
        self.seen = seen  # every token fed, for `tokenize`

    def run(self, pos: int, line: int) -> list[Item]:
        """Parse from `pos` (the start of line `line`) to the end of the text."""
        text = self.text
        keywords = self.keywords
        parser = self.lark.parse_interactive(start="start")
        # lark's interactive parser is untyped: its two methods, as they are documented.
        choices = cast(Callable[[], dict[str, object]], parser.choices)
        feed = cast(Callable[[Tok], object], parser.feed_token)
        opened = self.builder.opened
        opened.clear()
        seen = self.seen
        line_start = pos
        prev: Tok | None = None
        new_str = str.__new__
        for match in TOKEN_RE.finditer(text, pos):
            kind = match.lastindex
            if kind == KIND_WORD:
                value = match.group(kind)
                typ = keywords.get(value)
                if typ is None:
                    typ = "NAME"
                else:
                    row = choices()
                    if typ not in row and "NAME" in row:
                        typ = "NAME"
            elif kind == KIND_PUNCT:
                value = match.group(kind)
                typ = keywords[value]
            elif kind == KIND_NEWLINES:
                value = match.group(kind)
                line += value.count("\n")
                line_start = match.start(kind) + value.rfind("\n") + 1
                continue
            elif kind is None or kind == KIND_COMMENT:
                continue
            else:
                value = match.group(kind)
                typ = self._classify(kind, value, choices(), match.start(kind), line, line_start)
            start = match.start(kind)
            column = start - line_start + 1
            end_line, end_column = line, column + len(value)
            if typ == "STRING" and value[0:3] == '"""' and "\n" in value:
                end_line = line + value.count("\n")
                end_column = len(value) - value.rfind("\n")
            # Token's documented attributes, set as its constructor does, without its two
            # Python-level calls per token (a million tokens on a megabyte file).
            tok = new_str(Tok, value)
            tok.type = typ
            tok.value = value
            tok.start_pos = start
            tok.line = line
            tok.column = column
            tok.end_line = end_line
            tok.end_column = end_column
            tok.end_pos = start + len(value)
            try:
                feed(tok)
            except UnexpectedToken:
                raise self._syntax_error(tok, prev, choices(), start) from None
            if typ in CONSTRUCTS:
                opened.append(tok)
            if seen is not None:
                seen.append(tok)
            prev = tok
            if end_line != line:
                line = end_line
                line_start = start + value.rfind("\n") + 1
        # The end of the file is where the last token ends.
        at = token_span(self.path, prev) if prev is not None else Span(self.path, 1, 1, 1, 1)
        line, column = at.end_line, at.end_col
        end = Tok("$END", "", len(text), line, column, line, column + 1, len(text))
        try:
            return cast(list[Item], feed(end))
        except UnexpectedToken:
            raise self._syntax_error(end, prev, choices(), len(text)) from None

    def _classify(
        self, kind: int, value: str, row: dict[str, object], start: int, line: int, line_start: int
    ) -> str:
        """The terminal of a string, duration or number token (rarer than names and
        punctuation, which the loop handles inline)."""
        if kind == KIND_STRING:
            if value == '""' and self.text.startswith('"', start + 2):
                raise self._lexical_error(start, line, start - line_start + 1, '"""')
            return "STRING"
        if kind == KIND_DURATION:
            return "DURATION"
        if kind == KIND_NUMBER:
            integral = "SIGNED_INT" in row and value.lstrip("+-").isdigit()
            return "SIGNED_INT" if integral else "SIGNED_NUMBER"
        raise self._lexical_error(start, line, start - line_start + 1, value)

    def _syntax_error(
        self, tok: Tok, prev: Tok | None, row: dict[str, object], offset: int
    ) -> SyntaxFailure:
        expected = [s for s in row if s.isupper()]
        construct = open_construct(self.builder.opened)
        phrases = expected_phrases(expected, construct, prev, self.words)
        after = f" after {quote(prev)}" if prev is not None else ""
        if tok.type == "$END" and len(phrases) > 4:
            missing = ', missing "}"' if "RBRACE" in row else ""
            message = f"unexpected end of the file{missing}"
        elif len(phrases) <= 4:
            message = f"expected {join_phrases(phrases)}{after}, found {describe(tok)}"
        else:
            message = f"unexpected {describe(tok)}{after}"
        if tok.type == "NAME":
            keywords = [w for t in expected if (w := self.words.get(t, "")).isalpha()]
            message += did_you_mean(tok.value, keywords)
        return SyntaxFailure(
            Diagnostic("syntax-error", message, token_span(self.path, tok)), offset
        )

    def _lexical_error(self, offset: int, line: int, column: int, char: str) -> SyntaxFailure:
        if char == '"""':
            message, width = "unterminated triple-quoted string", 3
        elif char == '"':
            message, width = 'unterminated string (a string ends on its line; use """ for more)', 1
        elif char.isprintable():
            message, width = f'unexpected character "{char}"', 1
        else:
            message, width = f"unexpected character U+{ord(char):04X}", 1
        span = Span(self.path, line, column, line, column + width)
        return SyntaxFailure(Diagnostic("syntax-error", message, span), offset)


def tokenize(text: str) -> list[Tok]:
    """The tokens of a syntactically valid text, as the parser sees them (for tests and
    tools). Raises `ParseError` like `parse_text`."""
    seen: list[Tok] = []
    _parse_or_raise(_Parser(text, "<tokens>", seen))
    return seen


def _parse_or_raise(parser: _Parser) -> list[Item]:
    failures: list[Diagnostic] = []
    pos, line = 0, 1
    items: list[Item] = []
    text = parser.text
    with gc_paused():
        while True:
            try:
                chunk = parser.run(pos, line)
            except SyntaxFailure as failure:
                failures.append(failure.diagnostic)
                # Resume at the next line that starts a top-level item, to report more.
                next_line = text.find("\n", failure.offset)
                resume = RESUME.search(text, next_line + 1) if next_line >= 0 else None
                if resume is None or len(failures) >= MAX_SYNTAX_ERRORS:
                    break
                pos = resume.start()
                line = text.count("\n", 0, pos) + 1
                continue
            items.extend(chunk)
            break
    if failures:
        raise ParseError(failures)
    return items


def parse_text(text: str, path: str) -> ParsedFile:
    """Parse one file's text. Raises `ParseError` with the syntax errors found.

    Spans carry `path` as given."""
    parser = _Parser(text, path)
    items = _parse_or_raise(parser)
    return ParsedFile(path, tuple(items), tuple(parser.builder.diagnostics))
