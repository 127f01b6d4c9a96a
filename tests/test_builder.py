"""The builder API: each valid `.mad` fixture has a builder twin giving an equal model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from madeus import net
from madeus.builder import (
    FamilyBuilder,
    ansible_playbook,
    ansible_role,
    ansible_tasks,
    assembly,
    component,
    env,
    output_of,
    python_call,
    shell,
    upload,
)
from madeus.errors import CheckError, render_all
from madeus.frontend import load_file, load_text
from madeus.model import (
    Assembly,
    ComponentType,
    EnvRef,
    InstanceRef,
    Module,
    PortRef,
    PythonAction,
    Target,
)
from madeus.resolve import resolve

REPO = Path(__file__).resolve().parents[1]
VALID = REPO / "tests" / "data" / "valid"


# --- the twins of tests/data/valid ------------------------------------------------------------


def mariadb() -> ComponentType:
    return (
        component("MariaDB")
        .param("version", "str", "10.11")
        .param("root_password", "secret", env("MARIADB_ROOT_PASSWORD"))
        .places("initiated*", "configured", "bootstrapped", "restarted", "registered", "deployed")
        .transition(
            "pull", "initiated", "configured", ansible_role("mariadb", "pull"), duration="23.5s"
        )
        .transition(
            "config", "initiated", "configured", ansible_role("mariadb", "config"), duration=5
        )
        .transition(
            "bootstrap",
            "configured",
            "bootstrapped",
            ansible_role("mariadb", tasks="bootstrap"),
            duration=22.4,
            timeout="10m",
            retries=2,
        )
        .transition(
            "restart",
            "bootstrapped",
            "restarted",
            ansible_role("mariadb", "restart"),
            duration=13.1,
        )
        .transition(
            "register",
            "restarted",
            "registered",
            ansible_role("mariadb", "register"),
            duration=10.2,
        )
        .transition(
            "check",
            "registered",
            "deployed",
            shell("mysqladmin ping -h {host.address}"),
            duration=1,
            idempotent=True,
        )
        .provide("service", "db", at="deployed", type="mysql")
        .provide("data", "address", at=["deployed"], value="{host.address}:3306")
        .use("service", "haproxy", for_="restart")
        .use("service", "common", for_=["register"], optional=True)
        .build()
    )


def keystone() -> ComponentType:
    return (
        component("Keystone")
        .param("admin_password", "secret")
        .param("workers", "int", 4)
        .places("initiated*", "configured", "db_ready", "deployed")
        .transition(
            "pull", "initiated", "configured", ansible_role("keystone", "pull"), duration=15.2
        )
        .transition(
            "config", "initiated", "configured", ansible_role("keystone", "config"), duration=4.1
        )
        .transition(
            "create_db",
            "configured",
            "db_ready",
            ansible_role("keystone", "bootstrap"),
            duration=12,
        )
        .transition(
            "restart", "db_ready", "deployed", ansible_role("keystone", "restart"), duration=9.5
        )
        .provide("service", "api", at="deployed", type="identity")
        .use("service", "db", for_="create_db", type="mysql")
        .use("data", "db_address", for_="create_db")
        .build()
    )


def glance() -> ComponentType:
    return (
        component("Glance")
        .places("initiated*", "installed", "running")
        .transition(
            "install",
            "initiated",
            "installed",
            ansible_playbook("playbooks/glance.yml"),
            duration=20,
        )
        .transition(
            "start", "installed", "running", shell("systemctl start glance-api"), duration=2
        )
        .provide("service", "images", at="running")
        .use("service", "identity", for_="start", type="identity")
        .build()
    )


def nova_compute() -> ComponentType:
    return (
        component("NovaCompute")
        .param("cpu_ratio", "float", 16.0)
        .param("debug", "bool", False)
        .place("initiated", initial=True)
        .place("ready")
        .transition(
            "setup", "initiated", "ready", ansible_tasks("tasks/nova-compute.yml"), duration=45
        )
        .provide("service", "compute", at="ready")
        .use("service", "identity", for_="setup", type="identity")
        .build()
    )


def haproxy() -> ComponentType:
    return (
        component("HAProxy")
        .places("initiated*", "deployed")
        .transition("deploy", "initiated", "deployed", ansible_role("haproxy"), duration="8s")
        .provide("service", "frontend", at="deployed")
        .build()
    )


def openstack() -> Assembly:
    def glances(f: FamilyBuilder) -> None:
        f.instance("glance[site]", "Glance", on=("control", "site"), serial="50%")
        f.connect("glance[site].identity", "keystone.api")

    return (
        assembly("openstack")
        .components(glance(), keystone(), mariadb(), nova_compute(), haproxy())
        .instance("haproxy", "HAProxy", on="control")
        .instance("mariadb", "MariaDB", on="control", version="10.5")
        .instance(
            "keystone",
            "Keystone",
            on="control",
            admin_password=env("KEYSTONE_ADMIN_PASSWORD"),
            workers=8,
            serial=1,
        )
        .connect("mariadb.haproxy", "haproxy.frontend")
        .connect("keystone.db", "mariadb.db")
        .connect("keystone.db_address", "mariadb.address")
        .family("site", over="sites", body=glances)
        .family(
            "h",
            over="hosts",
            group="compute",
            body=lambda f: f.instance(
                "nova[h]", "NovaCompute", on="h", cpu_ratio=4, debug=True
            ).connect("nova[h].identity", "keystone.api"),
        )
        .build()
    )


def everything() -> ComponentType:
    return (
        component("Everything")
        .param("name", "str", "demo")
        .param("count", "int", -3)
        .param("ratio", "float", 0.25)
        .param("enabled", "bool", True)
        .param("token", "secret", env("TOKEN"))
        .param("label", "str")
        .places("start*", "other*", "middle", "left", "right", "done")
        .places("stopped")
        .transition(
            "fetch",
            "start",
            "middle",
            shell('curl -fsS {{}} "https://example.org/{name}"\t# tab'),
            duration="1m30s",
            timeout="2h",
            retries=3,
            idempotent=True,
        )
        .transition(
            "prepare", "other", "middle", python_call("deploy.steps:prepare"), duration="500ms"
        )
        .transition(
            "go_left",
            "middle",
            "left",
            upload("files/{name}.conf", "/etc/{name}.conf"),
            duration=0.25,
        )
        .transition("go_right", "middle", "right", ansible_playbook("site.yml"))
        .transition(
            "finish", "left", "done", ansible_tasks("tasks/finish.yml"), duration="1h1m1s1ms"
        )
        .transition(
            "finish2",
            "right",
            "done",
            shell('set -e\necho "{label}" > /tmp/label\n  echo indented\n'),
        )
        .transition("stop", "done", "stopped", shell("systemctl stop demo"), behaviour="stop")
        .transition("restart", "stopped", "done", shell("systemctl start demo"), behaviour="stop")
        .provide("service", "api", at=["left", "right", "done"], type="http")
        .provide("data", "url", at="done", value="http://{host.address}:{count}/{host.vars.path}")
        .provide("data", "secret_out", at="done", value=output_of("fetch"))
        .use("service", "backend", for_=["fetch", "middle"], type="http", optional=True)
        .use("data", "peer_url", for_="go_right")
        .build()
    )


def other() -> ComponentType:
    return component("Other").places("a*", "b").transition("t", "a", "b").build()


TWINS: dict[str, Callable[[], Module]] = {
    "components_only.mad": lambda: Module((mariadb(), glance(), other()), None),
    "everything.mad": lambda: Module((everything(),), None),
    "minimal.mad": lambda: Module((component("Nothing").places("only*").build(),), None),
    "openstack.mad": lambda: Module(openstack().components, openstack()),
}


def test_every_valid_fixture_has_a_twin() -> None:
    assert sorted(TWINS) == sorted(p.name for p in VALID.glob("*.mad"))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_builder_twin_equals_the_loaded_file(name: str) -> None:
    assert load_file(VALID / name) == TWINS[name]()


@pytest.mark.parametrize("name", sorted(TWINS))
def test_builder_twin_compiles_to_the_same_net(name: str) -> None:
    loaded, built = load_file(VALID / name).assembly, TWINS[name]().assembly
    if loaded is None or built is None:
        assert loaded is built is None
        return
    assert net.nodes_and_edges(net.compile(resolve(loaded))) == net.nodes_and_edges(
        net.compile(resolve(built))
    )


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("mariadb", mariadb),
        ("keystone", keystone),
        ("glance", glance),
        ("nova_compute", nova_compute),
    ],
)
def test_builder_twins_of_the_library(name: str, build: Callable[[], ComponentType]) -> None:
    assert load_file(VALID / "lib" / f"{name}.mad").components == (build(),)


# --- details ----------------------------------------------------------------------------------


def test_references_and_targets() -> None:
    built = (
        assembly("a")
        .components(component("A").places("a*").provide("service", "p", at="a").build())
        .components(
            [
                component("B")
                .places("a*", "b")
                .transition("t", "a", "b")
                .use("service", "q", for_="t")
                .build()
            ]
        )
        .family(
            "site",
            body=lambda f: (
                f.instance("x[site]", "A", on="site")
                .instance("y[site]", "B", on=(None, "site"))
                .connect("y[site].q", "x[site].p")
            ),
        )
        .build()
    )
    (family,) = built.families
    assert family.instances[0].target == Target(None, "site")
    assert family.instances[1].target == Target(None, "site")
    assert family.connections[0].user == PortRef(InstanceRef("y", "site"), "q")
    assert [c.name for c in built.components] == ["A", "B"]


def test_parameters_named_like_keywords_go_in_args() -> None:
    c = component("A").param("on", "bool", False).param("args", "int", 0).places("a*").build()
    built = assembly("x").components(c).instance("a", "A", args={"on": True, "args": 1}).build()
    assert built.instances[0].args == (("on", True), ("args", 1))


def test_python_call_accepts_a_function() -> None:
    assert python_call(render_all) == PythonAction("madeus.errors:render_all")
    assert env("X") == EnvRef("X")


def test_build_reports_every_problem() -> None:
    with pytest.raises(CheckError) as caught:
        (
            component("A")
            .places("a", "b")
            .transition("t", "a", "c", shell("echo {x}"))
            .use("service", "s", for_="nothing")
            .build()
        )
    assert render_all(caught.value.diagnostics) == "\n".join(
        [
            'madeus: error: component "A" has no initial place (mark one with "*", as in '
            '"places a*")',
            'madeus: error: unknown place "c" in transition "t" of component "A"',
            'madeus: error: unknown placeholder "{x}" in transition "t" of component "A" (not a '
            "parameter or a data use port)",
            'madeus: error: unknown transition or place "nothing" in use port "s" of component "A"',
        ]
    )


def test_assembly_build_checks_instances_and_connections() -> None:
    a = component("A").param("n", "int").places("a*").build()
    with pytest.raises(CheckError) as caught:
        assembly("x").components(a).instance("a", "A", n="1").connect("a.p", "b.q").build()
    assert [d.message for d in caught.value.diagnostics] == [
        'parameter "n" of instance "a" should be an int, not the string "1"',
        'unknown port "p" of instance "a" (component "A")',
        'unknown instance "b"',
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: component("A").transition("t", "a", "b", duration="5 min"),
            '"5 min" is not a duration (such as 30s, 1m30s or 500ms)',
        ),
        (
            lambda: assembly("x").instance("a b", "A"),
            '"a b" is not an instance name such as "x" or "x[site]"',
        ),
        (
            lambda: assembly("x").connect("a", "b.p"),
            '"a" is not a port such as "x.port" or "x[site].port"',
        ),
    ],
)
def test_malformed_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(CheckError) as caught:
        call()
    assert [d.message for d in caught.value.diagnostics] == [message]


def test_ten_thousand_components_build_in_linear_time() -> None:
    def build(n: int) -> float:
        start = time.perf_counter()
        types = []
        asm = assembly("big")
        for i in range(n):
            c = (
                component(f"C{i}")
                .param("v", "str", "1")
                .places("p0*", *(f"p{j}" for j in range(1, 11)))
            )
            for j in range(10):
                c.transition(f"t{j}", f"p{j}", f"p{j + 1}", shell("echo {v}"), duration=1.5)
            c.provide("service", "s", at="p10").use("service", "u", for_="t3", optional=True)
            types.append(c.build())
            asm.instance(f"c{i}", f"C{i}", on="control")
            if i:
                asm.connect(f"c{i}.u", f"c{i - 1}.s")
        asm.components(types).build()
        return time.perf_counter() - start

    small, large = build(1000), build(10_000)
    # Linear: ten times the size in well under a hundred times the time.
    assert large < 30 * small + 1.0


def test_the_examples_of_the_api_guide_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## Building models in Python", 1)[1].split("\n## ", 1)[0]
    namespace: dict[str, object] = {}
    for block in section.split("```python\n")[1:]:
        exec(block.split("```", 1)[0], namespace)
    mad = section.split("```mad\n", 1)[1].split("```", 1)[0]
    built = namespace["openstack"]
    assert isinstance(built, Assembly)
    assert load_text(mad) == Module(built.components, built)
    assert capsys.readouterr().out.startswith("madeus: error: component")
