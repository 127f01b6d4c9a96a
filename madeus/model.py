"""The Madeus model: component types, assemblies, ports and actions, as frozen data.

The DSL front end and the Python builder API (`madeus.builder`) both produce these objects.
Spans never take part in equality, so a `.mad` file and its builder twin compare equal.

Naming:
- a transition is identified in an assembly by `instance.name` (its *id*);
- a family member instance is named `base[key]` once expanded over the inventory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from madeus.source import NO_SPAN, Span

ParamType = Literal["str", "int", "float", "bool", "secret"]
PARAM_TYPES: tuple[ParamType, ...] = ("str", "int", "float", "bool", "secret")


def read_typed(text: str, param_type: str) -> str | int | float | bool:
    """`text` (a value as actions see it: `true`/`false` for booleans) read as `param_type`:
    a number, a boolean, or the text itself for `str` and `secret`. ValueError when it does
    not read as one."""
    if param_type == "int":
        return int(text)
    if param_type == "float":
        return float(text)
    if param_type == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"not a bool: {text!r}")
        return text == "true"
    return text


PortKind = Literal["service", "data"]
DEFAULT_BEHAVIOUR = "deploy"


@dataclass(frozen=True, slots=True)
class EnvRef:
    """A value read from the operator's environment when the assembly is resolved."""

    name: str


Value = str | int | float | bool | EnvRef


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: ParamType
    default: Value | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    @property
    def secret(self) -> bool:
        return self.type == "secret"


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    initial: bool = False
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


# --- actions ------------------------------------------------------------------------------
# Command and path strings may hold `{name}` placeholders: a parameter, a data use port,
# or `host.name` / `host.address` / `host.vars.KEY`. They are substituted quoted, never
# concatenated into a shell. `{{` and `}}` stand for literal braces.


@dataclass(frozen=True, slots=True)
class ShellAction:
    command: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AnsibleAction:
    """Exactly one form: `playbook`, `role` (optionally with `tasks` from that role), or a
    bare task file in `tasks`."""

    playbook: str | None = None
    role: str | None = None
    tasks: str | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    @property
    def form(self) -> Literal["playbook", "role", "tasks"]:
        if self.playbook is not None:
            return "playbook"
        return "role" if self.role is not None else "tasks"


@dataclass(frozen=True, slots=True)
class PythonAction:
    """`module.path:function`, sync or async, called with an `ActionContext`."""

    ref: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UploadAction:
    """Copy a local file to each target host (sftp over SSH, a copy locally)."""

    source: str
    dest: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


Action = ShellAction | AnsibleAction | PythonAction | UploadAction


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    source: str
    target: str
    action: Action | None = None
    duration: float | None = None  # expected, seconds
    timeout: float | None = None  # seconds
    retries: int = 0
    behaviour: str = DEFAULT_BEHAVIOUR
    # As written: `idempotent` (True), `idempotent false` (False), nothing (None).
    idempotent: bool | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    @property
    def expected(self) -> float:
        return self.duration if self.duration is not None else 0.0

    @property
    def safe_to_rerun(self) -> bool:
        """Whether a run cut off in the middle of this transition may run it again without
        asking: as declared, else true for Ansible actions (idempotent by Ansible's own
        convention) and false for the others (a shell command may not be)."""
        if self.idempotent is not None:
            return self.idempotent
        return isinstance(self.action, AnsibleAction)


@dataclass(frozen=True, slots=True)
class OutputOf:
    """A data value taken from a transition's standard output (stripped)."""

    transition: str


@dataclass(frozen=True, slots=True)
class ProvidePort:
    """Provided while a place of `places` holds a token (in deployment: once one is reached).

    For data ports `value` is a template string (placeholders as in actions) or `OutputOf`.
    """

    name: str
    kind: PortKind
    places: tuple[str, ...]
    type: str | None = None
    value: str | OutputOf | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UsePort:
    """Bound to transitions (which wait for the provider) and, Concerto-style, to places."""

    name: str
    kind: PortKind
    transitions: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    type: str | None = None
    optional: bool = False
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


Port = ProvidePort | UsePort


@dataclass(frozen=True, slots=True)
class OnChange:
    """`on change of PARAMS: BEHAVIOURS`: a deployed instance whose parameter in `params`
    changes runs `behaviours`, in this order (`madeus apply`)."""

    params: tuple[str, ...]
    behaviours: tuple[str, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ComponentType:
    name: str
    params: tuple[Param, ...] = ()
    places: tuple[Place, ...] = ()
    transitions: tuple[Transition, ...] = ()
    provides: tuple[ProvidePort, ...] = ()
    uses: tuple[UsePort, ...] = ()
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    on_change: tuple[OnChange, ...] = ()

    @property
    def initial_places(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.places if p.initial)

    @property
    def behaviours(self) -> tuple[str, ...]:
        seen = dict.fromkeys(t.behaviour for t in self.transitions)
        return tuple(seen)

    def transitions_of(self, behaviour: str) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if t.behaviour == behaviour)

    def transition(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)

    def place(self, name: str) -> Place | None:
        return next((p for p in self.places if p.name == name), None)

    def behaviours_on_change(self, params: Iterable[str]) -> tuple[str, ...] | None:
        """The behaviours to run when `params` change: those of every `on change of` naming
        one of them, in declaration order, each once; None when a parameter has none (the
        instance is then redeployed)."""
        changed = set(params)
        covered = {p for o in self.on_change for p in o.params}
        if not changed <= covered:
            return None
        found: dict[str, None] = {}
        for o in self.on_change:
            if changed.intersection(o.params):
                found.update(dict.fromkeys(o.behaviours))
        return tuple(found)

    def port(self, name: str) -> Port | None:
        ports: tuple[Port, ...] = (*self.provides, *self.uses)
        return next((port for port in ports if port.name == name), None)

    def provide(self, name: str) -> ProvidePort | None:
        return next((port for port in self.provides if port.name == name), None)

    def use(self, name: str) -> UsePort | None:
        return next((port for port in self.uses if port.name == name), None)


# --- assemblies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """`name` or, inside a family, `name[var]`."""

    name: str
    index: str | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Target:
    """Where an instance runs: an inventory group or host name, or (`pattern`) an Ansible
    host pattern (`on "nova-api:nova-conductor"`), optionally restricted to the hosts of a site
    (`on control in site`). Inside a family the name may be the loop variable. `None` name
    with a site means every host of the site."""

    name: str | None
    site: str | None = None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    pattern: bool = False


@dataclass(frozen=True, slots=True)
class Serial:
    """`serial N` or `serial N%` on an instance: the behaviours a change runs on it run on at
    most N hosts (N % of them, at least one) at a time, batch after batch, while the other
    batches keep providing its ports (docs/reconfiguration.md, "Rolling changes")."""

    size: int
    percent: bool = False
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def batches(self, hosts: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        """`hosts` cut in batches, in order, as Ansible's `serial` cuts a play's hosts."""
        size = self.size
        if self.percent:  # Ansible's arithmetic (`pct_to_int`), floats and all
            size = int((self.size / 100.0) * len(hosts)) or 1
        size = max(1, size)
        return tuple(hosts[k : k + size] for k in range(0, len(hosts), size))

    def __str__(self) -> str:
        return f"serial {self.size}{'%' if self.percent else ''}"

    @staticmethod
    def of(value: int | str) -> Serial:
        """`2` or `"25%"`, as the language writes `serial 2` and `serial 25%` (the library's
        and the programs' `serial=`). ValueError when it is neither."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"serial must be a number of hosts or a percentage, not {value!r}")
        if isinstance(value, int):
            return Serial(value)
        text = value.strip()
        digits = text.removesuffix("%").strip()
        if not digits.isdigit():
            raise ValueError(f"serial must be a number of hosts or a percentage, not {value!r}")
        return Serial(int(digits), text.endswith("%"))

    def problem(self) -> str | None:
        """Why this serial cannot cut hosts in batches, if it cannot."""
        if self.size < 1:
            return f"{self}: a batch must hold at least one host"
        if self.percent and self.size > 100:
            return f"{self}: a batch holds at most 100% of the hosts"
        return None


@dataclass(frozen=True, slots=True)
class Instance:
    ref: InstanceRef
    type: str
    target: Target | None = None
    args: tuple[tuple[str, Value], ...] = ()
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    serial: Serial | None = None

    @property
    def name(self) -> str:
        return str(self.ref)


@dataclass(frozen=True, slots=True)
class PortRef:
    instance: InstanceRef
    port: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.instance}.{self.port}"


@dataclass(frozen=True, slots=True)
class Connection:
    user: PortRef
    provider: PortRef
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


FamilyOver = Literal["sites", "hosts"]


@dataclass(frozen=True, slots=True)
class Family:
    """`for VAR in sites { ... }` or `for VAR in hosts of GROUP { ... }`: the body is written
    once and expanded per site (or host) of the inventory, `name[VAR]` becoming `name[KEY]`."""

    var: str
    over: FamilyOver
    group: str | None = None
    instances: tuple[Instance, ...] = ()
    connections: tuple[Connection, ...] = ()
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Assembly:
    name: str
    components: tuple[ComponentType, ...] = ()
    instances: tuple[Instance, ...] = ()
    connections: tuple[Connection, ...] = ()
    families: tuple[Family, ...] = ()
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def component(self, name: str) -> ComponentType | None:
        return next((c for c in self.components if c.name == name), None)

    def instance(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)


@dataclass(frozen=True, slots=True)
class Module:
    """What one `.mad` file (with its imports) defines: component types and at most one
    assembly. `files` lists every file read, the entry file first."""

    components: tuple[ComponentType, ...]
    assembly: Assembly | None
    files: tuple[str, ...] = field(default=(), compare=False)
