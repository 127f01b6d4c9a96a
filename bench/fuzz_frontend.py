#!/usr/bin/env python3
"""Fuzz the DSL front end with hostile input. Prints one JSON document.

    python bench/fuzz_frontend.py [--cases 10000] [--seed 0] [--out DIR]

Cases:
- `generated`: programs drawn by hypothesis from the language's shapes (components, places,
  transitions, ports, assemblies, families, connections) with names, strings, numbers and
  durations that are often wrong: well-formed ones, ill-typed ones, dangling names;
- `tokens`: hypothesis-drawn soups of the language's keywords, names and punctuation;
- mutations of every `.mad` file under `assemblies/` (each loaded in a copy of its directory,
  so imports resolve): deleted, duplicated and swapped lines, truncations, random bytes
  inserted or flipped, a 1 MB identifier, 100,000 nested parentheses or braces, invalid UTF-8,
  NUL bytes, a 1 MB line, a 1 MB string literal.

Each case is loaded with `madeus.frontend.load_file`; an accepted one is also resolved and
planned (local inventory). The harness counts, per kind, the cases accepted and rejected, and
two kinds of failure: a *traceback* (an exception other than ParseError, CheckError or another
MadeusError, or a diagnostic that cannot be rendered) and an *unpositioned* rejection (no
diagnostic with a line > 0). Failing inputs are saved in `--out` when given. Exit status 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSEMBLIES = ROOT / "assemblies"
MEGABYTE = 1 << 20
DEEP = 100_000

# --- outcome of one case ----------------------------------------------------------------------


@dataclass
class KindStats:
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    tracebacks: int = 0
    unpositioned: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0


@dataclass
class Results:
    kinds: dict[str, KindStats] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    @property
    def cases(self) -> int:
        return sum(k.cases for k in self.kinds.values())

    def record(self, kind: str, label: str, data: bytes, run: Callable[[], str | None]) -> None:
        """Run one case; `run` returns None when accepted, or raises."""
        from madeus.errors import MadeusError, render_all

        stats = self.kinds.setdefault(kind, KindStats())
        stats.cases += 1
        started = time.perf_counter()
        problem: str | None = None
        what = ""
        try:
            run()
            stats.accepted += 1
        except MadeusError as error:
            stats.rejected += 1
            try:
                render_all(error.diagnostics)
            except Exception:
                problem, what = "traceback", traceback.format_exc()
            else:
                if not any(d.span.line > 0 for d in error.diagnostics):
                    problem = "unpositioned"
                    what = "; ".join(d.message for d in error.diagnostics)[:2000]
        except RecursionError:
            problem, what = "traceback", "RecursionError"
        except Exception:
            problem, what = "traceback", traceback.format_exc()
        elapsed = time.perf_counter() - started
        stats.seconds += elapsed
        stats.slowest_s = max(stats.slowest_s, elapsed)
        if problem is not None:
            if problem == "traceback":
                stats.tracebacks += 1
            else:
                stats.unpositioned += 1
            saved = None
            if self.out is not None:
                self.out.mkdir(parents=True, exist_ok=True)
                saved = self.out / f"case-{len(self.failures):04d}.mad"
                saved.write_bytes(data)
            self.failures.append(
                {
                    "kind": kind,
                    "case": label,
                    "problem": problem,
                    "detail": what[-3000:],
                    "saved": None if saved is None else str(saved),
                }
            )


def load_and_plan(path: Path) -> None:
    """The front end, then (for accepted files with an assembly) resolve and plan."""
    from madeus.frontend import load_file
    from madeus.plan import build_plan
    from madeus.resolve import resolve

    module = load_file(str(path))
    if module.assembly is not None:
        build_plan(resolve(module.assembly))


# --- mutations of the shipped assemblies ------------------------------------------------------

Mutator = Callable[[random.Random, bytes], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def delete_lines(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    for _ in range(rng.randint(1, 3)):
        if len(lines) > 1:
            del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def swap_lines(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def insert_random_bytes(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return data[:at] + noise + data[at:]


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if buffer:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
    return bytes(buffer)


def insert_token(rng: random.Random, data: bytes) -> bytes:
    """A keyword or punctuation of the language at a random place."""
    at = rng.randrange(len(data) + 1)
    token = rng.choice(TOKENS).encode()
    return data[:at] + b" " + token + b" " + data[at:]


def _replace_a_name(rng: random.Random, data: bytes, new: bytes) -> bytes:
    import re

    names = [m.span() for m in re.finditer(rb"[A-Za-z_][A-Za-z0-9_]*", data)]
    if not names:
        return data + new
    start, end = rng.choice(names)
    return data[:start] + new + data[end:]


def huge_identifier(rng: random.Random, data: bytes) -> bytes:
    return _replace_a_name(rng, data, b"x" * MEGABYTE)


def _line_start(rng: random.Random, data: bytes) -> int:
    """The start of a random line that is not a comment (so the insertion is parsed)."""
    starts = [0, *(i + 1 for i, byte in enumerate(data) if byte == 10)]
    code = [s for s in starts if not data[s:].lstrip(b" ").startswith((b"#", b"\n"))]
    return rng.choice(code or starts)


def deep_parens(rng: random.Random, data: bytes) -> bytes:
    at = _line_start(rng, data)
    return data[:at] + b"(" * DEEP + b")" * DEEP + data[at:]


def deep_braces(rng: random.Random, data: bytes) -> bytes:
    at = _line_start(rng, data)
    return data[:at] + b"{" * DEEP + data[at:]


def invalid_utf8(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"]) + data[at:]


def nul_bytes(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\0" * rng.randint(1, 4) + data[at:]


def long_line(rng: random.Random, data: bytes) -> bytes:
    at = data.find(b"\n", rng.randrange(len(data) + 1))
    at = len(data) if at < 0 else at
    return data[:at] + b" # " + b"y" * MEGABYTE + data[at:]


def huge_string(rng: random.Random, data: bytes) -> bytes:
    import re

    strings = [m.span() for m in re.finditer(rb'"[^"\n]*"', data)]
    big = b'"' + b"z" * MEGABYTE + b'"'
    if not strings:
        return data + b"\n" + big
    start, end = rng.choice(strings)
    return data[:start] + big + data[end:]


# Light mutators are drawn many times per file; heavy ones (megabytes) once each.
LIGHT: dict[str, Mutator] = {
    "delete-lines": delete_lines,
    "duplicate-line": duplicate_line,
    "swap-lines": swap_lines,
    "truncate": truncate,
    "random-bytes": insert_random_bytes,
    "flip-bytes": flip_bytes,
    "insert-token": insert_token,
    "invalid-utf8": invalid_utf8,
    "nul-bytes": nul_bytes,
}
HEAVY: dict[str, Mutator] = {
    "huge-identifier": huge_identifier,
    "deep-parens": deep_parens,
    "deep-braces": deep_braces,
    "long-line": long_line,
    "huge-string": huge_string,
}


def seeds(root: Path = ASSEMBLIES) -> list[Path]:
    return sorted(root.rglob("*.mad"))


def mutation_cases(
    results: Results, rng: random.Random, count: int, work: Path, root: Path = ASSEMBLIES
) -> None:
    """`count` mutated files, spread over every seed; each seed's directory is copied into
    `work` so that its imports resolve, and the mutated file replaces the copy for one case."""
    files = seeds(root)
    if not files:
        return
    mirror = work / "assemblies"
    shutil.copytree(root, mirror, ignore=shutil.ignore_patterns("*.lock", "__pycache__"))
    heavy_cases = [(path, name) for path in files for name in HEAVY]
    light_count = max(count - len(heavy_cases), len(files))
    plan: list[tuple[Path, str]] = list(heavy_cases)
    names = list(LIGHT)
    for n in range(light_count):
        plan.append((files[n % len(files)], names[rng.randrange(len(names))]))
    for path, name in plan:
        original = path.read_bytes()
        mutator = HEAVY.get(name) or LIGHT[name]
        mutated = mutator(rng, original)
        target = mirror / path.relative_to(root)
        target.write_bytes(mutated)
        try:
            label = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} / {name}"
            results.record(name, label, mutated, lambda t=target: load_and_plan(t))  # type: ignore[misc]
        finally:
            target.write_bytes(original)


# --- generated programs (hypothesis) ----------------------------------------------------------

TOKENS = [
    "component", "assembly", "import", "places", "transition", "provide", "use", "service",
    "data", "at", "for", "connect", "on", "in", "sites", "hosts", "of", "shell", "ansible",
    "playbook", "role", "tasks", "python", "upload", "to", "timeout", "retries", "behaviour",
    "idempotent", "optional", "output", "env", "true", "false", "{", "}", "(", ")", "[", "]",
    ":", ",", "=", "->", ".", "*", "~", "#", '"', '"""', "~1s", "10m", "-1", "3.5e9",
]  # fmt: skip


def _strategies() -> tuple[Any, Any]:
    from hypothesis import strategies as st

    keyword = st.sampled_from(TOKENS[:34])  # the words, not the punctuation
    pool = st.sampled_from(["a", "b", "c", "d", "x", "deploy", "go", "svc", "db", "p", "q"])
    # Mostly names from a small pool (so that references often resolve and programs often
    # pass), sometimes fresh ones, rarely a keyword (a syntax error).
    name = st.one_of(
        pool,
        pool,
        pool,
        pool,
        pool,
        pool,
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(-[a-z0-9]{1,3})?", fullmatch=True),
        keyword,
    )
    string = st.one_of(
        st.sampled_from(['"echo {x}"', '"{host.address}:{port}"', '""', '"{"', '"}"']),
        st.text(max_size=20).map(lambda s: json.dumps(s)),
    )
    duration = st.sampled_from(["1s", "0s", "2.5s", "10m", "1h30m", "500ms", "99999999h", "0ms"])
    number = st.one_of(
        st.integers(0, 3).map(str),
        st.integers(0, 3).map(str),
        st.integers(-(10**30), 10**30).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )
    value = st.one_of(string, number, st.sampled_from(["true", "false", 'env("HOME")', 'env("")']))
    ptype = st.sampled_from(["str", "int", "float", "bool", "secret", "str", "int", "x"])

    @st.composite
    def component(draw: Any) -> str:
        cname = draw(name)
        params = draw(
            st.lists(st.tuples(name, ptype, st.none() | value), max_size=3).map(
                lambda ps: ", ".join(
                    f"{n}: {t}" + ("" if d is None else f" = {d}") for n, t, d in ps
                )
            )
        )
        places = draw(
            st.lists(
                name,
                min_size=draw(st.sampled_from([0, 1, 1, 2])),
                max_size=5,
                unique=draw(st.booleans()),
            )
        )
        marks = draw(st.lists(st.booleans(), min_size=len(places), max_size=len(places)))
        if marks and draw(st.sampled_from([True, True, True, False])):
            marks[0] = True
        body = []
        if places or draw(st.sampled_from([False] * 9 + [True])):
            body.append(
                "places "
                + ", ".join(p + ("*" if m else "") for p, m in zip(places, marks, strict=True))
            )
        pool = places or ["a", "b"]
        for _ in range(draw(st.integers(0, 5))):
            extras = draw(
                st.lists(
                    st.one_of(
                        st.builds(lambda s: f"shell {s}", string),
                        st.builds(lambda d: f"~{d}", duration),
                        st.builds(lambda d: f"timeout {d}", duration),
                        st.builds(lambda n: f"retries {n}", number),
                        st.builds(lambda n: f"behaviour {n}", name),
                        st.just("idempotent"),
                        st.builds(lambda s: f"ansible role {s}", string),
                        st.builds(lambda s: f"python {s}", string),
                    ),
                    max_size=3,
                )
            )
            body.append(
                f"transition {draw(name)}: {draw(st.sampled_from(pool) | name)} -> "
                f"{draw(st.sampled_from(pool) | name)} " + " ".join(extras)
            )
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["service", "data"]))
            if draw(st.booleans()):
                val = draw(st.none() | string | name.map(lambda t: f"output of {t}"))
                body.append(
                    f"provide {kind} {draw(name)}"
                    + ("" if val is None else f" = {val}")
                    + f" at {draw(st.sampled_from(pool) | name)}"
                )
            else:
                opt = " optional" if draw(st.booleans()) else ""
                body.append(
                    f"use {kind} {draw(name)}{opt} for {draw(st.sampled_from(pool) | name)}"
                )
        head = f"component {cname}" + (f"({params})" if params or draw(st.booleans()) else "")
        return head + " {\n    " + "\n    ".join(body) + "\n}\n"

    @st.composite
    def assembly(draw: Any, types: list[str]) -> str:
        lines = []
        instances = []
        for _ in range(draw(st.integers(0, 4))):
            inst = draw(name)
            instances.append(inst)
            args = draw(
                st.lists(st.tuples(name, value), max_size=2).map(
                    lambda a: ", ".join(f"{k} = {v}" for k, v in a)
                )
            )
            on = draw(st.none() | name | st.just("localhost"))
            lines.append(
                f"{inst} = {draw(st.sampled_from(types or ['X']) | name)}"
                + (f"({args})" if args else "")
                + ("" if on is None else f" on {on}")
            )
        for _ in range(draw(st.integers(0, 3))):
            pool = instances or ["a"]
            lines.append(
                f"connect {draw(st.sampled_from(pool))}.{draw(name)} -> "
                f"{draw(st.sampled_from(pool))}.{draw(name)}"
            )
        if draw(st.sampled_from([False] * 4 + [True])):
            lines.append(f"for s in sites {{ {draw(name)}[s] = {draw(name)} on s }}")
        return f"assembly {draw(name)} {{\n    " + "\n    ".join(lines) + "\n}\n"

    @st.composite
    def program(draw: Any) -> str:
        comps = draw(st.lists(component(), max_size=3))
        types = [c.split()[1].split("(")[0] for c in comps]
        text = "".join(comps)
        if draw(st.sampled_from([True, True, True, False])):
            text += draw(assembly(types))
        if draw(st.sampled_from([False] * 9 + [True])):
            text = (
                f'import "{draw(st.sampled_from(["lib.mad", "*.mad", "missing.mad", ""]))}"\n'
                + text
            )
        return text

    soup = st.lists(
        st.one_of(keyword, name, string, number, st.sampled_from(TOKENS)), max_size=40
    ).map(lambda parts: " ".join(parts))
    return program(), soup


def generated_cases(results: Results, count: int, seed: int, work: Path) -> None:
    """`count` cases from hypothesis: three quarters structured programs, a quarter soups."""
    from hypothesis import HealthCheck, Phase, given, settings

    program, soup = _strategies()
    directory = work / "generated"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "case.mad"

    def one(kind: str, text: str) -> None:
        data = text.encode("utf-8", errors="surrogatepass")
        path.write_bytes(data)
        results.record(kind, kind, data, lambda: load_and_plan(path))

    common = {
        "deadline": None,
        "database": None,
        "derandomize": True,
        "phases": [Phase.generate],
        "suppress_health_check": list(HealthCheck),
    }

    @settings(max_examples=count - count // 4, **common)  # type: ignore[arg-type]
    @given(program)
    def programs(text: str) -> None:
        one("generated", text)

    @settings(max_examples=count // 4, **common)  # type: ignore[arg-type]
    @given(soup)
    def soups(text: str) -> None:
        one("tokens", text)

    random.seed(seed)
    programs()
    soups()


# --- main -------------------------------------------------------------------------------------


def run(cases: int = 10_000, seed: int = 0, out: Path | None = None) -> dict[str, Any]:
    """Run about `cases` cases (a third generated, two thirds mutations); return the report."""
    results = Results(out=out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="madeus-fuzz-") as tmp:
        work = Path(tmp)
        generated = cases // 3
        generated_cases(results, generated, seed, work)
        mutation_cases(results, random.Random(seed), cases - results.cases, work)
    total = time.perf_counter() - started
    kinds = {
        name: {
            "cases": k.cases,
            "accepted": k.accepted,
            "rejected": k.rejected,
            "tracebacks": k.tracebacks,
            "unpositioned": k.unpositioned,
            "mean_ms": round(k.seconds / k.cases * 1000, 3) if k.cases else 0.0,
            "slowest_s": round(k.slowest_s, 3),
        }
        for name, k in sorted(results.kinds.items())
    }
    return {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "seed": seed,
        "seeds": len(seeds()),
        "cases": results.cases,
        "accepted": sum(k.accepted for k in results.kinds.values()),
        "rejected": sum(k.rejected for k in results.kinds.values()),
        "tracebacks": sum(k.tracebacks for k in results.kinds.values()),
        "unpositioned": sum(k.unpositioned for k in results.kinds.values()),
        "seconds": round(total, 2),
        "cases_per_second": round(results.cases / total, 1) if total else None,
        "kinds": kinds,
        "failures": results.failures[:50],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="about how many (10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--out", type=Path, help="save failing inputs in this directory")
    args = parser.parse_args(argv)
    report = run(args.cases, args.seed, args.out)
    report["command"] = "python bench/fuzz_frontend.py " + " ".join(argv or sys.argv[1:])
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0 if report["tracebacks"] == 0 and report["unpositioned"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
