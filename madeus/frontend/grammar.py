"""The grammar of `.mad` files: loaded once from `dsl/madeus.lark`, compiled by lark.

The `.lark` file is the single definition of the language. lark turns it into LALR(1) tables;
`parse.py` feeds lark's parser the tokens of its own lexer (`lexer.py`) through lark's
interactive parser, and lark calls the model builder (`build.py`) at each reduction. The plain
`lark_parser()` (lark's own lexer, a tree) is kept for tools and for the tests that hold both
paths to the same token stream.
"""

from __future__ import annotations

import importlib.resources
import re
from functools import cache
from pathlib import Path

from lark import Lark

__all__ = ["grammar_text", "keywords", "lark_parser", "model_parser"]

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
    """The LALR parser that builds a tree, built once."""
    return model_parser(None)


def model_parser(transformer: object | None) -> Lark:
    """The LALR parser calling `transformer`'s methods at each reduction (a tree without
    one). No `cache=True`: lark would pickle the tables to a shared temporary directory and
    unpickle whatever it finds there, and building them takes about 40 ms anyway."""
    return Lark(
        grammar_text(),
        parser="lalr",
        # The builder takes spans from the tokens; a tree carries them in its nodes.
        propagate_positions=transformer is None,
        maybe_placeholders=True,
        # Every token reaches the callbacks: spans start at the leading keyword.
        keep_all_tokens=True,
        transformer=transformer,
    )


def keywords(parser: Lark) -> dict[str, str]:
    """Keyword and punctuation text -> terminal name, from the grammar's terminals."""
    names = {str(t.name) for t in parser.terminals}
    missing = [name for name in LEXER_TERMINALS if name not in names]
    if missing:
        raise RuntimeError(f"grammar: the lexer expects terminals {missing}")
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
