"""Graphviz drawings: the DOT text of each view, rendering, highlighting, secrets."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from madeus.errors import MadeusError
from madeus.inventory import inventory_from_dict
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    EnvRef,
    Family,
    Instance,
    InstanceRef,
    Param,
    Place,
    PortRef,
    ProvidePort,
    Target,
    Transition,
    UsePort,
)
from madeus.plan import build_plan
from madeus.resolve import Deployment, resolve
from madeus.viz import draw, to_dot
from madeus.viz.graphs import NO_DOT_MESSAGE

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot program is not installed")

SECRET = "hunter2-very-secret"

DB = ComponentType(
    "Database",
    params=(Param("password", "secret"), Param("version", "str", "10.11")),
    places=(Place("off", True), Place("configured"), Place("running")),
    transitions=(
        Transition("pull", "off", "configured", duration=3.0),
        Transition("config", "off", "configured", duration=1.0),
        Transition("start", "configured", "running", duration=2.0),
        Transition("stop", "running", "configured", duration=0.5, behaviour="stop"),
    ),
    provides=(ProvidePort("db", "service", ("running",)),),
)
APP = ComponentType(
    "App",
    places=(Place("idle", True), Place("up")),
    transitions=(Transition("migrate", "idle", "up", duration=4.0),),
    uses=(UsePort("db", "service", ("migrate",)), UsePort("cache", "service", optional=True)),
    provides=(ProvidePort("url", "data", ("up",), value="http://{host.address}"),),
)


def deployment(inventory: dict[str, object] | None = None) -> Deployment:
    assembly = Assembly(
        "shop",
        (DB, APP),
        (
            Instance(
                InstanceRef("db"),
                "Database",
                Target("control"),
                (("password", SECRET), ("version", "11.4")),
            ),
        ),
        (),
        (
            Family(
                "s",
                "sites",
                instances=(Instance(InstanceRef("app", "s"), "App", Target(None, "s")),),
                connections=(
                    Connection(
                        PortRef(InstanceRef("app", "s"), "db"), PortRef(InstanceRef("db"), "db")
                    ),
                ),
            ),
        ),
    )
    inv = inventory_from_dict(inventory) if inventory is not None else None
    return resolve(assembly, inv)


TWO_SITES: dict[str, object] = {
    "all": {
        "children": {
            "control": {"hosts": {"c1": {}}},
            "edge": {"hosts": {"e1": {}, "e2": {}}},
        }
    },
    "sites": {"lyon": ["control", "e1"], "nantes": ["e2"]},
}


def _edges(dot: str) -> set[tuple[str, str]]:
    pairs = re.findall(r'^\s*("[^"]*")(?::"[^"]*":\w+)? -> ("[^"]*")', dot, re.MULTILINE)
    return {(a.strip('"'), b.strip('"')) for a, b in pairs}


def _nodes(dot: str) -> set[str]:
    return set(re.findall(r'^\s*"([^"]*)" \[', dot, re.MULTILINE))


def _line(dot: str, node: str) -> str:
    return next(line.strip() for line in dot.splitlines() if line.strip().startswith(f'"{node}" ['))


def _is_red(line: str) -> bool:
    return all(a in line for a in ('color="#d62728"', 'penwidth="2"', 'fontcolor="#d62728"'))


def _valid_dot(text: str) -> None:
    if HAS_DOT:
        done = subprocess.run(["dot", "-Tcanon"], input=text.encode(), capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        assert b"Warning" not in done.stderr, done.stderr.decode()


# --- assembly view --------------------------------------------------------------------------


def test_assembly_view_local() -> None:
    dot = to_dot(deployment(), "assembly")
    _valid_dot(dot)
    assert dot.startswith('digraph "shop" {')
    assert "rankdir=" + '"LR"' in dot
    assert _nodes(dot) == {"db", "app[local]"}
    # One edge per connection, from the provide cell to the use cell, labelled with the port.
    assert '"db":"provide_db":e -> "app[local]":"use_db":w [label="db"' in dot
    # Grouped by host group: the target's name, or the hosts when it names a family variable.
    assert 'label="control (localhost)";' in dot
    assert 'label="localhost";' in dot
    assert "site " not in dot  # the local inventory has no sites worth drawing


def test_assembly_view_groups_by_site_then_host_group() -> None:
    dot = to_dot(deployment(TWO_SITES), "assembly")
    _valid_dot(dot)
    assert _nodes(dot) == {"db", "app[lyon]", "app[nantes]"}
    labels = re.findall(r'label="([^"]*)";', dot)
    assert labels[1:] == ["site lyon", "control (c1)", "c1, e1", "site nantes", "e2"]
    assert _edges(dot) == {("db", "app[lyon]"), ("db", "app[nantes]")}


def test_secret_values_never_shown() -> None:
    dep = deployment()
    for view in ("assembly", "net", "plan", "component:Database"):
        assert SECRET not in to_dot(dep, view)
    dot = to_dot(dep, "assembly")
    assert "password = ****" in dot
    assert "version = &quot;11.4&quot;" in dot


def test_env_parameters_are_shown_by_name() -> None:
    assembly = Assembly(
        "env",
        (DB,),
        (Instance(InstanceRef("db"), "Database", None, (("version", EnvRef("DB_VERSION")),)),),
    )
    assert "version = env(DB_VERSION)" in to_dot(resolve(assembly), "assembly")


# --- net view -------------------------------------------------------------------------------


def test_net_view_nodes_and_edges() -> None:
    dot = to_dot(deployment(), "net")
    _valid_dot(dot)
    from madeus import net

    nodes, edges = net.nodes_and_edges(net.compile(deployment()))
    # Same node ids as the Petri net, and one drawn edge per net edge.
    assert _nodes(dot) == {n.id for n in nodes}
    assert _edges(dot) == {(e.source, e.target) for e in edges}
    assert 'shape="doublecircle"' in _line(dot, "db:place:off")
    assert 'shape="circle"' in _line(dot, "db:place:running")
    assert 'shape="point"' in _line(dot, "db:dock-out:off:pull")
    assert _line(dot, "db:transition:pull").startswith(
        '"db:transition:pull" [shape="box", style="rounded,filled"'
    )
    assert 'label="pull\\n3.0 s"' in _line(dot, "db:transition:pull")
    # Other behaviours: another colour and the behaviour's name.
    assert 'label="stop\\n0.5 s\\n[stop]"' in _line(dot, "db:transition:stop")
    assert 'shape="rarrow"' in _line(dot, "db:provide:db")
    assert 'shape="larrow"' in _line(dot, "app[local]:use:db")
    assert 'label="cache ?"' in _line(dot, "app[local]:use:cache")  # optional
    assert 'style="filled,dashed"' in _line(dot, "app[local]:provide:url")  # data port
    assert "subgraph cluster_" in dot
    assert 'label="db : Database";' in dot


def test_net_view_highlight() -> None:
    highlight = frozenset(
        {"db:transition:start", ("db:provide:db", "app[local]:use:db"), "app[local]:place:up"}
    )
    dot = to_dot(deployment(), "net", highlight=highlight)
    _valid_dot(dot)
    assert _is_red(_line(dot, "db:transition:start"))
    assert _is_red(_line(dot, "app[local]:place:up"))
    assert not _is_red(_line(dot, "db:transition:pull"))
    connection = next(
        line for line in dot.splitlines() if '"db:provide:db" -> "app[local]:use:db"' in line
    )
    assert _is_red(connection)
    # The clusters of touched instances are outlined in red.
    assert dot.count('color="#d62728";') == 2


# --- plan view ------------------------------------------------------------------------------


def test_plan_view() -> None:
    dep = deployment()
    plan = build_plan(dep)
    assert list(plan.critical_path) == ["db.pull", "db.start", "app[local].migrate"]
    dot = to_dot(dep, "plan", plan=plan)
    _valid_dot(dot)
    assert _nodes(dot) == {"db.pull", "db.config", "db.start", "app[local].migrate"}
    assert _edges(dot) == {
        ("db.pull", "db.start"),
        ("db.config", "db.start"),
        ("db.start", "app[local].migrate"),
    }
    assert 'label="pull\\n3.0 s\\n0.0 → 3.0 s"' in _line(dot, "db.pull")
    assert 'label="config\\n1.0 s"' in _line(dot, "db.config")
    hot = next(line for line in dot.splitlines() if '"db.pull" -> "db.start"' in line)
    assert 'color="#d62728", penwidth="2.5"' in hot
    cold = next(line for line in dot.splitlines() if '"db.config" -> "db.start"' in line)
    assert 'color="#555555"' in cold
    assert "predicted makespan 9.0 s (sequential 10.0 s)" in dot
    assert to_dot(dep, "plan") == dot  # the plan is built when not given


def test_plan_view_after_any_is_dashed() -> None:
    provider = ComponentType(
        "P",
        places=(Place("i", True), Place("x"), Place("y")),
        transitions=(Transition("a", "i", "x", duration=1.0), Transition("b", "i", "y")),
        provides=(ProvidePort("svc", "service", ("x", "y")),),
    )
    user = ComponentType(
        "U",
        places=(Place("i", True), Place("e")),
        transitions=(Transition("go", "i", "e", duration=1.0),),
        uses=(UsePort("svc", "service", ("go",)),),
    )
    assembly = Assembly(
        "any",
        (provider, user),
        (Instance(InstanceRef("p"), "P"), Instance(InstanceRef("u"), "U")),
        (Connection(PortRef(InstanceRef("u"), "svc"), PortRef(InstanceRef("p"), "svc")),),
    )
    dot = to_dot(resolve(assembly), "plan")
    _valid_dot(dot)
    for src in ("p.a", "p.b"):
        line = next(x for x in dot.splitlines() if f'"{src}" -> "u.go"' in x)
        assert 'style="dashed"' in line


# --- component view -------------------------------------------------------------------------


def test_component_view() -> None:
    dot = to_dot(deployment(), "component:Database")
    _valid_dot(dot)
    assert _nodes(dot) == {
        "Database:place:off",
        "Database:place:configured",
        "Database:place:running",
        "Database:transition:pull",
        "Database:transition:config",
        "Database:transition:start",
        "Database:transition:stop",
        "Database:provide:db",
        "legend:deploy",
        "legend:stop",
    }
    # No docks in the component view: place -> transition -> place.
    assert ("Database:place:off", "Database:transition:pull") in _edges(dot)
    assert ("Database:transition:stop", "Database:place:configured") in _edges(dot)
    deploy_fill = re.search(r'fillcolor="([^"]*)"', _line(dot, "Database:transition:pull"))
    stop_fill = re.search(r'fillcolor="([^"]*)"', _line(dot, "Database:transition:stop"))
    assert deploy_fill and stop_fill and deploy_fill.group(1) != stop_fill.group(1)
    assert "behaviours: deploy, stop" in dot


def test_unknown_component() -> None:
    with pytest.raises(MadeusError) as caught:
        to_dot(deployment(), "component:Nope")
    assert [d.message for d in caught.value.diagnostics] == [
        'no component type "Nope" in assembly shop (component types: App, Database)'
    ]


def test_unknown_view() -> None:
    with pytest.raises(MadeusError) as caught:
        to_dot(deployment(), "sideways")
    assert [d.message for d in caught.value.diagnostics] == [
        "unknown view 'sideways': choose assembly, net, plan or component:NAME"
    ]


# --- files ----------------------------------------------------------------------------------


VIEWS = ("assembly", "net", "plan", "component:App")


@pytest.mark.parametrize("view", VIEWS)
def test_draw_dot(tmp_path: Path, view: str) -> None:
    out = draw(deployment(), view, tmp_path / "g.dot")
    assert out.read_text() == to_dot(deployment(), view)


@needs_dot
@pytest.mark.parametrize("view", VIEWS)
def test_draw_svg_and_png(tmp_path: Path, view: str) -> None:
    svg = draw(deployment(TWO_SITES), view, tmp_path / "g.svg").read_text()
    assert "<svg" in svg
    assert SECRET not in svg
    png = draw(deployment(TWO_SITES), view, tmp_path / "g.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_dot_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for suffix in ("svg", "png"):
        with pytest.raises(MadeusError) as caught:
            draw(deployment(), "net", tmp_path / f"g.{suffix}")
        assert [d.message for d in caught.value.diagnostics] == [NO_DOT_MESSAGE]
        assert not (tmp_path / f"g.{suffix}").exists()
    assert NO_DOT_MESSAGE == (
        "the `dot` program (graphviz) is not installed; write .dot instead or install graphviz"
    )
    assert draw(deployment(), "net", tmp_path / "g.dot").exists()


def test_bad_output(tmp_path: Path) -> None:
    with pytest.raises(MadeusError) as caught:
        draw(deployment(), "net", tmp_path / "g.txt")
    assert [d.message for d in caught.value.diagnostics] == [
        "cannot draw to this file: the output must end in .svg, .png or .dot"
    ]
    with pytest.raises(MadeusError) as caught:
        draw(deployment(), "net", tmp_path / "missing" / "g.dot")
    assert [d.message for d in caught.value.diagnostics] == [
        "cannot write: No such file or directory"
    ]


def test_quoting_of_odd_names() -> None:
    odd = ComponentType(
        'Odd"Type',
        places=(Place("a\\b", True), Place("c")),
        transitions=(Transition("t", "a\\b", "c"),),
    )
    dot = to_dot(resolve(Assembly("q", (odd,), (Instance(InstanceRef("o"), 'Odd"Type'),))), "net")
    _valid_dot(dot)
    assert '"o:place:a\\\\b"' in dot
    assert 'label="o : Odd\\"Type";' in dot


def test_assembly_view_highlight() -> None:
    highlight: frozenset[str | tuple[str, str]] = frozenset(
        {"db:provide:db", ("db:provide:db", "app[local]:use:db")}
    )
    dot = to_dot(deployment(), "assembly", highlight=highlight)
    _valid_dot(dot)
    db = _line(dot, "db")
    assert '<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="2" COLOR="#d62728">' in db
    assert '<TD PORT="provide_db" BGCOLOR="#d9f2d9" ALIGN="RIGHT" COLOR="#d62728">' in db
    assert 'COLOR="#d62728"' not in _line(dot, "app[local]")
    edge = next(line for line in dot.splitlines() if '"db":"provide_db":e ->' in line)
    assert _is_red(edge)


def test_plan_view_highlight() -> None:
    # db.config is the one transition off the critical path (drawn red anyway).
    assert not _is_red(_line(to_dot(deployment(), "plan"), "db.config"))
    dot = to_dot(deployment(), "plan", highlight=frozenset({"db:transition:config"}))
    assert _is_red(_line(dot, "db.config"))
    dot = to_dot(deployment(), "plan", highlight=frozenset({"db.config"}))
    assert _is_red(_line(dot, "db.config"))
