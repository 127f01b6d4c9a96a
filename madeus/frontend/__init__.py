"""The front end: `.mad` text to the model, with every mistake reported at its position.

- `grammar.py`: dsl/madeus.lark, compiled once by lark;
- `lexer.py`: the tokens of a file, and the values of its literals;
- `parse.py`: one file's text to its imports, component types and assembly, calling
  `build.py` (model objects at each reduction) and `messages.py` (syntax errors in words);
- `load.py`: an entry file and its imports to a `Module`;
- `checks.py`: the semantic checks of a model, as diagnostics (shared with the builder).
"""

from __future__ import annotations

from madeus.frontend.checks import check_assembly, check_components, check_module
from madeus.frontend.load import load_file, load_text
from madeus.frontend.parse import parse_text

__all__ = [
    "check_assembly",
    "check_components",
    "check_module",
    "load_file",
    "load_text",
    "parse_text",
]
