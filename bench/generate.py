#!/usr/bin/env python3
"""Write synthetic Madeus assemblies, for benchmarks and scaling tests.

    python bench/generate.py KIND N [--duration SECONDS] [-o FILE.mad]

Kinds (N is the size; every transition declares `~SECONDS`, 0 by default; no actions, so the
files stay small and run as-is under `--simulate` or with zero durations):

- `chain`     one component, N transitions in sequence through places p0..pN.
- `fanout`    one provider and N users, each user's one transition using the provider's service.
- `layers`    N components of 10 transitions each (a chain), in 10 layers of N/10 components
              (min(10, N) layers whose sizes differ by at most one when 10 does not divide N);
              component j of layer k > 0 waits, on its first transition, for the service that
              component j % width(k-1) of layer k-1 provides at its last place.
- `deadlock`  N components in a ring: component i's first transition uses the service of
              component (i+1) % N, which each provides only at its last place. Never terminates:
              the verifier must say so.

Few component types are written (reused by every instance), the instances and connections are
streamed out line by line: 10,000 components take a fraction of a second. Standard library
only; importable (`generate(kind, n, duration, out) -> Counts`) for the tests.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

KINDS = ("chain", "fanout", "layers", "deadlock")
LAYERS = 10  # layers in `layers`
LAYER_LENGTH = 10  # transitions per component in `layers`
RING_LENGTH = 2  # transitions per component in `deadlock`


@dataclass(frozen=True, slots=True)
class Counts:
    """What a generated assembly holds, for checks."""

    components: int  # component types
    instances: int
    transitions: int  # over all instances
    connections: int


def format_duration(seconds: float) -> str:
    """`~0s`, `~1.5s`, `~0.001s`: a DSL duration, compact, never in exponent notation."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"~{text or '0'}s"


def _chain_type(
    name: str, length: int, dur: str, *, provide: str | None = None, use: str | None = None
) -> Iterator[str]:
    """A component type whose deploy behaviour is `length` transitions in sequence."""
    yield f"component {name} {{\n"
    yield "    places p0*" + "".join(f", p{i}" for i in range(1, length + 1)) + "\n"
    for i in range(length):
        yield f"    transition t{i}: p{i} -> p{i + 1} {dur}\n"
    if provide is not None:
        yield f"    provide service {provide}: svc at p{length}\n"
    if use is not None:
        yield f"    use service {use}: svc for t0\n"
    yield "}\n\n"


def _chain(n: int, dur: str) -> tuple[Iterator[str], Counts]:
    def lines() -> Iterator[str]:
        yield from _chain_type("Chain", n, dur)
        yield f"assembly chain_{n} {{\n    c = Chain\n}}\n"

    return lines(), Counts(1, 1, n, 0)


def _fanout(n: int, dur: str) -> tuple[Iterator[str], Counts]:
    def lines() -> Iterator[str]:
        yield from _chain_type("Provider", 1, dur, provide="out")
        yield from _chain_type("User", 1, dur, use="dep")
        yield f"assembly fanout_{n} {{\n    p = Provider\n"
        for i in range(n):
            yield f"    u{i} = User\n"
        for i in range(n):
            yield f"    connect u{i}.dep -> p.out\n"
        yield "}\n"

    return lines(), Counts(2, n + 1, n + 1, n)


def layer_bounds(n: int) -> list[int]:
    """Where each layer of `layers` starts, plus `n` at the end: min(10, n) layers whose sizes
    differ by at most one (layer k holds components bounds[k] to bounds[k+1] - 1)."""
    count = min(LAYERS, n)
    return [-(-k * n // count) for k in range(count + 1)]  # ceil(k * n / count)


def _layers(n: int, dur: str) -> tuple[Iterator[str], Counts]:
    bounds = layer_bounds(n)
    users = n - bounds[1]

    def lines() -> Iterator[str]:
        yield from _chain_type("Layer0", LAYER_LENGTH, dur, provide="out")
        if users:
            yield from _chain_type("LayerK", LAYER_LENGTH, dur, provide="out", use="dep")
        yield f"assembly layers_{n} {{\n"
        for i in range(n):
            yield f"    c{i} = {'Layer0' if i < bounds[1] else 'LayerK'}\n"
        for k in range(1, len(bounds) - 1):
            below, start, end = bounds[k - 1], bounds[k], bounds[k + 1]
            width = start - below
            for i in range(start, end):
                yield f"    connect c{i}.dep -> c{below + (i - start) % width}.out\n"
        yield "}\n"

    types = 1 + (1 if users else 0)
    return lines(), Counts(types, n, n * LAYER_LENGTH, users)


def _deadlock(n: int, dur: str) -> tuple[Iterator[str], Counts]:
    def lines() -> Iterator[str]:
        yield from _chain_type("Ring", RING_LENGTH, dur, provide="out", use="dep")
        yield f"assembly deadlock_{n} {{\n"
        for i in range(n):
            yield f"    r{i} = Ring\n"
        for i in range(n):
            yield f"    connect r{i}.dep -> r{(i + 1) % n}.out\n"
        yield "}\n"

    return lines(), Counts(1, n, n * RING_LENGTH, n)


_GENERATORS: dict[str, Callable[[int, str], tuple[Iterator[str], Counts]]] = {
    "chain": _chain,
    "fanout": _fanout,
    "layers": _layers,
    "deadlock": _deadlock,
}


def generate(kind: str, n: int, duration: float, out: TextIO) -> Counts:
    """Write the assembly `kind` of size `n` to `out`; return what it holds."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if n < 1:
        raise ValueError(f"N must be at least 1, got {n}")
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"the duration must be a finite number >= 0, got {duration}")
    lines, counts = _GENERATORS[kind](n, format_duration(duration))
    out.write(f"# Generated by: python bench/generate.py {kind} {n} --duration {duration:g}\n")
    out.write(
        f"# {counts.instances} instances, {counts.transitions} transitions, "
        f"{counts.connections} connections\n\n"
    )
    out.writelines(lines)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generate.py", description="Write a synthetic Madeus assembly (.mad)."
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("n", type=int, metavar="N", help="size (transitions or components)")
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="declared duration of every transition (default 0)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE.mad",
        help="where to write (default: standard output)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("N must be at least 1")
    if not math.isfinite(args.duration) or args.duration < 0:
        parser.error("--duration must be a finite number >= 0")
    if args.output == "-":
        generate(args.kind, args.n, args.duration, sys.stdout)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", buffering=1 << 20) as out:
            generate(args.kind, args.n, args.duration, out)
    except OSError as exc:
        print(f"generate.py: error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
