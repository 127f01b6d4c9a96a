"""Parse-tree callbacks to model objects: `ModelBuilder` is the transformer lark's
tree-shaping callbacks call at each reduction, building the model directly, with no
intermediate tree; and the mapping rules the Python builder API (`madeus.builder`) shares."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from madeus.errors import Diagnostic
from madeus.frontend.lexer import Tok, decode_string, duration_seconds, token_span
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
    OnChange,
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
from madeus.source import Span

# --- items of a file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportStmt:
    """`import "path"`; the path may be a glob."""

    path: str
    span: Span


Item = ImportStmt | ComponentType | Assembly


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """The items of one file in source order, and the problems found while shaping them
    (numbers out of range, attributes given twice) which are not syntax errors."""

    path: str
    items: tuple[Item, ...]
    diagnostics: tuple[Diagnostic, ...] = ()


def split_use_names(
    names: Iterable[str], transitions: Iterable[str], places: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A use port's `for` list, split into (transitions, places). A name that is neither
    goes with the transitions, where the checks report it."""
    transition_set = set(transitions)
    place_set = set(places)
    bound_transitions: list[str] = []
    bound_places: list[str] = []
    for name in names:
        if name in place_set and name not in transition_set:
            bound_places.append(name)
        else:
            bound_transitions.append(name)
    return tuple(bound_transitions), tuple(bound_places)


def family_target(target: Target | None, var: str, over: FamilyOver) -> Target | None:
    """Inside `for site in sites`, `on site` means every host of the site."""
    if target is not None and over == "sites" and target.name == var and target.site is None:
        return Target(None, var, target.span)
    return target


# --- the transformer --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lit:
    value: Value
    span: Span


class _Attr:
    """A transition attribute or an instance argument. A plain slotted class: millions of
    these are built and dropped, and a frozen dataclass costs three times as much."""

    __slots__ = ("end", "key", "tok", "value")

    def __init__(self, key: str, value: Any, tok: Tok, end: Any) -> None:
        self.key = key
        self.value = value
        self.tok = tok  # the first token, to point at a repeated attribute
        self.end = end  # the last token (or _Lit), where the enclosing span may end


@dataclass(frozen=True, slots=True)
class _Group:
    """An intermediate list (params, places, names) with its span."""

    items: tuple[Any, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class _Use:
    name: str
    kind: PortKind
    names: tuple[str, ...]
    type: str | None
    optional: bool
    span: Span


@dataclass(frozen=True, slots=True)
class _Over:
    over: FamilyOver
    group: str | None


_ATTRIBUTE_WORDS = {
    "action": "an action",
    "duration": "an expected duration",
    "timeout": "a timeout",
    "retries": "a retry count",
    "behaviour": "a behaviour",
    "idempotent": '"idempotent"',
}


class ModelBuilder:
    """The callbacks of the grammar's rules, named after them; each gets the rule's children
    (every token kept, `None` for a missing optional part) and returns a model object."""

    def __init__(self, path: str) -> None:
        self.begin(path)

    def begin(self, path: str) -> None:
        """Start on a new file: lark binds the callbacks once, to one builder per parser."""
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self._repeated: list[tuple[str, str, Span]] = []  # (transition, attribute, span)
        self._durations: dict[str, float] = {}  # the same few durations recur all along
        # The keywords that opened a construct not reduced yet (the parser pushes them; each
        # construct's callback takes its own off): what a syntax error's message is about.
        self.opened: list[Tok] = []

    # -- spans and small values

    def _span(self, first: Any, last: Any) -> Span:
        # lark types a token's positions as optional; ours always have them.
        line: int
        col: int
        end_line: int
        end_col: int
        if isinstance(first, Tok):
            line, col = first.line, first.column  # type: ignore[assignment]
        else:
            line, col = first.span.line, first.span.col
        if isinstance(last, _Attr):
            last = last.end
        if isinstance(last, Tok):
            end_line, end_col = last.end_line, last.end_column  # type: ignore[assignment]
        else:
            end_line, end_col = last.span.end_line, last.span.end_col
        return Span(self.path, line, col, end_line, end_col)

    def _bounds(self, children: list[Any]) -> Span:
        first, last = children[0], children[-1]  # most often present: no search
        if first is None:
            first = next(c for c in children if c is not None)
        if last is None:
            last = next(c for c in reversed(children) if c is not None)
        return self._span(first, last)

    def _tok_span(self, tok: Tok) -> Span:
        return token_span(self.path, tok)

    def _problem(self, code: str, message: str, span: Span) -> None:
        self.diagnostics.append(Diagnostic(code, message, span))

    def _int(self, tok: Tok) -> int:
        try:
            return int(tok.value)
        except ValueError:  # more digits than int() accepts
            self._problem(
                "bad-number", f'number "{tok.value[:20]}..." is too long', self._tok_span(tok)
            )
            return 0

    def _duration(self, tok: Tok) -> float:
        seconds = self._durations.get(tok.value)
        if seconds is None:
            seconds = duration_seconds(tok.value)
            if not math.isfinite(seconds):
                self._problem("bad-duration", "duration is too large", self._tok_span(tok))
                return 0.0
            self._durations[tok.value] = seconds
        return seconds

    # -- file level

    def start(self, c: list[Any]) -> list[Item]:
        return [item for item in c if isinstance(item, ImportStmt | ComponentType | Assembly)]

    def import_stmt(self, c: list[Any]) -> ImportStmt:
        del self.opened[-1:]
        return ImportStmt(decode_string(c[1].value), self._span(c[0], c[1]))

    # -- component types

    def component(self, c: list[Any]) -> ComponentType:
        del self.opened[-1:]
        name = c[1].value
        params: tuple[Param, ...] = ()
        places: list[Place] = []
        transitions: list[Transition] = []
        provides: list[ProvidePort] = []
        raw_uses: list[_Use] = []
        on_change: list[OnChange] = []
        for member in c[2:]:
            if isinstance(member, Transition):
                transitions.append(member)
            elif isinstance(member, _Group):
                if member.items and isinstance(member.items[0], Param):
                    params = member.items
                else:
                    places.extend(member.items)
            elif isinstance(member, ProvidePort):
                provides.append(member)
            elif isinstance(member, _Use):
                raw_uses.append(member)
            elif isinstance(member, OnChange):
                on_change.append(member)
        for transition, attribute, span in self._repeated:
            self._problem(
                "duplicate-attribute",
                f'transition "{transition}" of component "{name}" has '
                f"{_ATTRIBUTE_WORDS[attribute]} twice",
                span,
            )
        self._repeated.clear()
        transition_names = [t.name for t in transitions]
        place_names = [p.name for p in places]
        uses = []
        for use in raw_uses:
            on_transitions, on_places = split_use_names(use.names, transition_names, place_names)
            uses.append(
                UsePort(
                    use.name, use.kind, on_transitions, on_places, use.type, use.optional, use.span
                )
            )
        return ComponentType(
            name,
            params,
            tuple(places),
            tuple(transitions),
            tuple(provides),
            tuple(uses),
            self._span(c[0], c[-1]),
            tuple(on_change),
        )

    def params(self, c: list[Any]) -> _Group:
        return _Group(tuple(p for p in c if isinstance(p, Param)), self._span(c[0], c[-1]))

    def param(self, c: list[Any]) -> Param:
        default = c[-1].value if isinstance(c[-1], _Lit) else None
        return Param(c[0].value, cast(ParamType, c[2].value), default, self._bounds(c))

    def places(self, c: list[Any]) -> _Group:
        del self.opened[-1:]
        return _Group(tuple(p for p in c if isinstance(p, Place)), self._span(c[0], c[-1]))

    def place(self, c: list[Any]) -> Place:
        mark = c[1]
        return Place(c[0].value, mark is not None, self._span(c[0], mark or c[0]))

    def transition(self, c: list[Any]) -> Transition:
        del self.opened[-1:]
        name = c[1].value
        attrs: dict[str, Any] = {}
        for attr in c[6:]:
            if isinstance(attr, _Attr):
                key, value = attr.key, attr.value
            else:
                key, value = "action", attr
            if key in attrs:
                self._repeated.append((name, key, self._attr_span(attr)))
            else:
                attrs[key] = value
        return Transition(
            name,
            c[3].value,
            c[5].value,
            attrs.get("action"),
            attrs.get("duration"),
            attrs.get("timeout"),
            attrs.get("retries", 0),
            attrs.get("behaviour", DEFAULT_BEHAVIOUR),
            attrs.get("idempotent"),
            self._span(c[0], c[-1]),
        )

    def _attr_span(self, attr: Any) -> Span:
        if isinstance(attr, _Attr):
            return self._tok_span(attr.tok)
        return cast(Span, attr.span)

    def shell(self, c: list[Any]) -> Action:
        return ShellAction(decode_string(c[1].value), self._span(c[0], c[1]))

    def ansible_playbook(self, c: list[Any]) -> Action:
        return AnsibleAction(playbook=decode_string(c[2].value), span=self._span(c[0], c[2]))

    def ansible_role(self, c: list[Any]) -> Action:
        tasks = decode_string(c[4].value) if c[4] is not None else None
        return AnsibleAction(role=decode_string(c[2].value), tasks=tasks, span=self._bounds(c))

    def ansible_tasks(self, c: list[Any]) -> Action:
        return AnsibleAction(tasks=decode_string(c[2].value), span=self._span(c[0], c[2]))

    def python_call(self, c: list[Any]) -> Action:
        return PythonAction(decode_string(c[1].value), self._span(c[0], c[1]))

    def upload(self, c: list[Any]) -> Action:
        source, dest = decode_string(c[1].value), decode_string(c[3].value)
        return UploadAction(source, dest, self._span(c[0], c[3]))

    def expected(self, c: list[Any]) -> _Attr:
        return _Attr("duration", self._duration(c[1]), c[0], c[1])

    def timeout(self, c: list[Any]) -> _Attr:
        return _Attr("timeout", self._duration(c[1]), c[0], c[1])

    def retries(self, c: list[Any]) -> _Attr:
        return _Attr("retries", self._int(c[1]), c[0], c[1])

    def behaviour(self, c: list[Any]) -> _Attr:
        return _Attr("behaviour", c[1].value, c[0], c[1])

    def idempotent(self, c: list[Any]) -> _Attr:
        said = c[1] if len(c) > 1 else None
        return _Attr("idempotent", said is None or said.value == "true", c[0], said or c[0])

    def provide(self, c: list[Any]) -> ProvidePort:
        del self.opened[-1:]
        kind, name = c[1].value, c[2].value
        port_type = c[4].value if c[4] is not None else None
        value = c[6].value if c[6] is not None else None
        names: _Group = c[-1]
        return ProvidePort(name, kind, names.items, port_type, value, self._span(c[0], names))

    def template(self, c: list[Any]) -> _Lit:
        return _Lit(decode_string(c[0].value), self._tok_span(c[0]))

    def output_of(self, c: list[Any]) -> _Lit:
        return _Lit(cast(Any, OutputOf(c[2].value)), self._span(c[0], c[2]))

    def use(self, c: list[Any]) -> _Use:
        del self.opened[-2:]
        kind, name = c[1].value, c[2].value
        port_type = c[4].value if c[4] is not None else None
        names: _Group = c[-1]
        return _Use(name, kind, names.items, port_type, c[5] is not None, self._span(c[0], names))

    def on_change(self, c: list[Any]) -> OnChange:
        del self.opened[-1:]  # `change`
        params: _Group = c[3]
        behaviours: _Group = c[5]
        return OnChange(params.items, behaviours.items, self._span(c[0], behaviours))

    def name_list(self, c: list[Any]) -> _Group:
        return _Group(tuple(t.value for t in c if t.type == "NAME"), self._span(c[0], c[-1]))

    # -- assemblies

    def assembly(self, c: list[Any]) -> Assembly:
        del self.opened[-1:]
        instances = tuple(s for s in c[3:] if isinstance(s, Instance))
        connections = tuple(s for s in c[3:] if isinstance(s, Connection))
        families = tuple(s for s in c[3:] if isinstance(s, Family))
        return Assembly(c[1].value, (), instances, connections, families, self._span(c[0], c[-1]))

    def instance(self, c: list[Any]) -> Instance:
        ref: InstanceRef = c[0]
        args: tuple[tuple[str, Value], ...] = c[3].items if c[3] is not None else ()
        return Instance(ref, c[2].value, c[5], args, self._bounds(c), c[6])

    def serial(self, c: list[Any]) -> Serial:
        return Serial(self._int(c[1]), c[2] is not None, self._bounds(c))

    def args(self, c: list[Any]) -> _Group:
        pairs = tuple(a for a in c if isinstance(a, _Attr))
        return _Group(tuple((a.key, a.value) for a in pairs), self._span(c[0], c[-1]))

    def arg(self, c: list[Any]) -> _Attr:
        return _Attr(c[0].value, c[2].value, c[0], c[2])

    def target(self, c: list[Any]) -> Target:
        site = c[2].value if c[2] is not None else None
        if c[0].type == "STRING":  # an Ansible host pattern
            return Target(decode_string(c[0].value), site, self._bounds(c), pattern=True)
        return Target(c[0].value, site, self._bounds(c))

    def connect(self, c: list[Any]) -> Connection:
        del self.opened[-1:]
        return Connection(c[1], c[3], self._span(c[0], c[3]))

    def port_ref(self, c: list[Any]) -> PortRef:
        return PortRef(c[0], c[2].value, self._span(c[0], c[2]))

    def instance_ref(self, c: list[Any]) -> InstanceRef:
        index = c[2].value if c[2] is not None else None
        return InstanceRef(c[0].value, index, self._bounds(c))

    def family(self, c: list[Any]) -> Family:
        del self.opened[-1:]
        var: str = c[1].value
        over: _Over = c[3]
        body = c[5:-1]
        instances = tuple(
            replace(i, target=family_target(i.target, var, over.over))
            for i in body
            if isinstance(i, Instance)
        )
        connections = tuple(s for s in body if isinstance(s, Connection))
        return Family(var, over.over, over.group, instances, connections, self._span(c[0], c[-1]))

    def over_sites(self, c: list[Any]) -> _Over:
        return _Over("sites", None)

    def over_hosts(self, c: list[Any]) -> _Over:
        return _Over("hosts", c[2].value)

    # -- values

    def string(self, c: list[Any]) -> _Lit:
        return _Lit(decode_string(c[0].value), self._tok_span(c[0]))

    def number(self, c: list[Any]) -> _Lit:
        tok: Tok = c[0]
        span = self._tok_span(tok)
        text = tok.value
        if "." not in text and "e" not in text and "E" not in text:
            return _Lit(self._int(tok), span)
        value = float(text)
        if not math.isfinite(value):
            self._problem("bad-number", f"number {text} is out of range", span)
            value = 0.0
        return _Lit(value, span)

    def true(self, c: list[Any]) -> _Lit:
        return _Lit(True, self._tok_span(c[0]))

    def false(self, c: list[Any]) -> _Lit:
        return _Lit(False, self._tok_span(c[0]))

    def env(self, c: list[Any]) -> _Lit:
        return _Lit(EnvRef(decode_string(c[2].value)), self._span(c[0], c[3]))
