"""Source positions: every model element keeps the span it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns start at 1."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    @property
    def known(self) -> bool:
        return self.line > 0


# Elements built with the Python API have no file position.
NO_SPAN = Span("<api>", 0, 0, 0, 0)
