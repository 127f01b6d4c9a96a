"""Standard output and error that a closed reader cannot break.

`madeus deploy ... | head -2` closes the pipe after two lines: every later write raises
BrokenPipeError, which must not stop (or fail) a deployment that is changing hosts. While
`guard_stdout()` is active, `sys.stdout` and `sys.stderr` are wrappers that, on the first broken
pipe, point the stream's file descriptor at /dev/null (so that the interpreter's own final
flush is quiet too) and drop what is written from then on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class PipeSafe:
    """A text stream that swallows a broken pipe; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._break()

    def _break(self) -> None:
        self.broken = True
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a file (a test's capture): nothing will flush it at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def guard_stdout() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = PipeSafe(saved[0])
    sys.stderr = PipeSafe(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
