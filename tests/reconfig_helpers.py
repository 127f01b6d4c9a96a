"""Configurations written by hand for the reconfiguration tests (test_reconfig.py,
test_verify_behaviours.py)."""

from __future__ import annotations

from collections.abc import Sequence

from madeus.model import ComponentType
from madeus.reconfig import Configuration, InstanceState
from madeus.resolve import Link


def configuration(
    types: Sequence[ComponentType],
    marking: dict[str, tuple[str, str]],  # instance -> (type, "p, q")
    links: Sequence[str] = (),  # "u.port v.port"
) -> Configuration:
    by_name = {c.name: c for c in types}
    instances = tuple(
        InstanceState(
            name,
            by_name[type_name],
            ("localhost",),
            frozenset(p.strip() for p in places.split(",") if p.strip()),
        )
        for name, (type_name, places) in marking.items()
    )
    parsed = []
    for text in links:
        user, provider = text.split()
        u, up = user.split(".")
        p, pp = provider.split(".")
        parsed.append(Link(u, up, p, pp))
    return Configuration("test", instances, tuple(parsed), components=by_name)
