"""Job selectors: `ID` (every host of the transition) or `ID@HOST`, either part a shell-style
pattern (`keystone.*`, `*@compute-1`), as `--inject-failure`, `--assume-done` and `--rerun`
take them."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from madeus.errors import MadeusError


def is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def matches(selector: str, tid: str, host: str) -> bool:
    """Whether `selector` names the job of transition `tid` on `host`."""
    name, at, on = selector.partition("@")
    if not fnmatch.fnmatchcase(tid, name):
        return False
    return not at or fnmatch.fnmatchcase(host, on)


def check_selectors(
    selectors: Sequence[str], jobs: Iterable[tuple[str, str]], option: str, where: str
) -> None:
    """MadeusError for a selector that names none of `jobs` ((transition id, host) pairs that
    may run); `where` says what was searched ("the program")."""
    if not selectors:
        return
    known = list(dict.fromkeys(jobs))
    for selector in selectors:
        if any(matches(selector, tid, host) for tid, host in known):
            continue
        tid, _, host = selector.partition("@")
        found = [t for t, _ in known if fnmatch.fnmatchcase(t, tid)]
        if not found:
            raise MadeusError(f'{option} {selector}: no transition "{tid}" in {where}')
        hosts = ", ".join(dict.fromkeys(h for t, h in known if fnmatch.fnmatchcase(t, tid)))
        raise MadeusError(
            f'{option} {selector}: "{tid}" does not run on host "{host}" (hosts: {hosts})'
        )
