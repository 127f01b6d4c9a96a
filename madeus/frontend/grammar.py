"""The grammar of `.mad` files: loaded once from `dsl/madeus.lark`, compiled by lark.

The `.lark` file is the single definition of the language. lark turns it into LALR(1)
tables and tree-shaping callbacks; `parse.py` drives those tables with its own lexer
(`lexer.py`), because lark's generic lexer and parser loop are too slow for
100,000-transition files (see `parse.py`). `lark_parser()` is the plain lark parser over the
same grammar, kept for tools and for the tests that hold both paths to the same token stream.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark

__all__ = ["Tables", "grammar_text", "lark_parser", "tables"]

# Terminals the hand-written lexer (lexer.py) produces besides keywords and punctuation.
LEXER_TERMINALS = ("NAME", "STRING", "DURATION", "SIGNED_INT", "SIGNED_NUMBER")


@cache
def grammar_text() -> str:
    """The grammar: package data in a wheel, `<repo>/dsl/madeus.lark` in an editable install."""
    try:
        resource = importlib.resources.files("madeus.frontend").joinpath("madeus.lark")
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError):
        pass
    repo_copy = Path(__file__).resolve().parents[2] / "dsl" / "madeus.lark"
    return repo_copy.read_text(encoding="utf-8")


@cache
def lark_parser() -> Lark:
    """The LALR parser, built once. No `cache=True`: lark would pickle the tables to a
    shared temporary directory and unpickle whatever it finds there, and building them
    takes about 40 ms anyway."""
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        # Every token reaches the callbacks: spans start at the leading keyword.
        keep_all_tokens=True,
    )


@dataclass(frozen=True, slots=True)
class Tables:
    """lark's LALR tables in a shape that is cheap to walk.

    `actions[state][symbol]` is the target state (>= 0) of a shift or goto, or `-1 - i` to
    reduce by `rules[i]`. Symbols are terminal names and rule names, as plain `str`.
    """

    actions: dict[int, dict[str, int]]
    rules: tuple[Any, ...]  # lark.grammar.Rule, in the order of `sizes` and `origins`
    sizes: tuple[int, ...]
    origins: tuple[str, ...]
    start_state: int
    end_state: int
    keywords: dict[str, str]  # keyword or punctuation text -> terminal name
    maybe_placeholders: bool


def _keywords(parser: Lark) -> dict[str, str]:
    words: dict[str, str] = {}
    for terminal in parser.terminals:
        pattern = terminal.pattern
        if pattern.type == "str":
            texts = [pattern.value]
        else:
            # `PORT_KIND: "service" | "data"` compiles to the regexp `(?:service|data)`.
            alternatives = re.fullmatch(r"\(\?:([A-Za-z_|]+)\)", pattern.value)
            if alternatives is None:
                continue
            texts = alternatives.group(1).split("|")
        for text in texts:
            if words.setdefault(text, str(terminal.name)) != terminal.name:
                raise RuntimeError(f"grammar: {text!r} belongs to two terminals")
    return words


@cache
def tables() -> Tables:
    parser = lark_parser()
    names = {str(t.name) for t in parser.terminals}
    missing = [name for name in LEXER_TERMINALS if name not in names]
    if missing:
        raise RuntimeError(f"grammar: the lexer expects terminals {missing}")
    # The layout of lark's LALR frontend (stable since lark 1.0).
    table = parser.parser.parser.parser.parse_table
    rules = tuple(parser.rules)
    index = {rule: i for i, rule in enumerate(rules)}
    actions: dict[int, dict[str, int]] = {}
    for state, row in table.states.items():
        actions[state] = {
            str(symbol): (target if action.name == "Shift" else -1 - index[target])
            for symbol, (action, target) in row.items()
        }
    return Tables(
        actions=actions,
        rules=rules,
        sizes=tuple(len(rule.expansion) for rule in rules),
        origins=tuple(str(rule.origin.name) for rule in rules),
        start_state=table.start_states["start"],
        end_state=table.end_states["start"],
        keywords=_keywords(parser),
        maybe_placeholders=bool(parser.options.maybe_placeholders),
    )
