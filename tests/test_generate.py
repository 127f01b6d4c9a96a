"""bench/generate.py: every kind parses, and holds what it says it holds."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from lark import Lark, Tree

from madeus.frontend import load_file
from madeus.plan import build_plan
from madeus.resolve import resolve

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ROOT / "bench" / "generate.py"


def _load_generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building classes
    spec.loader.exec_module(module)
    return module


generate = _load_generate()


@pytest.fixture(scope="module")
def parser() -> Lark:
    return Lark((ROOT / "dsl" / "madeus.lark").read_text(), parser="lalr")


def _text(kind: str, n: int, duration: float = 0.0) -> tuple[str, object]:
    out = io.StringIO()
    counts = generate.generate(kind, n, duration, out)
    return out.getvalue(), counts


def _shape(tree: Tree) -> dict[str, int]:
    """Count, from the parse tree, types, instances, transitions over instances, connections."""
    per_type: dict[str, int] = {}
    used: Counter[str] = Counter()
    connections = 0
    for item in tree.children:
        if item.data == "component":
            per_type[str(item.children[0])] = len(list(item.find_data("transition")))
        elif item.data == "assembly":
            for statement in item.children[1:]:
                if statement.data == "instance":
                    used[str(statement.children[1])] += 1
                elif statement.data == "connect":
                    connections += 1
    return {
        "components": len(per_type),
        "instances": sum(used.values()),
        "transitions": sum(per_type[t] * k for t, k in used.items()),
        "connections": connections,
    }


EXPECTED = {
    # kind: N -> (components, instances, transitions, connections)
    "chain": lambda n: (1, 1, n, 0),
    "fanout": lambda n: (2, n + 1, n + 1, n),
    "layers": lambda n: (1 if n == 1 else 2, n, 10 * n, n - -(-n // min(10, n))),
    "deadlock": lambda n: (1, n, 2 * n, n),
}


@pytest.mark.parametrize("kind", generate.KINDS)
@pytest.mark.parametrize("n", [1, 3, 10, 25, 100])
def test_counts_match_the_parse_tree(parser: Lark, kind: str, n: int) -> None:
    text, counts = _text(kind, n, 0.5)
    shape = _shape(parser.parse(text))
    expected = dict(
        zip(
            ("components", "instances", "transitions", "connections"),
            EXPECTED[kind](n),
            strict=True,
        )
    )
    assert shape == expected
    assert shape == {
        "components": counts.components,
        "instances": counts.instances,
        "transitions": counts.transitions,
        "connections": counts.connections,
    }


def test_every_transition_declares_the_duration(parser: Lark) -> None:
    text, _ = _text("layers", 20, 1.25)
    tree = parser.parse(text)
    durations = {str(t.children[0]) for t in tree.find_data("expected")}
    assert durations == {"1.25s"}


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0, "~0s"), (1, "~1s"), (1.5, "~1.5s"), (0.001, "~0.001s"), (120.25, "~120.25s")],
)
def test_format_duration(seconds: float, written: str) -> None:
    assert generate.format_duration(seconds) == written


def _connect_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.lstrip().startswith("connect ")]


def test_layers_connect_each_layer_to_the_one_below() -> None:
    text, _ = _text("layers", 30)
    connections = [line.split() for line in _connect_lines(text)]
    pairs = {(user.split(".")[0], provider.split(".")[0]) for _, user, _, provider in connections}
    # 10 layers of 3: c3..c5 use c0..c2, ..., c27..c29 use c24..c26.
    assert pairs == {(f"c{i}", f"c{i - 3}") for i in range(3, 30)}


def test_deadlock_is_a_ring() -> None:
    text, _ = _text("deadlock", 4)
    assert _connect_lines(text) == [
        "connect r0.dep -> r1.out",
        "connect r1.dep -> r2.out",
        "connect r2.dep -> r3.out",
        "connect r3.dep -> r0.out",
    ]


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown kind 'star'"):
        generate.generate("star", 3, 0.0, io.StringIO())
    with pytest.raises(ValueError, match="N must be at least 1, got 0"):
        generate.generate("chain", 0, 0.0, io.StringIO())
    with pytest.raises(ValueError, match="the duration must be a finite number >= 0, got -1"):
        generate.generate("chain", 3, -1.0, io.StringIO())


def test_command_line_writes_the_file(tmp_path: Path, parser: Lark) -> None:
    out = tmp_path / "fanout.mad"
    done = subprocess.run(
        [sys.executable, str(GENERATE), "fanout", "50", "--duration", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert _shape(parser.parse(out.read_text()))["connections"] == 50


def test_command_line_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATE), "chain", "0"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.endswith("generate.py: error: N must be at least 1\n")


def test_ten_thousand_components_is_fast(tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    with (tmp_path / "layers.mad").open("w") as out:
        counts = generate.generate("layers", 10_000, 1.0, out)
    assert time.perf_counter() - start < 3.0
    assert (counts.instances, counts.transitions, counts.connections) == (10_000, 100_000, 9_000)


# --- through the front end -------------------------------------------------------------------


@pytest.mark.parametrize("kind", generate.KINDS)
def test_front_end_loads_every_kind(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mad"
    with path.open("w") as out:
        counts = generate.generate(kind, 25, 1.0, out)
    module = load_file(path)
    assembly = module.assembly
    assert assembly is not None
    assert len(assembly.instances) == counts.instances
    assert len(assembly.connections) == counts.connections
    types = {c.name: c for c in module.components}
    assert sum(len(types[i.type].transitions) for i in assembly.instances) == counts.transitions
    assert all(t.duration == 1.0 for c in types.values() for t in c.transitions)


@pytest.mark.parametrize(
    ("kind", "n", "makespan"),
    [("chain", 40, 40.0), ("fanout", 40, 2.0), ("layers", 40, 100.0), ("layers", 7, 70.0)],
)
def test_plan_makespan(tmp_path: Path, kind: str, n: int, makespan: float) -> None:
    path = tmp_path / f"{kind}.mad"
    with path.open("w") as out:
        generate.generate(kind, n, 1.0, out)
    plan = build_plan(resolve(load_file(path).assembly))
    assert plan.predicted_makespan == pytest.approx(makespan)
