"""Building models in Python: the same component types and assemblies as a `.mad` file.

    from madeus.builder import component, assembly, ansible_role, shell

    mariadb = (
        component("MariaDB")
        .param("version", "str", "10.11")
        .places("initiated*", "configured", "deployed")
        .transition("pull", "initiated", "configured", ansible_role("mariadb", tasks="pull"),
                    duration=23.5)
        .transition("run", "configured", "deployed", shell("systemctl start mariadb"))
        .provide("service", "db", at="deployed", type="mysql")
        .build()
    )
    openstack = (
        assembly("openstack")
        .components(mariadb)
        .instance("mariadb", "MariaDB", on="control", version="10.5")
        .build()
    )

`build()` runs the checks the DSL runs and raises `CheckError` with every problem found.
A builder and the `.mad` file it mirrors give equal models (spans aside). Builders append to
lists and check with dict indexes, so 10,000-component assemblies build in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TypeAlias

from madeus.errors import CheckError, Diagnostic
from madeus.frontend.build import family_target, split_use_names
from madeus.frontend.checks import check_assembly, check_components
from madeus.frontend.lexer import parse_duration
from madeus.model import (
    DEFAULT_BEHAVIOUR,
    Action,
    AnsibleAction,
    Assembly,
    ComponentType,
    Connection,
    EnvRef,
    Family,
    FamilyOver,
    Instance,
    InstanceRef,
    Module,
    OutputOf,
    Param,
    ParamType,
    Place,
    PortKind,
    PortRef,
    ProvidePort,
    PythonAction,
    Serial,
    ShellAction,
    Target,
    Transition,
    UploadAction,
    UsePort,
    Value,
)

__all__ = [
    "AssemblyBuilder",
    "ComponentBuilder",
    "Duration",
    "FamilyBuilder",
    "On",
    "ansible_playbook",
    "ansible_role",
    "ansible_tasks",
    "assembly",
    "component",
    "env",
    "output_of",
    "python_call",
    "shell",
    "upload",
]

Duration: TypeAlias = float | str
"""Seconds, or a duration as written in `.mad` files: `"1m30s"`, `"500ms"`."""

On: TypeAlias = str | tuple[str | None, str] | Target | None
"""Where an instance runs: `"control"`, `("control", "site")` for `on control in site`,
`(None, "site")` for every host of a site."""

_REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([A-Za-z_][A-Za-z0-9_]*)\])?")
_PORT_REF = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*(?:\[[A-Za-z_][A-Za-z0-9_]*\])?)\.([A-Za-z_][A-Za-z0-9_]*)"
)


# --- actions and values ---------------------------------------------------------------------


def shell(command: str) -> ShellAction:
    """A shell command, run on each target host; `{placeholders}` are substituted quoted."""
    return ShellAction(command)


def ansible_playbook(path: str) -> AnsibleAction:
    return AnsibleAction(playbook=path)


def ansible_role(role: str, tasks: str | None = None) -> AnsibleAction:
    """A role, or with `tasks` one task file of that role."""
    return AnsibleAction(role=role, tasks=tasks)


def ansible_tasks(path: str) -> AnsibleAction:
    return AnsibleAction(tasks=path)


def python_call(ref: str | Callable[..., object]) -> PythonAction:
    """`"package.module:function"`, or the function itself (it must be importable)."""
    if not isinstance(ref, str):
        ref = f"{ref.__module__}:{ref.__qualname__}"
    return PythonAction(ref)


def upload(source: str, dest: str) -> UploadAction:
    return UploadAction(source, dest)


def env(name: str) -> EnvRef:
    """A value read from the environment when the assembly is resolved."""
    return EnvRef(name)


def output_of(transition: str) -> OutputOf:
    """A data port value: what `transition` printed (stripped)."""
    return OutputOf(transition)


def _error(code: str, message: str) -> CheckError:
    return CheckError([Diagnostic(code, message)])


def _seconds(value: Duration | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return None if value is None else float(value)
    try:
        return parse_duration(value)
    except ValueError:
        raise _error(
            "bad-duration", f'"{value}" is not a duration (such as 30s, 1m30s or 500ms)'
        ) from None


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


# --- component types --------------------------------------------------------------------------


class ComponentBuilder:
    """Collects the members of one component type; `build()` checks and freezes them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._params: list[Param] = []
        self._places: list[Place] = []
        self._transitions: list[Transition] = []
        self._provides: list[ProvidePort] = []
        self._uses: list[tuple[str, PortKind, tuple[str, ...], str | None, bool]] = []

    def param(
        self, name: str, type: ParamType = "str", default: Value | None = None
    ) -> ComponentBuilder:
        self._params.append(Param(name, type, default))
        return self

    def places(self, *names: str) -> ComponentBuilder:
        """Places in order; a trailing `*` marks an initial place, as in `.mad` files."""
        for name in names:
            initial = name.endswith("*")
            self._places.append(Place(name[:-1] if initial else name, initial))
        return self

    def place(self, name: str, *, initial: bool = False) -> ComponentBuilder:
        self._places.append(Place(name, initial))
        return self

    def transition(
        self,
        name: str,
        source: str,
        target: str,
        action: Action | None = None,
        *,
        duration: Duration | None = None,
        timeout: Duration | None = None,
        retries: int = 0,
        behaviour: str = DEFAULT_BEHAVIOUR,
        idempotent: bool | None = None,
    ) -> ComponentBuilder:
        self._transitions.append(
            Transition(
                name,
                source,
                target,
                action,
                _seconds(duration),
                _seconds(timeout),
                retries,
                behaviour,
                idempotent,
            )
        )
        return self

    def provide(
        self,
        kind: PortKind,
        name: str,
        *,
        at: str | Iterable[str],
        type: str | None = None,
        value: str | OutputOf | None = None,
    ) -> ComponentBuilder:
        """A provide port, active while a place of `at` is; data ports carry `value`."""
        self._provides.append(ProvidePort(name, kind, _names(at), type, value))
        return self

    def use(
        self,
        kind: PortKind,
        name: str,
        *,
        for_: str | Iterable[str],
        type: str | None = None,
        optional: bool = False,
    ) -> ComponentBuilder:
        """A use port bound to transitions and places (`for_` names either)."""
        self._uses.append((name, kind, _names(for_), type, optional))
        return self

    def build(self) -> ComponentType:
        transition_names = [t.name for t in self._transitions]
        place_names = [p.name for p in self._places]
        uses = []
        for name, kind, bound, port_type, optional in self._uses:
            transitions, places = split_use_names(bound, transition_names, place_names)
            uses.append(UsePort(name, kind, transitions, places, port_type, optional))
        built = ComponentType(
            self._name,
            tuple(self._params),
            tuple(self._places),
            tuple(self._transitions),
            tuple(self._provides),
            tuple(uses),
        )
        problems = check_components([built])
        if problems:
            raise CheckError(problems)
        return built


def component(name: str) -> ComponentBuilder:
    return ComponentBuilder(name)


# --- assemblies -------------------------------------------------------------------------------


def _instance_ref(text: str) -> InstanceRef:
    match = _REF.fullmatch(text)
    if match is None:
        raise _error("bad-reference", f'"{text}" is not an instance name such as "x" or "x[site]"')
    return InstanceRef(match.group(1), match.group(2))


def _port_ref(text: str) -> PortRef:
    match = _PORT_REF.fullmatch(text)
    if match is None:
        raise _error("bad-reference", f'"{text}" is not a port such as "x.port" or "x[site].port"')
    return PortRef(_instance_ref(match.group(1)), match.group(2))


def _target(on: On) -> Target | None:
    if on is None or isinstance(on, Target):
        return on
    if isinstance(on, str):
        return Target(on, pattern=_TARGET_NAME.fullmatch(on) is None)
    name, site = on
    return Target(name, site, pattern=name is not None and _TARGET_NAME.fullmatch(name) is None)


# A group or host name as the language writes it bare; anything else is an Ansible host pattern
# (`"web:&db"`, `"nova-*"`), as in quotes after `on`.
_TARGET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*")


def _instance(
    ref: str,
    type_name: str,
    on: On,
    args: Mapping[str, Value] | None,
    kwargs: Mapping[str, Value],
    serial: int | str | None = None,
) -> Instance:
    pairs = (*(args or {}).items(), *kwargs.items())
    return Instance(
        _instance_ref(ref), type_name, _target(on), tuple(pairs), serial=_serial(serial)
    )


def _serial(serial: int | str | None) -> Serial | None:
    return Serial.of(serial) if serial is not None else None


def _connection(user: str, provider: str) -> Connection:
    return Connection(_port_ref(user), _port_ref(provider))


class FamilyBuilder:
    """The body of `for VAR in sites { ... }`: instances named `x[VAR]` and connections."""

    def __init__(self, var: str, over: FamilyOver) -> None:
        self._var = var
        self._over: FamilyOver = over
        self.instances: list[Instance] = []
        self.connections: list[Connection] = []

    def instance(
        self,
        ref: str,
        type_name: str,
        /,
        on: On = None,
        *,
        args: Mapping[str, Value] | None = None,
        serial: int | str | None = None,
        **kwargs: Value,
    ) -> FamilyBuilder:
        """As `AssemblyBuilder.instance`; `on="site"` (the loop variable of a family over
        sites) means every host of the site."""
        built = _instance(ref, type_name, on, args, kwargs, serial)
        target = family_target(built.target, self._var, self._over)
        self.instances.append(replace(built, target=target))
        return self

    def connect(self, user: str, provider: str) -> FamilyBuilder:
        self.connections.append(_connection(user, provider))
        return self


class AssemblyBuilder:
    """Collects the instances, connections and families of an assembly."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._components: list[ComponentType] = []
        self._instances: list[Instance] = []
        self._connections: list[Connection] = []
        self._families: list[Family] = []

    def components(
        self, *types: ComponentType | Module | Iterable[ComponentType]
    ) -> AssemblyBuilder:
        """The component types the instances may use (a loaded `Module` gives all of its)."""
        for item in types:
            if isinstance(item, ComponentType):
                self._components.append(item)
            elif isinstance(item, Module):
                self._components.extend(item.components)
            else:
                self._components.extend(item)
        return self

    def instance(
        self,
        ref: str,
        type_name: str,
        /,
        on: On = None,
        *,
        args: Mapping[str, Value] | None = None,
        serial: int | str | None = None,
        **kwargs: Value,
    ) -> AssemblyBuilder:
        """`instance("mariadb", "MariaDB", on="control", version="10.5")`; `serial=2` or
        `serial="25%"` as `serial` in the language. Parameters named `on`, `args` or `serial`
        go in `args={...}`."""
        self._instances.append(_instance(ref, type_name, on, args, kwargs, serial))
        return self

    def connect(self, user: str, provider: str) -> AssemblyBuilder:
        """`connect("keystone.db", "mariadb.db")`: a use port to a provide port."""
        self._connections.append(_connection(user, provider))
        return self

    def family(
        self,
        var: str,
        *,
        over: FamilyOver = "sites",
        group: str | None = None,
        body: Callable[[FamilyBuilder], object],
    ) -> AssemblyBuilder:
        """`for VAR in sites { body }`, or with `over="hosts", group=G`, `for VAR in hosts of
        G { body }`. `body` receives a `FamilyBuilder`."""
        members = FamilyBuilder(var, over)
        body(members)
        self._families.append(
            Family(var, over, group, tuple(members.instances), tuple(members.connections))
        )
        return self

    def build(self) -> Assembly:
        built = Assembly(
            self._name,
            tuple(self._components),
            tuple(self._instances),
            tuple(self._connections),
            tuple(self._families),
        )
        problems = check_assembly(built)
        if problems:
            raise CheckError(problems)
        return built


def assembly(name: str) -> AssemblyBuilder:
    return AssemblyBuilder(name)
