"""Semantic checks on models built directly (no source text), including the problems the
grammar itself rules out but Python code can still build."""

from __future__ import annotations

import time

import pytest

from madeus.errors import Diagnostic
from madeus.frontend.checks import (
    check_assembly,
    check_components,
    check_module,
    sort_diagnostics,
    value_fits,
)
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    EnvRef,
    Family,
    Instance,
    InstanceRef,
    Module,
    Param,
    Place,
    PortRef,
    ProvidePort,
    Transition,
    UsePort,
)
from madeus.source import Span


def places(*names: str) -> tuple[Place, ...]:
    return tuple(Place(n.rstrip("*"), n.endswith("*")) for n in names)


def chain(name: str, length: int, **extra: object) -> ComponentType:
    return ComponentType(
        name,
        places=places("p0*", *(f"p{i}" for i in range(1, length + 1))),
        transitions=tuple(Transition(f"t{i}", f"p{i}", f"p{i + 1}") for i in range(length)),
        **extra,  # type: ignore[arg-type]
    )


def messages(diagnostics: list[Diagnostic]) -> list[str]:
    return [f"{d.code}: {d.message}" for d in diagnostics]


def test_a_sound_component_has_no_diagnostics() -> None:
    assert check_components([chain("A", 5)]) == []


def test_bindings_to_nothing() -> None:
    c = chain(
        "A",
        1,
        provides=(ProvidePort("p", "service", ()),),
        uses=(UsePort("u", "service"),),
    )
    assert messages(check_components([c])) == [
        'empty-binding: provide service port "p" of component "A" is bound to no place',
        'empty-binding: use port "u" of component "A" is bound to nothing',
    ]


def test_use_ports_must_bind_the_right_kind_of_element() -> None:
    c = chain("A", 1, uses=(UsePort("u", "service", transitions=("p1",), places=("t0", "zz")),))
    assert messages(check_components([c])) == [
        'unknown-name: "p1" in use port "u" of component "A" is a place, not a transition',
        'unknown-place: unknown place "t0" in use port "u" of component "A"',
        'unknown-place: unknown place "zz" in use port "u" of component "A"',
    ]


def test_negative_durations_and_timeouts() -> None:
    c = ComponentType(
        "A",
        places=places("a*", "b"),
        transitions=(Transition("t", "a", "b", duration=-1.0, timeout=-5.0),),
    )
    assert messages(check_components([c])) == [
        'bad-timeout: timeout of transition "t" of component "A" must be longer than zero',
        'bad-duration: expected duration of transition "t" of component "A" must not be negative',
    ]


def test_self_loop_and_several_cycles() -> None:
    c = ComponentType(
        "A",
        places=places("a*", "b", "c", "d"),
        transitions=(
            Transition("go", "a", "b"),
            Transition("spin", "b", "b"),
            Transition("on", "b", "c"),
            Transition("c_to_d", "c", "d"),
            Transition("d_to_c", "d", "c"),
        ),
    )
    assert messages(check_components([c])) == [
        'deploy-cycle: the deploy behaviour of component "A" has a cycle: "c_to_d" (c -> d), '
        '"d_to_c" (d -> c)',
        'deploy-cycle: the deploy behaviour of component "A" has a cycle: "spin" (b -> b)',
    ]


def test_cycles_outside_the_deploy_behaviour_are_fine() -> None:
    c = ComponentType(
        "A",
        places=places("off*", "on"),
        transitions=(
            Transition("start", "off", "on"),
            Transition("stop", "on", "off", behaviour="stop"),
        ),
    )
    assert check_components([c]) == []


def test_long_components_are_checked_without_recursion_and_fast() -> None:
    n = 50_000
    cyclic = ComponentType(
        "Long",
        places=places("p0*", *(f"p{i}" for i in range(1, n))),
        transitions=tuple(Transition(f"t{i}", f"p{i}", f"p{(i + 1) % n}") for i in range(n)),
    )
    start = time.perf_counter()
    (found,) = check_components([cyclic])
    assert found.code == "deploy-cycle"
    assert found.message.startswith('the deploy behaviour of component "Long" has a cycle: "t0"')
    assert check_components([chain("Chain", n)]) == []
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("value", "param_type", "fits"),
    [
        (1, "int", True),
        (1.0, "int", False),
        (True, "int", False),
        (1, "float", True),
        (1.5, "float", True),
        (False, "float", False),
        ("x", "str", True),
        ("x", "secret", True),
        (1, "str", False),
        (True, "bool", True),
        (1, "bool", False),
        (EnvRef("X"), "int", True),
        (EnvRef("X"), "bool", True),
    ],
)
def test_value_fits(value: object, param_type: str, fits: bool) -> None:
    assert value_fits(value, param_type) is fits  # type: ignore[arg-type]


def test_family_shape_problems() -> None:
    a = chain("A", 1)
    asm = Assembly(
        "x",
        components=(a,),
        families=(
            Family("h", "hosts", None, (Instance(InstanceRef("m", "h"), "A"),)),
            Family("s", "sites", "compute", (Instance(InstanceRef("n", "s"), "A"),)),
        ),
    )
    assert messages(check_assembly(asm)) == [
        'bad-family: a family over hosts needs a group, as in "for h in hosts of compute"',
        'bad-family: a family over sites takes no group (got "compute")',
    ]


def test_cross_family_references_over_the_same_domain_are_fine() -> None:
    provider = chain("P", 1, provides=(ProvidePort("api", "service", ("p1",)),))
    user = chain("U", 1, uses=(UsePort("api", "service", transitions=("t0",)),))
    asm = Assembly(
        "x",
        components=(provider, user),
        families=(
            Family("s", "sites", None, (Instance(InstanceRef("p", "s"), "P"),)),
            Family(
                "site",
                "sites",
                None,
                (Instance(InstanceRef("u", "site"), "U"),),
                (
                    Connection(
                        PortRef(InstanceRef("u", "site"), "api"),
                        PortRef(InstanceRef("p", "site"), "api"),
                    ),
                ),
            ),
        ),
    )
    assert check_assembly(asm) == []


def test_notes_without_a_position_are_dropped() -> None:
    c = ComponentType("A", places=(Place("a", True), Place("a")))
    (found,) = check_components([c])
    assert found.code == "duplicate-name"
    assert found.related == ()


def test_the_same_component_object_twice_is_not_a_duplicate() -> None:
    a = chain("A", 1)
    assert check_components([a, a]) == []
    assert [d.code for d in check_components([a, chain("A", 2)])] == ["duplicate-component"]


def test_check_module_without_an_assembly() -> None:
    module = Module(
        (ComponentType("A", params=(Param("p", "int", "1"),), places=places("a*")),), None
    )
    assert messages(check_module(module)) == [
        'param-default-type: default value of parameter "p" of component "A" should be an int, '
        'not the string "1"'
    ]


def test_diagnostics_sort_by_file_line_and_column() -> None:
    found = [
        Diagnostic("x", "3", Span("b.mad", 1, 1, 1, 2)),
        Diagnostic("x", "2", Span("a.mad", 2, 1, 2, 2)),
        Diagnostic("x", "1", Span("a.mad", 1, 5, 1, 6)),
        Diagnostic("x", "0", Span("a.mad", 1, 2, 1, 3)),
    ]
    assert [d.message for d in sort_diagnostics(found)] == ["0", "1", "2", "3"]
