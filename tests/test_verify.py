"""The verifier (madeus/verify): exact diagnostics on fixtures, agreement with the explicit-state
oracle on random assemblies, the counterexamples, scaling, and what runs (or refuses to) after.

Fixtures: every `tests/data/verify/*.mad` gives exactly the diagnostics of the `.err` file
beside it (empty: sound). Paths are relative to the repository root, as the CLI shows them.
"""

from __future__ import annotations

import glob
import importlib
import io
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from test_oracle import Generated, assemblies, component, deployment, explore_small

from madeus.errors import render_all
from madeus.resolve import Deployment
from madeus.verify import analyze, problem_elements, verify
from madeus.verify.deploy import feasible_monolithic
from madeus.verify.oracle import explore, transitions_of
from madeus.verify.safety import check_safety

REPO = Path(__file__).resolve().parent.parent
FIXTURES = sorted(
    Path(p).relative_to(REPO).as_posix() for p in glob.glob(str(REPO / "tests/data/verify/*.mad"))
)
ASSEMBLIES = sorted(
    Path(p).relative_to(REPO).as_posix()
    for p in glob.glob(str(REPO / "assemblies/**/*.mad"), recursive=True)
    if re.search(r"^assembly ", Path(p).read_text(encoding="utf-8"), re.MULTILINE)
)


@pytest.fixture
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _load(path: str) -> Deployment:
    from madeus.frontend import load_file
    from madeus.resolve import resolve

    module = load_file(path)
    assert module.assembly is not None
    return resolve(module.assembly)


# --- fixtures: exact diagnostics --------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES)
def test_fixture_gives_exactly_its_err_file(path: str, at_repo_root: None) -> None:
    expected = Path(path).with_suffix(".err").read_text(encoding="utf-8")
    diagnostics = verify(_load(path))
    assert (render_all(diagnostics) + "\n" if diagnostics else "") == expected


@pytest.mark.parametrize("path", FIXTURES)
def test_madeus_check_reports_the_fixture(
    path: str, at_repo_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from madeus.cli import main

    expected = Path(path).with_suffix(".err").read_text(encoding="utf-8")
    code = main(["check", path])
    err = capsys.readouterr().err
    assert code == (1 if expected else 0)
    assert err.startswith(expected)


@pytest.mark.parametrize("path", ASSEMBLIES)
def test_every_shipped_assembly_is_sound(path: str, at_repo_root: None) -> None:
    from madeus.frontend import load_file

    assert verify(load_file(path)) == []


def test_the_three_component_cycle_built_with_the_model_api() -> None:
    service = component(
        "Service",
        "off*, installed, running",
        ["install: off -> installed", "start: installed -> running"],
        provides=[("svc", ["running"])],
        uses=[("dep", ["install"], [])],
    )
    d = deployment(
        [service],
        [("web", "Service"), ("api", "Service"), ("db", "Service")],
        ["web.dep -> api.svc", "api.dep -> db.svc", "db.dep -> web.svc"],
    )
    (diagnostic,) = verify(d)
    assert diagnostic.code == "deadlock"
    assert diagnostic.message == (
        'deployment can deadlock: transition "web.install" waits for "api.start", which waits '
        'for "api.install", which waits for "db.start", which waits for "db.install", which '
        'waits for "web.start", which waits for "web.install"'
    )
    assert [r.message for r in diagnostic.related] == [
        '"web.install" waits for use port "web.dep", bound to it here',
        '"web.dep" is connected to "api.svc" here',
        '"api.svc" is provided once place "api.running" is reached, when "api.start" ends',
        '"api.start" starts only once place "api.installed" is reached, when "api.install" ends',
        '"api.install" waits for use port "api.dep", bound to it here',
        '"api.dep" is connected to "db.svc" here',
        '"db.svc" is provided once place "db.running" is reached, when "db.start" ends',
        '"db.start" starts only once place "db.installed" is reached, when "db.install" ends',
        '"db.install" waits for use port "db.dep", bound to it here',
        '"db.dep" is connected to "web.svc" here',
        '"web.svc" is provided once place "web.running" is reached, when "web.start" ends',
        '"web.start" starts only once place "web.installed" is reached, when "web.install" ends',
    ]


def test_a_place_entered_by_several_transitions_names_them_all() -> None:
    join = component(
        "Join",
        "off*, ready, up",
        ["a: off -> ready", "b: off -> ready", "go: ready -> up"],
        provides=[("svc", ["up"])],
        uses=[("dep", ["a"], [])],
    )
    (diagnostic,) = verify(deployment([join], [("j", "Join")], ["j.dep -> j.svc"]))
    assert diagnostic.related[-1].message == (
        '"j.go" starts only once place "j.ready" is reached, when "j.a" and "j.b" have all ended'
    )


def test_the_api_functions_survive_importing_their_submodules() -> None:
    """`madeus.verify` and `madeus.resolve` are functions of the public API and submodules:
    importing the submodules must not rebind the package's attributes to them."""
    import importlib

    import madeus

    importlib.import_module("madeus.verify")
    importlib.import_module("madeus.resolve")
    from madeus.resolve import resolve as resolve_function
    from madeus.verify import verify as verify_function

    assert madeus.verify is verify_function
    assert madeus.resolve is resolve_function


def test_verify_takes_an_assembly_or_a_deployment() -> None:
    loop = component(
        "Loop", "off*, up", ["go: off -> up"], [("svc", ["up"])], [("own", ["go"], [])]
    )
    d = deployment([loop], [("x", "Loop")], ["x.own -> x.svc"])
    assert verify(d.assembly) == verify(d)
    assert [x.code for x in verify(d)] == ["deadlock"]


# --- the counterexamples drawn in the net -------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES)
def test_problem_elements_are_nodes_and_edges_of_the_net(path: str, at_repo_root: None) -> None:
    from madeus import net

    d = _load(path)
    nodes, edges = net.nodes_and_edges(net.compile(d))
    ids = {n.id for n in nodes}
    pairs = {(e.source, e.target) for e in edges}
    elements = problem_elements(d)
    assert bool(elements) == bool(verify(d))
    for element in elements:
        if isinstance(element, tuple):
            assert element in pairs, element
        else:
            assert element in ids, element


def test_the_cycle_is_highlighted_whole(at_repo_root: None) -> None:
    elements = problem_elements(_load("tests/data/verify/cycle2.mad"))
    assert {e for e in elements if isinstance(e, str)} == {
        "server:transition:configure",
        "server:use:auth",
        "auth:provide:auth",
        "auth:place:serving",
        "auth:dock-in:serve:serving",
        "auth:transition:serve",
        "auth:use:api",
        "server:provide:api",
        "server:place:serving",
        "server:dock-in:serve:serving",
        "server:transition:serve",
        "server:dock-out:configured:serve",
        "server:place:configured",
        "server:dock-in:configure:configured",
    }
    assert ("server:provide:api", "auth:use:api") in elements
    assert ("server:use:auth", "server:transition:configure") in elements


# --- agreement with the oracle ----------------------------------------------------------------

AGREEMENT = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@AGREEMENT
@given(assemblies())
def test_z3_and_the_oracle_agree(generated: Generated) -> None:
    """Deadlock yes/no, the transitions that never start, and the unsafe place bindings are
    the same for the verifier (z3 on the cyclic parts) and for the explicit exploration of
    every interleaving; so is the whole deployment given to z3 at once (no decomposition),
    and port safety with every query asked to z3 (no shortcut)."""
    d = generated.deployment
    oracle = explore_small(d)
    analysis = analyze(d)
    assert analysis.deploy.sound == (not oracle.deadlock)
    (ended,) = oracle.terminal_ended
    assert set(analysis.deploy.blocked_transitions()) == transitions_of(d) - ended
    assert feasible_monolithic(analysis.graph) == analysis.deploy.sound
    unsafe = {(u.instance, u.port, u.place) for u in analysis.safety.unsafe}
    assert unsafe == oracle.unsafe
    only_z3 = check_safety(analysis.graph, analysis.deploy.fired, shortcuts=False)
    assert {(u.instance, u.port, u.place) for u in only_z3.unsafe} == unsafe
    codes = {x.code for x in analysis.diagnostics}
    assert ("port-safety" in codes) == bool(unsafe)
    assert bool(codes - {"port-safety"}) == oracle.deadlock


@settings(AGREEMENT, max_examples=150)
@given(assemblies(max_instances=4, max_transitions=9))
def test_counterexamples_are_real(generated: Generated) -> None:
    """Each reported cycle is a cycle of waits of the net; each port-safety interleaving,
    replayed by the oracle with only its transitions allowed to start, reaches the unsafe
    configuration."""
    d = generated.deployment
    analysis = analyze(d)
    graph = analysis.graph
    blocked = set(analysis.deploy.blocked_transitions())
    for problem in analysis.deploy.problems:
        if problem.kind != "deadlock":
            continue
        nodes = problem.nodes
        assert graph.nodes[nodes[0]].kind == "transition"
        assert len(set(nodes)) == len(nodes)
        for i, n in enumerate(nodes):
            assert nodes[(i + 1) % len(nodes)] in graph.deps[n]
            if graph.nodes[n].kind == "transition":
                assert graph.nodes[n].label in blocked
    for unsafe in analysis.safety.unsafe:
        replay = explore(d, only=frozenset(unsafe.witness))
        assert (unsafe.instance, unsafe.port, unsafe.place) in replay.unsafe
        assert not set(unsafe.waiting) & set(unsafe.witness)


# --- what runs after: sound ones deploy, broken ones are refused -------------------------------


@settings(AGREEMENT, max_examples=60)
@given(assemblies())
def test_every_sound_assembly_deploys_with_a_valid_trace(generated: Generated) -> None:
    from madeus.engine import deploy_sync
    from madeus.engine.validate import validate

    d = generated.deployment
    if not analyze(d).deploy.sound:
        return
    result = deploy_sync(d, simulate=True, time_scale=0.001)
    assert validate(result.trace, result.plan) == []
    assert {e.id for e in result.trace.events} == transitions_of(d)


@settings(AGREEMENT, max_examples=20)
@given(generated=assemblies())
def test_every_broken_assembly_is_refused_before_anything_runs(
    generated: Generated, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from madeus.cli import main

    diagnostics = verify(generated.deployment)
    if not diagnostics:
        return
    where = tmp_path_factory.mktemp("refused")
    (where / "broken.mad").write_text(generated.to_mad(), encoding="utf-8")
    err = io.StringIO()
    previous = Path.cwd()
    try:
        os.chdir(where)
        expected = render_all(verify(_load("broken.mad")))
        with redirect_stderr(err):
            code = main(["deploy", "--simulate", "broken.mad"])
    finally:
        os.chdir(previous)
    assert code == 1
    assert not (where / ".madeus").exists()  # no run was started
    assert expected in err.getvalue()


# --- scale --------------------------------------------------------------------------------------


def _generated(kind: str, n: int, tmp_path: Path) -> Deployment:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        generate = importlib.import_module("generate")
    finally:
        sys.path.remove(str(REPO / "bench"))
    path = tmp_path / f"{kind}{n}.mad"
    with path.open("w", encoding="utf-8") as out:
        generate.generate(kind, n, 0.0, out)
    return _load(str(path))


@pytest.mark.parametrize(
    ("kind", "n", "budget"),
    [("layers", 1000, 5.0), ("deadlock", 1000, 5.0), ("layers", 10000, 60.0)],
)
def test_verification_scales(kind: str, n: int, budget: float, tmp_path: Path) -> None:
    d = _generated(kind, n, tmp_path)
    started = time.perf_counter()
    diagnostics = verify(d)
    elapsed = time.perf_counter() - started
    assert elapsed < budget
    if kind == "layers":
        assert diagnostics == []
    else:
        (deadlock,) = diagnostics
        assert deadlock.code == "deadlock"
        assert deadlock.message.endswith(
            f'... (a cycle of {2 * n} transitions), which waits for "r0.t0"'
        )


# --- imports ------------------------------------------------------------------------------------


def test_z3_is_not_imported_by_madeus_the_cli_or_the_verifier_package() -> None:
    code = (
        "import sys, madeus, madeus.cli, madeus.verify\n"
        "from madeus.cli import build_parser\n"
        "build_parser()\n"
        "assert 'z3' not in sys.modules, 'z3 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
