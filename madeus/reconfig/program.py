"""Reconfiguration programs as data: instructions, and the builder scripts use to write them.

A program is a sequence of instructions (the Concerto rules, docs/semantics.md):

    add(instance, type, target?, args)   a new instance, its tokens in its initial places
    remove(instance)                     waits until the instance is idle, then deletes it
    connect("u.p", "v.q")                connects use port u.p to provide port v.q
    disconnect("u.p", "v.q")             removes that connection
    push(instance, behaviour)            queues a behaviour on the instance (does not wait)
    wait(instance)                       waits until the instance's queue is empty
    wait_all()                           waits until every queue is empty

Programs are built first, then verified (`madeus.verify.behaviours`), then executed
(`madeus.reconfig.executor`). The builder (`ProgramBuilder`, the `r` a script's
`reconfigure(r)` receives) checks each instruction against the configuration as the program
changes it (names, port kinds and types, connections) and remembers the line of the script
that wrote it, so that every diagnostic, and every step of a counterexample, points there.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from madeus.errors import Diagnostic, InventoryError, MadeusError
from madeus.model import ComponentType, ProvidePort, Serial, UsePort, Value
from madeus.source import NO_SPAN, Span

if TYPE_CHECKING:
    from madeus.inventory import Inventory
    from madeus.reconfig.state import Configuration


class ProgramError(MadeusError):
    """A reconfiguration program is ill-formed (every problem, at the script's lines)."""


@dataclass(frozen=True, slots=True)
class Add:
    instance: str
    type: str
    target: str | None = None  # an inventory group or host; None: like an instance without `on`
    args: tuple[tuple[str, Value], ...] = ()
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    # The hosts themselves, as the files resolved them (a synthesised program): then `target`
    # is not read.
    hosts: tuple[str, ...] | None = None
    serial: Serial | None = None  # a synthesised program: the files' `serial`

    def placement(self, inventory: Inventory) -> tuple[str, ...]:
        """The hosts the new instance runs on."""
        return self.hosts if self.hosts is not None else inventory.placement(self.target)

    def __str__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.args)
        on = f", on={self.target!r}" if self.target is not None else ""
        if self.hosts is not None:
            on = f", hosts={list(self.hosts)!r}"
        if self.serial is not None:
            size = self.serial.size
            on += f", serial={f'{size}%' if self.serial.percent else size!r}"
        return f"add({self.instance!r}, {self.type!r}{on}{extra})"


@dataclass(frozen=True, slots=True)
class Remove:
    instance: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f"remove({self.instance!r})"


@dataclass(frozen=True, slots=True)
class Connect:
    user: str
    user_port: str
    provider: str
    provider_port: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f'connect("{self.user}.{self.user_port}", "{self.provider}.{self.provider_port}")'


@dataclass(frozen=True, slots=True)
class Disconnect:
    user: str
    user_port: str
    provider: str
    provider_port: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f'disconnect("{self.user}.{self.user_port}", "{self.provider}.{self.provider_port}")'


@dataclass(frozen=True, slots=True)
class Push:
    instance: str
    behaviour: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f"push({self.instance!r}, {self.behaviour!r})"


@dataclass(frozen=True, slots=True)
class Wait:
    instance: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return f"wait({self.instance!r})"


@dataclass(frozen=True, slots=True)
class WaitAll:
    span: Span = field(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        return "wait_all()"


Instruction = Add | Remove | Connect | Disconnect | Push | Wait | WaitAll


@dataclass(frozen=True, slots=True)
class Program:
    """A finite sequence of instructions; `source` names where it was written."""

    instructions: tuple[Instruction, ...] = ()
    source: str = "<api>"

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)

    def __getitem__(self, index: int) -> Instruction:
        return self.instructions[index]

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.instructions)

    def pushes(self) -> Iterator[tuple[int, Push]]:
        for index, instruction in enumerate(self.instructions):
            if isinstance(instruction, Push):
                yield index, instruction


# --- the builder --------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*(?:\[[A-Za-z0-9_.-]+\])?$")
_THIS_FILE = __file__


def _q(name: str) -> str:
    return f'"{name}"'


def caller_span() -> Span:
    """Where the script called the builder: the first frame outside this module, with the
    columns of the call when Python knows them."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back
    if frame is None:
        return NO_SPAN
    info = inspect.getframeinfo(frame, context=0)
    positions = info.positions
    line = info.lineno
    if positions is not None and positions.lineno is not None:
        line = positions.lineno
        col = (positions.col_offset or 0) + 1
        end_line = positions.end_lineno or line
        end_col = (positions.end_col_offset or col - 1) + 1
        if end_line != line:
            end_col = col + 1
        return Span(info.filename, line, col, line, end_col)
    return Span(info.filename, line, 1, line, 1)


@dataclass(slots=True)
class _Shadow:
    """The configuration as the program changes it, instruction after instruction: what the
    builder checks each new instruction against."""

    types: dict[str, ComponentType]  # instance -> type
    links: dict[tuple[str, str], tuple[str, str]]  # (user, port) -> (provider, port)
    removed: set[str]


class ProgramBuilder:
    """Builds a `Program`; what a script's `reconfigure(r)` receives as `r`.

    Every method checks its instruction and returns the builder (calls chain). Problems are
    collected, each at the script line that made it, and raised together by `build()` as a
    `ProgramError`; an instruction with a problem is left out.
    """

    def __init__(
        self,
        state: Configuration,
        components: Mapping[str, ComponentType] | None = None,
        *,
        source: str = "<api>",
    ) -> None:
        self._state = state
        self._components: dict[str, ComponentType] = dict(
            components if components is not None else state.components
        )
        self._source = source
        self._instructions: list[Instruction] = []
        self._problems: list[Diagnostic] = []
        self._shadow = _Shadow(
            {i.name: i.component for i in state.instances},
            {(lk.user, lk.user_port): (lk.provider, lk.provider_port) for lk in state.links},
            set(),
        )

    @property
    def state(self) -> Configuration:
        """The configuration the program starts from (read-only: frozen data)."""
        return self._state

    @property
    def instances(self) -> tuple[str, ...]:
        """The instances as the instructions so far leave them."""
        return tuple(self._shadow.types)

    @property
    def problems(self) -> tuple[Diagnostic, ...]:
        return tuple(self._problems)

    # --- instructions ---------------------------------------------------------------------

    def add(
        self,
        instance: str,
        type: str,
        on: str | None = None,
        *,
        args: Mapping[str, Value] | None = None,
        serial: int | str | None = None,
        **values: Value,
    ) -> ProgramBuilder:
        """A new instance of component type `type`, placed on `on` (an inventory group or
        host; None: the local machine), its tokens in its initial places. Parameters as
        keywords (or in `args`); `serial=2` or `serial="25%"`: its behaviours run batch by
        batch, as `serial` in an assembly."""
        span = caller_span()
        given = {**(args or {}), **values}
        problems = []
        rolling = None
        if serial is not None:
            try:
                rolling = Serial.of(serial)
            except ValueError as exc:
                problems.append(str(exc))
            else:
                problems += [p for p in (rolling.problem(),) if p is not None]
        if not isinstance(instance, str) or not _NAME.match(instance):
            problems.append(f"{instance!r} is not a valid instance name")
        elif instance in self._shadow.types:
            problems.append(f"instance {_q(instance)} already exists")
        elif instance in self._shadow.removed:
            problems.append(
                f"instance {_q(instance)} was removed earlier in this program: give the new "
                "one another name"
            )
        component = self._components.get(type)
        if component is None:
            known = ", ".join(sorted(self._components)) or "none"
            problems.append(f"unknown component type {_q(type)} (known: {known})")
        else:
            names = {p.name for p in component.params}
            for name in given:
                if name not in names:
                    problems.append(f"component {_q(type)} has no parameter {_q(name)}")
            for p in component.params:
                if p.default is None and p.name not in given:
                    problems.append(f"parameter {_q(p.name)} of {_q(type)} needs a value")
        problems += self._placed(on)
        if self._fail(problems, span):
            return self
        assert component is not None
        self._shadow.types[instance] = component
        return self._append(Add(instance, type, on, tuple(given.items()), span, serial=rolling))

    def _placed(self, on: str | None) -> list[str]:
        """Why `on` cannot place an instance (a target no host matches), if it cannot."""
        if on is None:
            return []
        if not isinstance(on, str) or not on:
            return [f"on={on!r} is not a host, group or host pattern"]
        try:
            hosts = self._state.inventory.placement(on)
        except InventoryError as exc:
            return [f"on={on!r}: {d.message}" for d in exc.diagnostics]
        if not hosts:
            return [f"on={on!r} matches no host of the inventory: an instance must run somewhere"]
        return []

    def remove(self, instance: str) -> ProgramBuilder:
        """Delete an instance once it is idle. Disconnect it first."""
        span = caller_span()
        problems = self._known(instance)
        if not problems:
            attached = sorted(
                f"{u}.{up} -> {p}.{pp}"
                for (u, up), (p, pp) in self._shadow.links.items()
                if instance in (u, p)
            )
            if attached:
                problems.append(
                    f"instance {_q(instance)} is still connected ({', '.join(attached)}): "
                    "disconnect it first"
                )
        if self._fail(problems, span):
            return self
        del self._shadow.types[instance]
        self._shadow.removed.add(instance)
        return self._append(Remove(instance, span))

    def connect(self, user: str, provider: str) -> ProgramBuilder:
        """`connect("user.port", "provider.port")`: a use port to a provide port."""
        span = caller_span()
        parsed = self._ports(user, provider)
        if isinstance(parsed, list):
            self._fail(parsed, span)
            return self
        (u, up, use), (p, pp, provide) = parsed
        problems = []
        if use.kind != provide.kind:
            problems.append(
                f"cannot connect {use.kind} port {_q(user)} to {provide.kind} port {_q(provider)}"
            )
        elif use.type is not None and provide.type is not None and use.type != provide.type:
            problems.append(
                f"port types differ: {_q(user)} is {_q(use.type)}, {_q(provider)} is "
                f"{_q(provide.type)}"
            )
        current = self._shadow.links.get((u, up))
        if current is not None:
            problems.append(
                f"use port {_q(user)} is already connected to {_q('.'.join(current))}: "
                "disconnect it first"
            )
        if self._fail(problems, span):
            return self
        self._shadow.links[(u, up)] = (p, pp)
        return self._append(Connect(u, up, p, pp, span))

    def disconnect(self, user: str, provider: str) -> ProgramBuilder:
        """Remove the connection `user.port -> provider.port`. The program is unsafe if the
        use port can be in use at that moment (the verifier checks it)."""
        span = caller_span()
        parsed = self._ports(user, provider)
        if isinstance(parsed, list):
            self._fail(parsed, span)
            return self
        (u, up, _), (p, pp, _) = parsed
        if self._shadow.links.get((u, up)) != (p, pp):
            self._fail([f"{_q(user)} is not connected to {_q(provider)}"], span)
            return self
        del self._shadow.links[(u, up)]
        return self._append(Disconnect(u, up, p, pp, span))

    def push(self, instance: str, behaviour: str) -> ProgramBuilder:
        """Queue `behaviour` on `instance`; the program goes on at once."""
        span = caller_span()
        problems = self._known(instance)
        if not problems:
            component = self._shadow.types[instance]
            if behaviour not in component.behaviours:
                known = ", ".join(component.behaviours) or "none"
                problems.append(
                    f"component {_q(component.name)} (instance {_q(instance)}) has no "
                    f"behaviour {_q(behaviour)} (it has: {known})"
                )
        if self._fail(problems, span):
            return self
        return self._append(Push(instance, behaviour, span))

    def wait(self, instance: str) -> ProgramBuilder:
        """Wait until every behaviour queued on `instance` has ended."""
        span = caller_span()
        if self._fail(self._known(instance), span):
            return self
        return self._append(Wait(instance, span))

    def wait_all(self) -> ProgramBuilder:
        """Wait until every behaviour queued so far, on every instance, has ended."""
        return self._append(WaitAll(caller_span()))

    # --- the result -----------------------------------------------------------------------

    def build(self) -> Program:
        """The program; ProgramError with every problem found."""
        if self._problems:
            raise ProgramError(self._problems)
        return Program(tuple(self._instructions), self._source)

    # --- helpers --------------------------------------------------------------------------

    def _append(self, instruction: Instruction) -> ProgramBuilder:
        self._instructions.append(instruction)
        return self

    def _fail(self, problems: Sequence[str], span: Span) -> bool:
        for message in problems:
            self._problems.append(Diagnostic("bad-instruction", message, span))
        return bool(problems)

    def _known(self, instance: str) -> list[str]:
        if instance in self._shadow.types:
            return []
        if instance in self._shadow.removed:
            return [f"instance {_q(instance)} was removed earlier in this program"]
        known = ", ".join(sorted(self._shadow.types)) or "none"
        return [f"unknown instance {_q(instance)} (instances: {known})"]

    def _ports(
        self, user: str, provider: str
    ) -> tuple[tuple[str, str, UsePort], tuple[str, str, ProvidePort]] | list[str]:
        problems: list[str] = []
        sides: list[tuple[str, str, UsePort | ProvidePort]] = []
        for text, want in ((user, "use"), (provider, "provide")):
            instance, dot, port = str(text).rpartition(".")
            if not dot or not instance or not port:
                problems.append(f'{text!r} is not of the form "instance.port"')
                continue
            known = self._known(instance)
            if known:
                problems.extend(known)
                continue
            component = self._shadow.types[instance]
            found = component.port(port)
            if found is None:
                problems.append(f"component {_q(component.name)} has no port {_q(port)}")
            elif want == "use" and not isinstance(found, UsePort):
                problems.append(f"{_q(text)} is a provide port: the first port must be a use port")
            elif want == "provide" and not isinstance(found, ProvidePort):
                problems.append(f"{_q(text)} is a use port: the second port must be a provide port")
            else:
                sides.append((instance, port, found))
        if problems:
            return problems
        (u, up, use), (p, pp, provide) = sides
        assert isinstance(use, UsePort) and isinstance(provide, ProvidePort)
        return (u, up, use), (p, pp, provide)
