"""Building large models without the cyclic garbage collector.

Parsing, planning, building the net and verifying a 100,000-transition assembly allocate
millions of small objects and no reference cycles: each full collection the allocations
trigger rescans everything alive, for nothing (a third to a half of the time). Each stage
pauses the collector while it builds, and restores it as it was.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
