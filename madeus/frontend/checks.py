"""Semantic checks: every problem of a model, as `Diagnostic`s, in one pass.

The checks work on the model alone, so the builder API gets the same ones as the DSL. With
the source texts at hand (`sources`, path -> text) a diagnostic points at the very name at
fault (the `configurd` in `pull: initiated -> configurd`) rather than at the whole element:
the element's span is re-read on demand, only for elements with a problem.

Every lookup goes through dicts built once per component or assembly: the model's own
`ComponentType.transition()` & co. are linear scans, and models can hold 10^5 transitions.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from madeus.errors import Diagnostic, Related, did_you_mean
from madeus.frontend.lexer import decode_string_mapped, scan_tokens
from madeus.model import (
    PARAM_TYPES,
    Action,
    AnsibleAction,
    Assembly,
    ComponentType,
    Connection,
    EnvRef,
    Family,
    Instance,
    InstanceRef,
    Module,
    OutputOf,
    Param,
    Place,
    Port,
    PortRef,
    ProvidePort,
    ShellAction,
    Transition,
    UploadAction,
    UsePort,
    Value,
)
from madeus.scc import is_cyclic, strongly_connected
from madeus.shell import unsafe_placeholders
from madeus.source import Span
from madeus.template import TemplateError, placeholders

__all__ = [
    "check_assembly",
    "check_components",
    "check_module",
    "sort_diagnostics",
    "value_fits",
]

HOST_PLACEHOLDERS = frozenset({"host.name", "host.address"})


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """By file, line and column; problems without a position keep their order."""
    return sorted(diagnostics, key=lambda d: (d.span.path, d.span.line, d.span.col))


def check_module(module: Module, sources: Mapping[str, str] | None = None) -> list[Diagnostic]:
    if module.assembly is not None:
        return check_assembly(module.assembly, sources)
    return check_components(module.components, sources)


def check_components(
    components: Sequence[ComponentType], sources: Mapping[str, str] | None = None
) -> list[Diagnostic]:
    checker = _Checker(sources or {})
    checker.components(components)
    return sort_diagnostics(checker.found)


def check_assembly(
    assembly: Assembly, sources: Mapping[str, str] | None = None
) -> list[Diagnostic]:
    """The assembly and every component type it holds."""
    checker = _Checker(sources or {})
    types = checker.components(assembly.components)
    checker.assembly(assembly, types)
    return sort_diagnostics(checker.found)


def value_fits(value: Value, param_type: str) -> bool:
    """Whether `value` may be given to a parameter of `param_type` (env() always may)."""
    if isinstance(value, EnvRef):
        return True
    if param_type in ("str", "secret"):
        return isinstance(value, str)
    if param_type == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if param_type == "int":
        return isinstance(value, int)
    if param_type == "float":
        return isinstance(value, int | float)
    return False


def _describe_value(value: Value) -> str:
    """`the string "x"`, `the int 3`..."""
    if isinstance(value, EnvRef):
        return f'env("{value.name}")'
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:27] + "..."
        return f'the string "{shown}"'
    return f"the {type(value).__name__} {value}"


# --- positions inside elements -----------------------------------------------------------


class Locator:
    """Finds a name inside an element's span by re-reading the element's source text."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources
        self._line_starts: dict[str, list[int]] = {}

    def _starts(self, path: str) -> list[int] | None:
        text = self.sources.get(path)
        if text is None:
            return None
        starts = self._line_starts.get(path)
        if starts is None:
            starts = [0]
            position = text.find("\n")
            while position >= 0:
                starts.append(position + 1)
                position = text.find("\n", position + 1)
            self._line_starts[path] = starts
        return starts

    def _region(self, span: Span) -> tuple[str, int, int] | None:
        starts = self._starts(span.path)
        if starts is None or not span.known or span.end_line > len(starts):
            return None
        start = starts[span.line - 1] + span.col - 1
        end = starts[span.end_line - 1] + span.end_col - 1
        return self.sources[span.path], start, end

    def _span(self, path: str, start: int, end: int) -> Span:
        starts = self._line_starts[path]
        line = bisect.bisect_right(starts, start)
        end_line = bisect.bisect_right(starts, max(end - 1, start))
        return Span(
            path, line, start - starts[line - 1] + 1, end_line, end - starts[end_line - 1] + 1
        )

    def find(self, span: Span, *words: str) -> Span:
        """The span of the token `words[-1]`, the first one after `words[:-1]` in order;
        `span` itself if it cannot be found."""
        region = self._region(span)
        if region is None or not words:
            return span
        wanted = 0
        for _, token, start, end in scan_tokens(*region):
            if token == words[wanted]:
                wanted += 1
                if wanted == len(words):
                    return self._span(span.path, start, end)
        return span

    def in_string(self, span: Span, nth: int, offset: int, length: int) -> Span:
        """The span of characters `offset` to `offset + length` of the value of the `nth`
        string literal inside `span`."""
        region = self._region(span)
        if region is None:
            return span
        strings = (token for token in scan_tokens(*region) if token[0])
        for seen, (_, raw, base, _) in enumerate(strings):
            if seen < nth:
                continue
            _, where = decode_string_mapped(raw)
            if not where:
                break
            first = where[min(offset, len(where) - 1)]
            last = where[min(offset + max(length, 1) - 1, len(where) - 1)]
            return self._span(span.path, base + first, base + last + 1)
        return span


# --- the checker ----------------------------------------------------------------------------


def _q(name: object) -> str:
    return f'"{name}"'


@dataclass(slots=True)
class _Names:
    """One component's namespaces, built once."""

    params: dict[str, Param] = field(default_factory=dict)
    places: dict[str, Place] = field(default_factory=dict)
    transitions: dict[str, Transition] = field(default_factory=dict)
    ports: dict[str, Port] = field(default_factory=dict)


class _Checker:
    def __init__(self, sources: Mapping[str, str]) -> None:
        self.found: list[Diagnostic] = []
        self.locate = Locator(sources)
        self._port_index: dict[str, dict[str, Port]] = {}
        self._placeholder_cache: dict[str, list[tuple[str, int]]] = {}

    def error(self, code: str, message: str, span: Span, *related: Related) -> None:
        # Notes without a position (models built in Python) would only say "<api>".
        notes = tuple(r for r in related if r.span.known)
        self.found.append(Diagnostic(code, message, span, related=notes))

    # -- component types

    def components(self, components: Sequence[ComponentType]) -> dict[str, ComponentType]:
        types: dict[str, ComponentType] = {}
        for component in components:
            first = types.get(component.name)
            if first is not None:
                if first is component:
                    continue
                self.error(
                    "duplicate-component",
                    f"component {_q(component.name)} is defined twice",
                    self._name_of(component.span, "component", component.name),
                    Related(
                        "first defined here", self._name_of(first.span, "component", first.name)
                    ),
                )
                continue
            types[component.name] = component
            self.component(component)
        return types

    def _name_of(self, span: Span, keyword: str, name: str) -> Span:
        return self.locate.find(span, keyword, name)

    def component(self, c: ComponentType) -> None:
        names = _Names()
        self._params(c, names)
        self._places(c, names)
        self._transitions(c, names)
        known = self._known_placeholders(c)
        self._actions(c, known)
        self._ports(c, names, known)
        self._on_change(c, names)
        if c.places and c.initial_places and self._transitions_well_placed(c, names):
            self._reachability(c, names)
            self._deploy_cycles(c, names)

    def _params(self, c: ComponentType, names: _Names) -> None:
        for param in c.params:
            if param.name in names.params:
                first = names.params[param.name]
                self.error(
                    "duplicate-param",
                    f"parameter {_q(param.name)} of component {_q(c.name)} is declared twice",
                    self.locate.find(param.span, param.name),
                    Related("first declared here", self.locate.find(first.span, first.name)),
                )
                continue
            names.params[param.name] = param
            if param.type not in PARAM_TYPES:
                self.error(
                    "unknown-param-type",
                    f"unknown type {_q(param.type)} for parameter {_q(param.name)} of component "
                    f"{_q(c.name)} (the types are str, int, float, bool and secret)",
                    self.locate.find(param.span, ":", param.type),
                )
            elif param.default is not None and not value_fits(param.default, param.type):
                self.error(
                    "param-default-type",
                    f"default value of parameter {_q(param.name)} of component {_q(c.name)} "
                    f"should be {_type_words(param.type)}, not {_describe_value(param.default)}",
                    param.span,
                )

    def _places(self, c: ComponentType, names: _Names) -> None:
        if not c.places:
            self.error(
                "no-places",
                f"component {_q(c.name)} has no places",
                self._name_of(c.span, "component", c.name),
            )
            return
        if not c.initial_places:
            self.error(
                "no-initial-place",
                f'component {_q(c.name)} has no initial place (mark one with "*", as in '
                f'"places {c.places[0].name}*")',
                self._name_of(c.span, "component", c.name),
            )
        for place in c.places:
            first = names.places.get(place.name)
            if first is not None:
                self.error(
                    "duplicate-name",
                    f"place {_q(place.name)} is declared twice in component {_q(c.name)}",
                    place.span,
                    Related("first declared here", first.span),
                )
            else:
                names.places[place.name] = place

    def _transitions(self, c: ComponentType, names: _Names) -> None:
        for t in c.transitions:
            place = names.places.get(t.name)
            first = names.transitions.get(t.name)
            if place is not None:
                self.error(
                    "duplicate-name",
                    f"transition {_q(t.name)} has the same name as place {_q(t.name)} in "
                    f"component {_q(c.name)} (places and transitions share their names)",
                    self.locate.find(t.span, "transition", t.name),
                    Related("the place is declared here", place.span),
                )
            elif first is not None:
                self.error(
                    "duplicate-name",
                    f"transition {_q(t.name)} is declared twice in component {_q(c.name)}",
                    self.locate.find(t.span, "transition", t.name),
                    Related(
                        "first declared here", self.locate.find(first.span, "transition", t.name)
                    ),
                )
            if first is None:
                names.transitions[t.name] = t
            for end, anchor in ((t.source, ":"), (t.target, "->")):
                if end not in names.places:
                    self.error(
                        "unknown-place",
                        f"unknown place {_q(end)} in {_in_transition(t, c)}"
                        + did_you_mean(end, names.places),
                        self.locate.find(t.span, anchor, end),
                    )
            if t.retries < 0:
                self.error(
                    "bad-retries",
                    f"retries of {_in_transition(t, c)} must be 0 or more, not {t.retries}",
                    self.locate.find(t.span, "retries"),
                )
            if t.timeout is not None and t.timeout <= 0:
                self.error(
                    "bad-timeout",
                    f"timeout of {_in_transition(t, c)} must be longer than zero",
                    self.locate.find(t.span, "timeout"),
                )
            if t.duration is not None and t.duration < 0:
                self.error(
                    "bad-duration",
                    f"expected duration of {_in_transition(t, c)} must not be negative",
                    t.span,
                )

    def _known_placeholders(self, c: ComponentType) -> set[str]:
        known = {p.name for p in c.params}
        known.update(u.name for u in c.uses if u.kind == "data")
        return known

    def _placeholders(self, text: str) -> list[tuple[str, int]]:
        # Generated and real assemblies repeat the same commands many times.
        found = self._placeholder_cache.get(text)
        if found is None:
            found = self._placeholder_cache[text] = placeholders(text)
        return found

    def _templates(self, texts: Sequence[str], span: Span, where: str, known: set[str]) -> None:
        for nth, text in enumerate(texts):
            try:
                found = self._placeholders(text)
            except TemplateError as problem:
                self.error(
                    "bad-template",
                    f"in {where}: {problem.reason}",
                    self.locate.in_string(span, nth, problem.offset, 1),
                )
                continue
            for name, offset in found:
                if name in known or name in HOST_PLACEHOLDERS:
                    continue
                parts = name.split(".")
                if len(parts) == 3 and parts[:2] == ["host", "vars"]:
                    continue
                if len(parts) == 1:
                    hint = "not a parameter or a data use port"
                else:
                    hint = "the host placeholders are host.name, host.address and host.vars.KEY"
                self.error(
                    "unknown-placeholder",
                    f"unknown placeholder {_q('{' + name + '}')} in {where} ({hint})",
                    self.locate.in_string(span, nth, offset, len(name) + 2),
                )

    def _actions(self, c: ComponentType, known: set[str]) -> None:
        for t in c.transitions:
            if t.action is not None:
                texts = _action_texts(t.action)
                if texts:
                    self._templates(texts, t.action.span, _in_transition(t, c), known)
                if isinstance(t.action, ShellAction):
                    self._shell_contexts(t.action, _in_transition(t, c))

    def _shell_contexts(self, action: ShellAction, where: str) -> None:
        """Placeholders where no quoting keeps a value literal (see madeus/shell.py)."""
        try:
            found = unsafe_placeholders(action.command)
        except TemplateError:
            return  # reported by _templates
        for problem in found:
            name_end = action.command.index("}", problem.offset) + 1
            self.error(
                "unsafe-placeholder",
                f"in {where}: {problem.reason}",
                self.locate.in_string(action.span, 0, problem.offset, name_end - problem.offset),
            )

    def _ports(self, c: ComponentType, names: _Names, known: set[str]) -> None:
        ports: list[Port] = [*c.provides, *c.uses]
        for port in ports:
            first = names.ports.get(port.name)
            if first is not None:
                self.error(
                    "duplicate-port",
                    f"port {_q(port.name)} is declared twice in component {_q(c.name)}",
                    self.locate.find(port.span, port.kind, port.name),
                    Related(
                        "first declared here", self.locate.find(first.span, first.kind, first.name)
                    ),
                )
            else:
                names.ports[port.name] = port
        for provide in c.provides:
            self._provide(c, names, provide, known)
        for use in c.uses:
            self._use(c, names, use)

    def _provide(self, c: ComponentType, names: _Names, port: ProvidePort, known: set[str]) -> None:
        where = f"{port.kind} port {_q(port.name)} of component {_q(c.name)}"
        if not port.places:
            self.error("empty-binding", f"provide {where} is bound to no place", port.span)
        for place in port.places:
            if place not in names.places:
                self.error(
                    "unknown-place",
                    f"unknown place {_q(place)} in provide {where}"
                    + did_you_mean(place, names.places),
                    self.locate.find(port.span, "at", place),
                )
        if port.kind == "service" and port.value is not None:
            self.error(
                "service-value",
                f"{where} cannot have a value: only data ports carry values",
                self.locate.find(port.span, "="),
            )
        elif port.kind == "data" and port.value is None:
            self.error(
                "data-no-value",
                f'{where} has no value (write "provide data {port.name} = ... at ...")',
                port.span,
            )
        elif isinstance(port.value, OutputOf):
            if port.value.transition not in names.transitions:
                self.error(
                    "unknown-transition",
                    f"unknown transition {_q(port.value.transition)} in {where}"
                    + did_you_mean(port.value.transition, names.transitions),
                    self.locate.find(port.span, "of", port.value.transition),
                )
        elif isinstance(port.value, str):
            self._templates([port.value], port.span, where, known)

    def _on_change(self, c: ComponentType, names: _Names) -> None:
        behaviours = c.behaviours
        for rule in c.on_change:
            for name in rule.params:
                if name not in names.params:
                    self.error(
                        "unknown-name",
                        f"unknown parameter {_q(name)} in `on change of` of component "
                        f"{_q(c.name)}" + did_you_mean(name, names.params),
                        self.locate.find(rule.span, "of", name),
                    )
            for name in rule.behaviours:
                if name not in behaviours:
                    self.error(
                        "unknown-behaviour",
                        f"component {_q(c.name)} has no behaviour {_q(name)} (no transition "
                        "declares it)" + did_you_mean(name, behaviours),
                        self.locate.find(rule.span, ":", name),
                    )

    def _use(self, c: ComponentType, names: _Names, port: UsePort) -> None:
        where = f"use port {_q(port.name)} of component {_q(c.name)}"
        if not port.transitions and not port.places:
            self.error("empty-binding", f"{where} is bound to nothing", port.span)
        for name in port.transitions:
            if name in names.transitions:
                continue
            if name in names.places:
                message = f"{_q(name)} in {where} is a place, not a transition"
            else:
                message = f"unknown transition or place {_q(name)} in {where}" + did_you_mean(
                    name, [*names.transitions, *names.places]
                )
            self.error("unknown-name", message, self.locate.find(port.span, "for", name))
        for name in port.places:
            if name not in names.places:
                self.error(
                    "unknown-place",
                    f"unknown place {_q(name)} in {where}" + did_you_mean(name, names.places),
                    self.locate.find(port.span, "for", name),
                )

    def _transitions_well_placed(self, c: ComponentType, names: _Names) -> bool:
        places = names.places
        return all(t.source in places and t.target in places for t in c.transitions)

    def _reachability(self, c: ComponentType, names: _Names) -> None:
        following: dict[str, list[str]] = {}
        for t in c.transitions:
            following.setdefault(t.source, []).append(t.target)
        reached = set(c.initial_places)
        queue = deque(reached)
        while queue:
            for target in following.get(queue.popleft(), ()):
                if target not in reached:
                    reached.add(target)
                    queue.append(target)
        for place in names.places.values():
            if place.name not in reached:
                self.error(
                    "unreachable-place",
                    f"place {_q(place.name)} of component {_q(c.name)} cannot be reached from "
                    f"the initial places",
                    place.span,
                )

    def _deploy_cycles(self, c: ComponentType, names: _Names) -> None:
        deploy = [t for t in c.transitions if t.behaviour == "deploy"]
        if not _has_cycle(deploy):
            return
        for cycle in _cycles(deploy):
            first, rest = cycle[0], cycle[1:]
            steps = ", ".join(f"{_q(t.name)} ({t.source} -> {t.target})" for t in cycle)
            self.error(
                "deploy-cycle",
                f"the deploy behaviour of component {_q(c.name)} has a cycle: {steps}",
                self.locate.find(first.span, "transition", first.name),
                *(
                    Related(
                        f"the cycle goes on with {_q(t.name)}",
                        self.locate.find(t.span, "transition", t.name),
                    )
                    for t in rest
                ),
            )

    # -- assemblies

    def assembly(self, a: Assembly, types: Mapping[str, ComponentType]) -> None:
        members: dict[str, tuple[Instance, Family | None]] = {}
        for instance in a.instances:
            self._declare(instance, None, members)
        for family in a.families:
            self._family(family)
            for instance in family.instances:
                self._declare(instance, family, members)
        for instance, _ in members.values():
            self._instance(instance, types)
        connected: dict[tuple[str, str], Connection] = {}
        for connection in a.connections:
            self._connection(connection, None, members, types, connected)
        for family in a.families:
            for connection in family.connections:
                self._connection(connection, family, members, types, connected)
        for instance, _ in members.values():
            self._unconnected(instance, types, connected)

    def _declare(
        self,
        instance: Instance,
        family: Family | None,
        members: dict[str, tuple[Instance, Family | None]],
    ) -> None:
        ref = instance.ref
        if family is None and ref.index is not None:
            self.error(
                "index-outside-family",
                f"instance {_q(ref)} has an index outside a family (indexes name the members "
                f'of a "for" family)',
                ref.span,
            )
        elif family is not None and ref.index is None:
            self.error(
                "family-unindexed",
                f"instance {_q(ref)} in the family over {_over(family)} must be indexed by the "
                f"loop variable: write {_q(f'{ref.name}[{family.var}]')}",
                ref.span,
            )
        elif family is not None and ref.index != family.var:
            self.error(
                "family-index",
                f"index {_q(ref.index)} of instance {_q(ref)} is not the loop variable "
                f"{_q(family.var)}",
                ref.span,
            )
        first = members.get(ref.name)
        if first is not None:
            other = first[0].ref
            message = (
                f"instance {_q(ref)} is declared twice"
                if str(other) == str(ref)
                else f"instance {_q(ref)} has the same name as instance {_q(other)}"
            )
            self.error(
                "duplicate-instance", message, ref.span, Related("first declared here", other.span)
            )
            return
        members[ref.name] = (instance, family)

    def _family(self, family: Family) -> None:
        if (family.over == "hosts") != (family.group is not None):
            message = (
                'a family over hosts needs a group, as in "for h in hosts of compute"'
                if family.over == "hosts"
                else f"a family over sites takes no group (got {_q(family.group)})"
            )
            self.error("bad-family", message, family.span)
        for instance in family.instances:
            target = instance.target
            if target is None or target.site is None:
                continue
            if family.over == "hosts":
                self.error(
                    "family-hosts-site",
                    f'instance {_q(instance.ref)} is in a family over {_over(family)}: "in '
                    f'{target.site}" cannot restrict it to a site',
                    self.locate.find(target.span, "in", target.site),
                )
            elif target.site != family.var:
                self.error(
                    "family-site",
                    f"site {_q(target.site)} of instance {_q(instance.ref)} is not the loop "
                    f"variable {_q(family.var)}",
                    self.locate.find(target.span, "in", target.site),
                )

    def _instance(self, instance: Instance, types: Mapping[str, ComponentType]) -> None:
        component = types.get(instance.type)
        name = _q(instance.ref)
        if component is None:
            self.error(
                "unknown-component",
                f"unknown component type {_q(instance.type)} for instance {name}"
                + did_you_mean(instance.type, types),
                self.locate.find(instance.span, "=", instance.type),
            )
            return
        problem = instance.serial.problem() if instance.serial is not None else None
        if instance.serial is not None and problem is not None:
            self.error("bad-serial", f"{problem} (instance {name})", instance.serial.span)
        params = {p.name: p for p in component.params}
        given: set[str] = set()
        for key, value in instance.args:
            if key in given:
                self.error(
                    "duplicate-arg",
                    f"parameter {_q(key)} is given twice to instance {name}",
                    self.locate.find(instance.span, "(", key, key),
                )
                continue
            given.add(key)
            param = params.get(key)
            if param is None:
                self.error(
                    "unknown-param",
                    f"unknown parameter {_q(key)} for instance {name} of component "
                    f"{_q(component.name)}" + did_you_mean(key, params),
                    self.locate.find(instance.span, "(", key),
                )
            elif param.type in PARAM_TYPES and not value_fits(value, param.type):
                self.error(
                    "arg-type",
                    f"parameter {_q(key)} of instance {name} should be "
                    f"{_type_words(param.type)}, not {_describe_value(value)}",
                    self.locate.find(instance.span, "(", key),
                )
        for param in component.params:
            if param.default is None and param.name not in given:
                self.error(
                    "missing-param",
                    f"instance {name} gives no value to parameter {_q(param.name)} of component "
                    f"{_q(component.name)}, which has no default",
                    instance.ref.span,
                )

    def _resolve(
        self,
        ref: InstanceRef,
        family: Family | None,
        members: Mapping[str, tuple[Instance, Family | None]],
    ) -> Instance | None:
        entry = members.get(ref.name)
        if entry is None:
            self.error(
                "unknown-instance",
                f"unknown instance {_q(ref.name)}" + did_you_mean(ref.name, members),
                ref.span,
            )
            return None
        instance, home = entry
        if ref.index is not None and home is None:
            self.error(
                "family-index",
                f"instance {_q(ref.name)} is not a family member: write it without an index",
                ref.span,
            )
            return None
        if family is None:
            if ref.index is not None:
                return instance  # one member, by its key (`a[east]`): checked when resolved
            if home is not None:
                self.error(
                    "family-member-outside",
                    f"instance {_q(instance.ref)} is a member of the family over {_over(home)}: "
                    f"connect it inside a family, or name one member, as in "
                    f"{_q(f'{ref.name}[KEY]')}",
                    ref.span,
                )
                return None
            return instance
        if ref.index is None:
            if home is not None:
                self.error(
                    "family-unindexed",
                    f"family member {_q(ref.name)} must be written "
                    f"{_q(f'{ref.name}[{family.var}]')} in its family",
                    ref.span,
                )
                return None
            return instance
        if ref.index != family.var:
            return instance  # another member, by its key (`a[east]`): checked when resolved
        assert home is not None
        if (home.over, home.group) != (family.over, family.group):
            self.error(
                "family-domain",
                f"instance {_q(instance.ref)} belongs to a family over {_over(home)}, "
                f"not over {_over(family)}",
                ref.span,
            )
            return None
        return instance

    def _port(
        self, ref: PortRef, instance: Instance, types: Mapping[str, ComponentType]
    ) -> Port | None:
        component = types.get(instance.type)
        if component is None:
            return None  # reported with the instance
        ports = self._port_index.get(component.name)
        if ports is None:
            ports = {}
            declared: list[Port] = [*component.provides, *component.uses]
            for each in declared:
                ports.setdefault(each.name, each)
            self._port_index[component.name] = ports
        port = ports.get(ref.port)
        if port is None:
            self.error(
                "unknown-port",
                f"unknown port {_q(ref.port)} of instance {_q(ref.instance)} (component "
                f"{_q(component.name)})" + did_you_mean(ref.port, ports),
                self.locate.find(ref.span, ".", ref.port),
            )
        return port

    def _side(
        self,
        ref: PortRef,
        family: Family | None,
        members: Mapping[str, tuple[Instance, Family | None]],
        types: Mapping[str, ComponentType],
    ) -> Port | None:
        instance = self._resolve(ref.instance, family, members)
        return self._port(ref, instance, types) if instance is not None else None

    def _connection(
        self,
        connection: Connection,
        family: Family | None,
        members: Mapping[str, tuple[Instance, Family | None]],
        types: Mapping[str, ComponentType],
        connected: dict[tuple[str, str], Connection],
    ) -> None:
        user = self._side(connection.user, family, members, types)
        provider = self._side(connection.provider, family, members, types)
        if isinstance(user, ProvidePort):
            self.error(
                "connect-user",
                f"{_q(connection.user)} is a provide port: the left side of a connection must "
                "be a use port",
                connection.user.span,
            )
            user = None
        if isinstance(provider, UsePort):
            self.error(
                "connect-provider",
                f"{_q(connection.provider)} is a use port: the right side of a connection "
                "must be a provide port",
                connection.provider.span,
            )
            provider = None
        if isinstance(user, UsePort) and isinstance(provider, ProvidePort):
            self._compatible(connection, user, provider)
        if isinstance(user, UsePort):
            key = (connection.user.instance.name, user.name)
            first = connected.get(key)
            if family is not None and connection.user.instance.index is None:
                # Expanded, the family would connect this one port once per member.
                self.error(
                    "connected-twice",
                    f"use port {_q(user.name)} of instance {_q(connection.user.instance)} would "
                    f"be connected once per member of the family over {_over(family)}: a use "
                    "port is connected once",
                    connection.user.span,
                )
                connected.setdefault(key, connection)
            elif first is not None:
                self.error(
                    "connected-twice",
                    f"use port {_q(user.name)} of instance {_q(connection.user.instance)} is "
                    f"connected twice",
                    connection.span,
                    Related("first connected here", first.span),
                )
            else:
                connected[key] = connection

    def _compatible(self, connection: Connection, user: UsePort, provider: ProvidePort) -> None:
        user_name, provider_name = _q(connection.user), _q(connection.provider)
        notes = (
            Related(f"use port {_q(user.name)} is declared here", user.span),
            Related(f"provide port {_q(provider.name)} is declared here", provider.span),
        )
        if user.kind != provider.kind:
            self.error(
                "kind-mismatch",
                f"cannot connect {user.kind} use port {user_name} to {provider.kind} provide port "
                f"{provider_name}",
                connection.span,
                *notes,
            )
        elif user.type is not None and provider.type is not None and user.type != provider.type:
            self.error(
                "type-mismatch",
                f"cannot connect use port {user_name} of type {_q(user.type)} to provide port "
                f"{provider_name} of type {_q(provider.type)}",
                connection.span,
                *notes,
            )

    def _unconnected(
        self,
        instance: Instance,
        types: Mapping[str, ComponentType],
        connected: Mapping[tuple[str, str], Connection],
    ) -> None:
        component = types.get(instance.type)
        if component is None:
            return
        for use in component.uses:
            if not use.optional and (instance.ref.name, use.name) not in connected:
                self.error(
                    "not-connected",
                    f"use port {_q(use.name)} of instance {_q(instance.ref)} is not connected",
                    instance.ref.span,
                )


# --- helpers --------------------------------------------------------------------------------


def _in_transition(t: Transition, c: ComponentType) -> str:
    return f"transition {_q(t.name)} of component {_q(c.name)}"


def _over(family: Family) -> str:
    return "sites" if family.over == "sites" else f"the hosts of {_q(family.group)}"


def _type_words(param_type: str) -> str:
    return {
        "str": "a string",
        "secret": "a string",
        "int": "an int",
        "float": "a number",
        "bool": "true or false",
    }[param_type]


def _action_texts(action: Action) -> list[str]:
    """The template strings of an action, in source order."""
    if isinstance(action, ShellAction):
        return [action.command]
    if isinstance(action, UploadAction):
        return [action.source, action.dest]
    if isinstance(action, AnsibleAction):
        return [text for text in (action.playbook, action.role, action.tasks) if text is not None]
    return []


def _has_cycle(transitions: Sequence[Transition]) -> bool:
    """Kahn's algorithm over the places: a cycle leaves places that never get free."""
    incoming: dict[str, int] = {}
    following: dict[str, list[str]] = {}
    for t in transitions:
        incoming[t.target] = incoming.get(t.target, 0) + 1
        incoming.setdefault(t.source, 0)
        following.setdefault(t.source, []).append(t.target)
    ready = [place for place, count in incoming.items() if count == 0]
    freed = 0
    while ready:
        place = ready.pop()
        freed += 1
        for target in following.get(place, ()):
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return freed < len(incoming)


def _cycles(transitions: Sequence[Transition]) -> list[list[Transition]]:
    """One cycle per strongly connected group of places, starting with the transition
    declared first, following the shortest way back."""
    groups = _strongly_connected(transitions)
    cycles: list[list[Transition]] = []
    for group in groups:
        inside = [t for t in transitions if t.source in group and t.target in group]
        if not inside:
            continue
        first = inside[0]
        path = _shortest(inside, first.target, first.source)
        cycles.append([first, *path])
    return cycles


def _strongly_connected(transitions: Sequence[Transition]) -> list[set[str]]:
    """The groups of places on a cycle (a group of one place only with a self-loop)."""
    number: dict[str, int] = {}
    for t in transitions:
        number.setdefault(t.source, len(number))
        number.setdefault(t.target, len(number))
    following: list[list[int]] = [[] for _ in number]
    for t in transitions:
        following[number[t.source]].append(number[t.target])
    names = list(number)
    return [
        {names[i] for i in group}
        for group in strongly_connected(len(names), following.__getitem__)
        if is_cyclic(group, following.__getitem__)
    ]


def _shortest(transitions: Sequence[Transition], start: str, goal: str) -> list[Transition]:
    """The transitions of a shortest way from place `start` to place `goal` (breadth-first)."""
    if start == goal:
        return []
    leaving: dict[str, list[Transition]] = {}
    for t in transitions:
        leaving.setdefault(t.source, []).append(t)
    came_by: dict[str, Transition] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        place = queue.popleft()
        for t in leaving.get(place, ()):
            if t.target in seen:
                continue
            seen.add(t.target)
            came_by[t.target] = t
            if t.target == goal:
                path = []
                node = goal
                while node != start:
                    step = came_by[node]
                    path.append(step)
                    node = step.source
                return path[::-1]
            queue.append(t.target)
    return []
