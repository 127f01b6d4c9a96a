"""Text to model: one `.mad` file to its imports, component types and assembly.

The grammar (`dsl/madeus.lark`) and lark's LALR tables and tree-shaping callbacks define the
language. The stages are apart: `lexer.py` (tokens), this module (the loop over the tables),
`build.py` (the transformer the tables' callbacks call: model objects, no intermediate tree)
and `messages.py` (syntax errors in plain words). The lexer and the loop are our own: a
100,000-transition file has two million tokens, which lark's generic lexer and parser take
about 14 s to turn into a tree, and these about 4 s into the model.

After a syntax error the parser resumes at the next line that starts a top-level item, so one
run reports the first error of each broken item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, cast

from lark import Tree
from lark.parse_tree_builder import ParseTreeBuilder

from madeus.errors import Diagnostic, ParseError, did_you_mean
from madeus.frontend.build import Item, ModelBuilder, ParsedFile
from madeus.frontend.grammar import Tables, tables
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
    new_tok,
)
from madeus.frontend.messages import (
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


# --- the parser loop --------------------------------------------------------------------------


@cache
def _tree_builder() -> ParseTreeBuilder:
    """lark's tree-shaping wrappers (token filtering, `_rule` inlining, `None` for a missing
    `[optional]`), to be bound to a fresh `ModelBuilder` for each file."""
    shape = tables()
    return ParseTreeBuilder(  # type: ignore[no-untyped-call]
        list(shape.rules), Tree, False, False, shape.maybe_placeholders
    )


_REPETITION = re.compile(r"__\w+_(?:star|plus)_\d+")


def _repetition_callback(rule: Any) -> Callable[[list[Any]], Any] | None:
    """A faster callback for the helper rules lark makes of `x*` and `x+` (`__r_star_N: x |
    __r_star_N x`): grow one Tree in place, which the enclosing rule's callback inlines, as
    lark's own would, minus a generic filtering step per item."""
    origin = str(rule.origin.name)
    if _REPETITION.fullmatch(origin) is None:
        return None
    expansion = rule.expansion
    if expansion and str(expansion[0].name) == origin:

        def extend(children: list[Any]) -> Any:
            run = children[0]
            run.children.extend(children[1:])
            return run

        return extend

    def begin(children: list[Any]) -> Any:
        return Tree(origin, list(children))

    return begin


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.tables: Tables = tables()
        self.builder = ModelBuilder(path)
        by_rule = _tree_builder().create_callback(self.builder)  # type: ignore[no-untyped-call]
        self.callbacks: list[Callable[[list[Any]], Any]] = [
            _repetition_callback(rule) or by_rule[rule] for rule in self.tables.rules
        ]
        self.words = {name: text for text, name in self.tables.keywords.items()}

    def run(self, pos: int, line: int) -> list[Item]:
        """Parse from `pos` (the start of line `line`) to the end of the text."""
        text = self.text
        actions = self.tables.actions
        sizes = self.tables.sizes
        origins = self.tables.origins
        keywords = self.tables.keywords
        callbacks = self.callbacks
        end_state = self.tables.end_state
        state = self.tables.start_state
        states = [state]
        values: list[Any] = []
        line_start = pos
        prev: Tok | None = None
        for match in TOKEN_RE.finditer(text, pos):
            kind = match.lastindex
            if kind == KIND_WORD:
                value = match.group(kind)
                row = actions[state]
                typ = keywords.get(value)
                if typ is None or (typ not in row and "NAME" in row):
                    typ = "NAME"
            elif kind == KIND_PUNCT:
                value = match.group(kind)
                row = actions[state]
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
                row = actions[state]
                typ = self._classify(kind, value, row, match.start(kind), line, line_start)
            start = match.start(kind)
            column = start - line_start + 1
            tok = new_tok(Tok, (typ, value, line, column, line, column + len(value)))
            if typ == "STRING" and value[0:3] == '"""' and "\n" in value:
                tok = self._multiline(tok)
            act = row.get(typ)
            while act is not None and act < 0:  # reduce, as often as the lookahead asks
                rule = -1 - act
                size = sizes[rule]
                if size:
                    children = values[-size:]
                    del values[-size:]
                    del states[-size:]
                else:
                    children = []
                values.append(callbacks[rule](children))
                state = actions[states[-1]][origins[rule]]
                states.append(state)
                act = actions[state].get(typ)
            if act is None:
                raise self._syntax_error(tok, prev, states, values, start)
            state = act
            states.append(state)
            values.append(tok)
            prev = tok
            if tok.end_line != line:
                line = tok.end_line
                line_start = start + value.rfind("\n") + 1
        return self._finish(states, values, prev, end_state)

    def _classify(
        self, kind: int, value: str, row: dict[str, int], start: int, line: int, line_start: int
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

    @staticmethod
    def _multiline(tok: Tok) -> Tok:
        value = tok.value
        end_line = tok.line + value.count("\n")
        end_column = len(value) - value.rfind("\n")
        return tok._replace(end_line=end_line, end_column=end_column)

    def _finish(
        self, states: list[int], values: list[Any], prev: Tok | None, end_state: int
    ) -> list[Item]:
        actions = self.tables.actions
        if prev is not None:
            line, column = prev.end_line, prev.end_column
        else:
            line, column = 1, 1
        end = new_tok(Tok, ("$END", "", line, column, line, column + 1))
        act = actions[states[-1]].get("$END")
        while act is not None and act < 0:
            rule = -1 - act
            size = self.tables.sizes[rule]
            children = values[-size:] if size else []
            if size:
                del values[-size:]
                del states[-size:]
            values.append(self.callbacks[rule](children))
            goto = actions[states[-1]][self.tables.origins[rule]]
            if goto == end_state:
                return cast(list[Item], values[-1])
            states.append(goto)
            act = actions[goto].get("$END")
        raise self._syntax_error(end, prev, states, values, len(self.text))

    def _syntax_error(
        self, tok: Tok, prev: Tok | None, states: list[int], values: list[Any], offset: int
    ) -> SyntaxFailure:
        row = self.tables.actions[states[-1]]
        expected = [s for s in row if s.isupper()]
        phrases = expected_phrases(expected, open_construct(values), prev, self.words)
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
        span = Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)
        return SyntaxFailure(Diagnostic("syntax-error", message, span), offset)

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
    parser = _Parser(text, "<tokens>")
    original = parser.callbacks
    # Record the tokens each reduction consumes, in order.
    parser.callbacks = [_recording(callback, seen) for callback in original]
    _parse_or_raise(parser)
    return sorted(seen, key=lambda t: (t.line, t.column))


def _recording(callback: Callable[[list[Any]], Any], seen: list[Tok]) -> Callable[[list[Any]], Any]:
    def record(children: list[Any]) -> Any:
        seen.extend(cast(Tok, c) for c in children if isinstance(c, tuple))
        return callback(children)

    return record


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
