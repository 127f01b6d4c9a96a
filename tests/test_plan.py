"""The plan: `after` / `after_any`, predicted start times, makespan and critical path, on
examples computed by hand, and on the OpenStack reference net (measured in the Madeus journal
paper)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from madeus.errors import Diagnostic
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    Instance,
    InstanceRef,
    Place,
    PortRef,
    ProvidePort,
    Target,
    Transition,
    UsePort,
)
from madeus.plan import Plan, PlanError, PlanTransition, build_plan, schedule
from madeus.resolve import resolve
from madeus.source import Span

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "openstack-madeus-net.json"  # the paper's measured net
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"


REFERENCE_CRITICAL_PATH = [
    "mariadb.pull",
    "mariadb.bootstrap",
    "mariadb.restart",
    "mariadb.register",
    "mariadb.check",
    "nova.create_db",
    "nova.upgrade_db",
    "nova.restart",
    "nova.cell_setup",
]


# --- building small assemblies --------------------------------------------------------------

TransitionSpec = tuple[str, str, str, float]  # name, source, target, duration


def component(
    name: str,
    places: str,
    transitions: Sequence[TransitionSpec],
    provides: Mapping[str, Sequence[str]] | None = None,
    uses: Mapping[str, Sequence[str]] | None = None,
    optional: Sequence[str] = (),
    spans: bool = False,
) -> ComponentType:
    """`places` like "a* b c" (a star marks an initial place)."""
    return ComponentType(
        name,
        places=tuple(Place(p.rstrip("*"), p.endswith("*")) for p in places.split()),
        transitions=tuple(
            Transition(
                t,
                s,
                d,
                duration=dur,
                **({"span": Span(f"{name}.mad", i + 1, 5, i + 1, 9)} if spans else {}),
            )
            for i, (t, s, d, dur) in enumerate(transitions)
        ),
        provides=tuple(
            ProvidePort(port, "service", tuple(at)) for port, at in (provides or {}).items()
        ),
        uses=tuple(
            UsePort(port, "service", tuple(ts), optional=port in optional)
            for port, ts in (uses or {}).items()
        ),
    )


def assembly(
    components: Sequence[ComponentType],
    instances: Mapping[str, str],
    connections: Sequence[str] = (),
    name: str = "test",
) -> Assembly:
    """`instances`: instance name -> component name; `connections`: "user.port provider.port"."""

    def ref(text: str) -> PortRef:
        inst, port = text.split(".")
        return PortRef(InstanceRef(inst), port)

    return Assembly(
        name,
        tuple(components),
        tuple(Instance(InstanceRef(i), c) for i, c in instances.items()),
        tuple(Connection(ref(c.split()[0]), ref(c.split()[1])) for c in connections),
    )


def row(
    tid: str,
    duration: float,
    after: Sequence[str] = (),
    after_any: Sequence[Sequence[str]] = (),
    hosts: Sequence[str] = ("localhost",),
    after_one_of: Sequence[Sequence[Sequence[str]]] = (),
) -> dict[str, Any]:
    instance, name = tid.split(".")
    return {
        "id": tid,
        "instance": instance,
        "name": name,
        "behaviour": "deploy",
        "duration": duration,
        "hosts": list(hosts),
        "after": list(after),
        "after_any": [list(g) for g in after_any],
        "after_one_of": [[list(a) for a in entry] for entry in after_one_of],
    }


def plan_of(a: Assembly) -> Plan:
    return build_plan(resolve(a))


# --- hand-computed examples -----------------------------------------------------------------


def test_chain() -> None:
    chain = component("C", "i* p q r", [("a", "i", "p", 1), ("b", "p", "q", 2), ("c", "q", "r", 3)])
    plan = plan_of(assembly([chain], {"x": "C"}, name="chain"))
    assert plan.to_json() == {
        "assembly": "chain",
        "transitions": [
            row("x.a", 1.0),
            row("x.b", 2.0, after=["x.a"]),
            row("x.c", 3.0, after=["x.b"]),
        ],
        "predicted_makespan": 6.0,
        "critical_path": ["x.a", "x.b", "x.c"],
    }
    assert dict(plan.start) == {"x.a": 0.0, "x.b": 1.0, "x.c": 3.0}
    assert dict(plan.remaining) == {"x.a": 6.0, "x.b": 5.0, "x.c": 3.0}
    assert plan.transition("x.b").after == ("x.a",)


def test_parallel_transitions_join_at_a_place() -> None:
    par = component("P", "i* j k", [("a", "i", "j", 1), ("b", "i", "j", 4), ("c", "j", "k", 2)])
    plan = plan_of(assembly([par], {"x": "P"}, name="par"))
    assert plan.to_json() == {
        "assembly": "par",
        "transitions": [
            row("x.a", 1.0),
            row("x.b", 4.0),
            row("x.c", 2.0, after=["x.a", "x.b"]),
        ],
        "predicted_makespan": 6.0,
        "critical_path": ["x.b", "x.c"],
    }
    assert dict(plan.start) == {"x.a": 0.0, "x.b": 0.0, "x.c": 4.0}


def test_provide_group_of_several_places_gives_after_one_of() -> None:
    # The group {x, y} is provided once x is reached (p1 ended) OR y is reached (p2 AND p3
    # ended): one entry, two alternatives.
    provider = component(
        "Prov",
        "i* x y",
        [("p1", "i", "x", 2), ("p2", "i", "y", 3), ("p3", "i", "y", 4)],
        provides={"svc": ["x", "y"]},
    )
    user = component("User", "s* e", [("go", "s", "e", 10)], uses={"svc": ["go"]})
    plan = plan_of(
        assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"], name="group")
    )
    assert plan.to_json() == {
        "assembly": "group",
        "transitions": [
            row("p.p1", 2.0),
            row("p.p2", 3.0),
            row("p.p3", 4.0),
            row("u.go", 10.0, after_one_of=[[["p.p1"], ["p.p2", "p.p3"]]]),
        ],
        "predicted_makespan": 12.0,
        "critical_path": ["p.p1", "u.go"],
    }
    assert plan.start["u.go"] == 2.0


def test_a_provide_group_of_fifty_places_stays_linear() -> None:
    # 50 places entered by 3 transitions each: 3^50 clauses as an AND of ORs; as
    # alternatives, one entry of 50 alternatives of 3. Place k is reached at 3 + k.
    places = [f"x{k}" for k in range(50)]
    transitions = [(f"t{k}_{j}", "i", f"x{k}", 1 + k + j) for k in range(50) for j in range(3)]
    provider = component("Prov", "i* " + " ".join(places), transitions, provides={"svc": places})
    user = component("User", "s* e", [("go", "s", "e", 1)], uses={"svc": ["go"]})
    plan = plan_of(
        assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"], name="big")
    )
    go = plan.transition("u.go")
    assert go.after == () and go.after_any == ()
    (entry,) = go.after_one_of
    assert len(entry) == 50 and {len(alternative) for alternative in entry} == {3}
    assert plan.start["u.go"] == 3.0
    assert plan.predicted_makespan == 52.0  # t49_2: the provider goes on after providing
    assert Plan.from_json(plan.to_json()) == plan


def test_plans_in_the_older_after_any_form_are_read() -> None:
    data = {
        "assembly": "old",
        "transitions": [
            row("p.a", 2.0),
            row("p.b", 5.0),
            row("u.go", 1.0, after_any=[["p.a", "p.b"]]),
        ],
    }
    plan = Plan.from_json(data)
    assert plan.start["u.go"] == 2.0
    assert plan.transition("u.go").alternatives() == ((("p.a",), ("p.b",)),)


def test_an_alternative_waited_for_in_full_needs_no_entry() -> None:
    # `go` waits for `p.a` through a single-place port already: the group port whose
    # alternatives include `(p.a,)` adds nothing.
    provider = component(
        "Prov",
        "i* x y",
        [("a", "i", "x", 2), ("b", "i", "y", 5)],
        provides={"one": ["x"], "two": ["x", "y"]},
    )
    user = component("User", "s* e", [("go", "s", "e", 1)], uses={"one": ["go"], "two": ["go"]})
    plan = plan_of(
        assembly(
            [provider, user],
            {"p": "Prov", "u": "User"},
            ["u.one p.one", "u.two p.two"],
            name="absorbed",
        )
    )
    assert plan.transition("u.go").after == ("p.a",)
    assert plan.transition("u.go").after_one_of == ()


def test_provide_group_reached_late_by_the_or_branch() -> None:
    # Same shape, but x is slow: y (reached when p2 and p3 have ended, at 4) provides first.
    provider = component(
        "Prov",
        "i* x y",
        [("p1", "i", "x", 9), ("p2", "i", "y", 3), ("p3", "i", "y", 4)],
        provides={"svc": ["x", "y"]},
    )
    user = component("User", "s* e", [("go", "s", "e", 1)], uses={"svc": ["go"]})
    plan = plan_of(assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"]))
    assert plan.start["u.go"] == 4.0
    assert plan.predicted_makespan == 9.0
    assert list(plan.critical_path) == ["p.p1"]
    assert [t.id for t in plan.transitions] == ["p.p1", "p.p2", "p.p3", "u.go"]


def test_provide_group_holding_an_initial_place_gives_no_wait() -> None:
    provider = component("Prov", "i* x", [("p", "i", "x", 5)], provides={"svc": ["i", "x"]})
    user = component("User", "s* e", [("go", "s", "e", 1)], uses={"svc": ["go"]})
    plan = plan_of(
        assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"], name="init")
    )
    assert plan.to_json() == {
        "assembly": "init",
        "transitions": [row("p.p", 5.0), row("u.go", 1.0)],
        "predicted_makespan": 5.0,
        "critical_path": ["p.p"],
    }
    assert plan.start["u.go"] == 0.0


def test_optional_unconnected_use_port() -> None:
    user = component(
        "User",
        "s* m e",
        [("go", "s", "m", 1), ("on", "m", "e", 2)],
        uses={"opt": ["on"]},
        optional=["opt"],
    )
    plan = plan_of(assembly([user], {"u": "User"}, name="opt"))
    assert plan.to_json() == {
        "assembly": "opt",
        "transitions": [row("u.go", 1.0), row("u.on", 2.0, after=["u.go"])],
        "predicted_makespan": 3.0,
        "critical_path": ["u.go", "u.on"],
    }


def test_provider_place_entered_by_two_transitions() -> None:
    provider = component(
        "Prov", "i* d", [("a", "i", "d", 1), ("b", "i", "d", 3)], provides={"svc": ["d"]}
    )
    user = component(
        "User",
        "s* m e",
        [("prep", "s", "m", 4), ("go", "m", "e", 2)],
        uses={"svc": ["go"]},
    )
    plan = plan_of(
        assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"], name="two")
    )
    assert plan.to_json() == {
        "assembly": "two",
        "transitions": [
            row("p.a", 1.0),
            row("p.b", 3.0),
            row("u.prep", 4.0),
            row("u.go", 2.0, after=["u.prep", "p.a", "p.b"]),
        ],
        "predicted_makespan": 6.0,
        "critical_path": ["u.prep", "u.go"],
    }
    assert dict(plan.start) == {"p.a": 0.0, "p.b": 0.0, "u.prep": 0.0, "u.go": 4.0}


def test_provider_on_the_critical_path() -> None:
    provider = component("Prov", "i* d", [("a", "i", "d", 1), ("b", "i", "d", 3)], {"svc": ["d"]})
    user = component("User", "s* e", [("go", "s", "e", 2)], uses={"svc": ["go"]})
    plan = plan_of(assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"]))
    assert plan.transition("u.go").after == ("p.a", "p.b")
    assert plan.start["u.go"] == 3.0
    assert plan.predicted_makespan == 5.0
    assert list(plan.critical_path) == ["p.b", "u.go"]


def test_zero_durations() -> None:
    chain = component(
        "Z",
        "i* p q r s",
        [("a", "i", "p", 0), ("b", "p", "q", 0), ("c", "q", "r", 5), ("d", "r", "s", 0)],
    )
    plan = plan_of(assembly([chain], {"z": "Z"}, name="zero"))
    assert plan.to_json() == {
        "assembly": "zero",
        "transitions": [
            row("z.a", 0.0),
            row("z.b", 0.0, after=["z.a"]),
            row("z.c", 5.0, after=["z.b"]),
            row("z.d", 0.0, after=["z.c"]),
        ],
        "predicted_makespan": 5.0,
        # The whole chain: the 0 s transitions before and after the 5 s one are on it.
        "critical_path": ["z.a", "z.b", "z.c", "z.d"],
    }
    assert dict(plan.start) == {"z.a": 0.0, "z.b": 0.0, "z.c": 0.0, "z.d": 5.0}


def test_all_zero_durations() -> None:
    chain = component("Z", "i* p q", [("a", "i", "p", 0), ("b", "p", "q", 0)])
    plan = plan_of(assembly([chain], {"z": "Z"}))
    assert plan.predicted_makespan == 0.0
    assert list(plan.critical_path) == ["z.a", "z.b"]


def test_no_duration_counts_as_zero() -> None:
    bare = ComponentType(
        "B", places=(Place("i", True), Place("e")), transitions=(Transition("t", "i", "e"),)
    )
    plan = plan_of(assembly([bare], {"b": "B"}))
    assert plan.to_json()["transitions"] == [row("b.t", 0.0)]
    assert plan.predicted_makespan == 0.0


def test_only_the_deploy_behaviour_is_planned() -> None:
    two = ComponentType(
        "T",
        places=(Place("i", True), Place("e")),
        transitions=(
            Transition("up", "i", "e", duration=1.0),
            Transition("down", "e", "i", duration=1.0, behaviour="stop"),
        ),
    )
    plan = plan_of(assembly([two], {"t": "T"}))
    assert [t.id for t in plan.transitions] == ["t.up"]


def test_hosts_follow_the_inventory() -> None:
    single = component("S", "i* e", [("t", "i", "e", 1)])
    a = Assembly(
        "hosts",
        (single,),
        (Instance(InstanceRef("s"), "S", Target("control")),),
    )
    plan = build_plan(resolve(a))
    assert plan.to_json()["transitions"] == [row("s.t", 1.0, hosts=["localhost"])]


def test_cycle_through_ports_names_the_blocked_transitions() -> None:
    # a.t1 waits for b's port (reached after b.t2), and b.t2 waits for a's (after a.t1).
    left = component(
        "L",
        "i* m e",
        [("t1", "i", "m", 1), ("t3", "m", "e", 1)],
        provides={"out": ["m"]},
        uses={"inp": ["t1"]},
        spans=True,
    )
    right = component(
        "R",
        "i* m",
        [("t2", "i", "m", 1)],
        provides={"out": ["m"]},
        uses={"inp": ["t2"]},
        spans=True,
    )
    free = component("F", "i* e", [("ok", "i", "e", 1)])
    cyclic = assembly(
        [left, right, free],
        {"a": "L", "b": "R", "f": "F"},
        ["a.inp b.out", "b.inp a.out"],
    )
    with pytest.raises(PlanError) as caught:
        plan_of(cyclic)
    assert list(caught.value.diagnostics) == [
        Diagnostic(
            "blocked",
            'transition "a.t1" can never start: it waits for b.t2',
            Span("L.mad", 1, 5, 1, 9),
        ),
        Diagnostic(
            "blocked",
            'transition "a.t3" can never start: it waits for a.t1',
            Span("L.mad", 2, 5, 2, 9),
        ),
        Diagnostic(
            "blocked",
            'transition "b.t2" can never start: it waits for a.t1',
            Span("R.mad", 1, 5, 1, 9),
        ),
    ]


def test_port_group_nothing_enters_blocks() -> None:
    provider = component("Prov", "i* d", [], provides={"svc": ["d"]})
    user = component("User", "s* e", [("go", "s", "e", 1)], uses={"svc": ["go"]})
    with pytest.raises(PlanError) as caught:
        plan_of(assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"]))
    assert [d.message for d in caught.value.diagnostics] == [
        'transition "u.go" can never start: it waits for a provide port whose places no '
        "transition reaches"
    ]


def test_blocked_after_any_group_is_named() -> None:
    transitions = [
        PlanTransition("x.a", "x", "a", "deploy", 1.0, ("h",), after=("x.b",)),
        PlanTransition("x.b", "x", "b", "deploy", 1.0, ("h",), after=("x.a",)),
        PlanTransition("x.c", "x", "c", "deploy", 1.0, ("h",), after_any=(("x.a", "x.b"),)),
        PlanTransition("x.d", "x", "d", "deploy", 1.0, ("h",), after=("x.zz",)),
        PlanTransition(
            "x.e", "x", "e", "deploy", 1.0, ("h",), after_one_of=((("x.a", "x.d"), ("x.b",)),)
        ),
    ]
    with pytest.raises(PlanError) as caught:
        schedule("s", transitions)
    assert [d.message for d in caught.value.diagnostics] == [
        'transition "x.a" can never start: it waits for x.b',
        'transition "x.b" can never start: it waits for x.a',
        'transition "x.c" can never start: it waits for one of x.a, x.b',
        'transition "x.d" can never start: it waits for unknown transition x.zz',
        'transition "x.e" can never start: it waits for one of (x.a and x.d), x.b',
    ]


def test_empty_assembly() -> None:
    plan = plan_of(assembly([], {}, name="empty"))
    assert plan.to_json() == {
        "assembly": "empty",
        "transitions": [],
        "predicted_makespan": 0.0,
        "critical_path": [],
    }


def test_json_round_trip() -> None:
    provider = component(
        "Prov",
        "i* x y",
        [("p1", "i", "x", 2), ("p2", "i", "y", 3), ("p3", "i", "y", 4)],
        provides={"svc": ["x", "y"]},
    )
    user = component("User", "s* e", [("go", "s", "e", 10)], uses={"svc": ["go"]})
    plan = plan_of(assembly([provider, user], {"p": "Prov", "u": "User"}, ["u.svc p.svc"]))
    data = json.loads(json.dumps(plan.to_json()))
    again = Plan.from_json(data)
    assert again == plan
    assert again.to_json() == plan.to_json()
    assert dict(again.start) == dict(plan.start)


# --- OpenStack (the reference net) -----------------------------------------------------------


def openstack_reference() -> Assembly:
    """The reference net, as model objects: one component type per component of the JSON."""
    data = json.loads(REFERENCE.read_text())
    components: list[ComponentType] = []
    instances: list[Instance] = []
    connections: list[Connection] = []
    for name, transitions in data["components"].items():
        places: list[str] = []
        for _, source, target in transitions:
            places.extend(p for p in (source, target) if p not in places)
        provides = tuple(
            ProvidePort(p["port"], "service", (p["place"],))
            for p in data["provides"]
            if p["component"] == name
        )
        uses: list[UsePort] = []
        for use in data["uses"]:
            mine = tuple(t.split(".")[1] for t in use["transitions"] if t.split(".")[0] == name)
            if mine:
                uses.append(UsePort(use["port"], "service", mine))
                connections.append(
                    Connection(
                        PortRef(InstanceRef(name), use["port"]),
                        PortRef(InstanceRef(use["provider"]), use["port"]),
                    )
                )
        components.append(
            ComponentType(
                name.title(),
                places=tuple(Place(p, p == "initiated") for p in places),
                transitions=tuple(
                    Transition(t, s, d, duration=data["durations_s"][f"{name}.{t}"])
                    for t, s, d in transitions
                ),
                provides=provides,
                uses=tuple(uses),
            )
        )
        instances.append(Instance(InstanceRef(name), name.title()))
    return Assembly("openstack", tuple(components), tuple(instances), tuple(connections))


def _check_openstack(plan: Plan) -> None:
    data = json.loads(REFERENCE.read_text())
    assert len(plan.transitions) == 31
    assert {t.id for t in plan.transitions} == set(data["durations_s"])
    assert plan.predicted_makespan == pytest.approx(148.8)
    assert list(plan.critical_path) == REFERENCE_CRITICAL_PATH
    assert sum(t.duration for t in plan.transitions) == pytest.approx(654.8)
    assert plan.start["nova.cell_setup"] == pytest.approx(148.8 - 40.2)
    out = plan.to_json()
    assert out["predicted_makespan"] == 148.8
    assert out["critical_path"] == REFERENCE_CRITICAL_PATH
    by_id = {t["id"]: t for t in out["transitions"]}
    assert by_id["mariadb.bootstrap"]["after"] == ["mariadb.pull", "mariadb.config"]
    assert by_id["mariadb.bootstrap"]["after_any"] == []
    assert by_id["nova.create_db"]["after"] == ["mariadb.check"]
    assert by_id["nova.restart"]["after"] == ["nova.upgrade_db", "nova.upgrade_api_db"]
    assert by_id["mariadb.restart"]["after"] == ["mariadb.bootstrap", "haproxy.deploy"]
    assert by_id["glance.register"]["after"] == ["keystone.deploy"]
    assert Plan.from_json(json.loads(json.dumps(out))) == plan


def test_openstack_reference_net() -> None:
    _check_openstack(plan_of(openstack_reference()))


def test_openstack_assembly_file() -> None:
    from madeus.frontend import load_file

    module = load_file(OPENSTACK)
    assert module.assembly is not None
    _check_openstack(build_plan(resolve(module.assembly)))
