"""Counterexamples a person can act on: verdicts turned into diagnostics at source lines.

A deadlock is a cycle of waits (from z3's unsat core, `deploy.py`). Between two consecutive
transitions of the cycle, the wait goes through exactly one place: either the waiting
transition's own source place (the previous step of its lifecycle), or a use port bound to it,
the connection, the provide port, and the place of its group that the next transition enters.
Each such step becomes notes at the lines that declare it, so the reader can follow the cycle
through the `.mad` files and decide which dependency to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from madeus.errors import Diagnostic, Related
from madeus.model import DEFAULT_BEHAVIOUR, ComponentType
from madeus.net import Net
from madeus.source import NO_SPAN, Span
from madeus.verify.deploy import DeployProblem, DeployVerdict
from madeus.verify.graph import Node, WaitGraph
from madeus.verify.safety import UnsafeUse

# Names listed in one message before "...": a message stays one readable line.
MAX_NAMED = 6
# Steps of a cycle given notes; a longer cycle ends with one note saying how many were left.
MAX_STEP_NOTES = 64


def q(name: str) -> str:
    return f'"{name}"'


def _and(names: Sequence[str]) -> str:
    quoted = [q(n) for n in names]
    if len(quoted) > MAX_NAMED:
        rest = len(quoted) - (MAX_NAMED - 1)
        return ", ".join(quoted[: MAX_NAMED - 1]) + f" and {rest} more"
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _or(names: Sequence[str]) -> str:
    quoted = [q(n) for n in names]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


# Tokens of the language, enough to find a name inside a declaration: strings and comments
# are skipped whole, so a name inside them is never pointed at.
_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*'
    r"|[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*|\S"
)


class Locator:
    """Narrows a declaration's span to one name in it (`transition NAME`, the place after
    `at`, the transition after `for`), so that carets point at what the message is about.
    Reads each file once; a span it cannot read is returned whole."""

    def __init__(self) -> None:
        self._starts: dict[str, tuple[str, list[int]] | None] = {}

    def _file(self, path: str) -> tuple[str, list[int]] | None:
        if path not in self._starts:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self._starts[path] = None
            else:
                starts = [0]
                starts.extend(i + 1 for i, c in enumerate(text) if c == "\n")
                self._starts[path] = (text, starts)
        return self._starts[path]

    def find(self, span: Span, *words: str) -> Span:
        """The span of `words[-1]`, the first occurrence after `words[:-1]` in order."""
        if not span.known or not words:
            return span
        found = self._file(span.path)
        if found is None:
            return span
        text, starts = found
        if span.end_line > len(starts):
            return span
        begin = starts[span.line - 1] + span.col - 1
        end = starts[span.end_line - 1] + span.end_col - 1
        wanted = 0
        for match in _TOKEN.finditer(text, begin, end):
            if match.group() == words[wanted]:
                wanted += 1
                if wanted == len(words):
                    line = span.line + text.count("\n", begin, match.start())
                    col = match.start() - starts[line - 1] + 1
                    return Span(span.path, line, col, line, col + len(match.group()))
        return span


class Sources:
    """Where things are declared, for one compiled net."""

    def __init__(self, compiled: Net, locator: Locator | None = None) -> None:
        self.net = compiled
        self.instances = {i.name: i for i in compiled.instances}
        self.locator = locator if locator is not None else Locator()

    def component(self, instance: str) -> ComponentType:
        return self.instances[instance].shape.component

    def transition(self, instance: str, name: str) -> Span:
        """At the transition's name."""
        t = self.component(instance).transition(name)
        return self.locator.find(t.span, "transition", name) if t is not None else NO_SPAN

    def place(self, instance: str, name: str) -> Span:
        p = self.component(instance).place(name)
        return p.span if p is not None else NO_SPAN

    def port(self, instance: str, name: str, *words: str) -> Span:
        """The port's declaration, narrowed to `words` (e.g. "for", a bound transition)."""
        port = self.component(instance).port(name)
        if port is None:
            return NO_SPAN
        return self.locator.find(port.span, *words) if words else port.span

    def link(self, instance: str, use: str) -> Span:
        served = self.net.provider.get((instance, use))
        return served.span if served is not None else NO_SPAN

    def provider(self, instance: str, use: str) -> str:
        served = self.net.provider.get((instance, use))
        return served.label if served is not None else "?"

    def entering(self, instance: str, place: str) -> list[str]:
        """`instance.t` of the deploy transitions entering `place`."""
        return [
            f"{instance}.{t.name}"
            for t in self.component(instance).transitions_of(DEFAULT_BEHAVIOUR)
            if t.target == place
        ]

    def never_reached_note(self, instance: str, place: str) -> Related:
        """Why `place` is never reached in deploy: no deploy transition enters it."""
        others = [
            f'"{instance}.{t.name}" (behaviour "{t.behaviour}")'
            for t in self.component(instance).transitions
            if t.target == place and t.behaviour != DEFAULT_BEHAVIOUR
        ]
        text = f"no transition of the deploy behaviour enters {q(f'{instance}.{place}')}"
        if others:
            text += ": only " + ", ".join(others)
        return Related(text, self.place(instance, place))


def _when_ends(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"when {q(names[0])} ends"
    return f"when {_and(names)} have all ended"


# --- deployment: cycles and never-reached places ----------------------------------------------


def deploy_diagnostics(verdict: DeployVerdict, src: Sources) -> list[Diagnostic]:
    graph = verdict.graph
    result = []
    for problem in verdict.problems:
        if problem.kind == "deadlock":
            result.append(_deadlock(graph, src, problem))
        elif problem.kind == "never-starts":
            result.append(_never_starts(graph, src, problem))
        else:
            result.append(_unreachable_provider(graph, src, problem))
    return result


def _steps(graph: WaitGraph, cycle: Sequence[int]) -> list[list[Node]]:
    """The cycle cut at its transitions: each step is [transition, ..., place], the place
    being entered by the next step's transition (the first one, for the last step)."""
    steps: list[list[Node]] = []
    for n in cycle:
        node = graph.nodes[n]
        if node.kind == "transition":
            steps.append([node])
        else:
            steps[-1].append(node)
    return steps


def _deadlock(graph: WaitGraph, src: Sources, problem: DeployProblem) -> Diagnostic:
    steps = _steps(graph, problem.nodes)
    names = [step[0].label for step in steps]
    first = steps[0][0]
    if len(names) == 1:
        chain = f"transition {q(names[0])} waits for itself"
    else:
        shown = names[1 : MAX_NAMED + 1]
        chain = f"transition {q(names[0])} waits for {q(shown[0])}"
        chain += "".join(f", which waits for {q(n)}" for n in shown[1:])
        if len(names) > MAX_NAMED + 1:
            chain += f", ... (a cycle of {len(names)} transitions)"
        chain += f", which waits for {q(names[0])}"
    related: list[Related] = []
    for i, step in enumerate(steps):
        if i == MAX_STEP_NOTES:
            related.append(
                Related(
                    f"... and {len(steps) - i} more steps back to {q(names[0])}",
                    src.transition(first.instance, first.name),
                )
            )
            break
        following = steps[(i + 1) % len(steps)][0]
        related.extend(_step_notes(graph, src, step, following))
    if not problem.by_z3:
        related.append(
            Related(
                "z3 timed out on this cycle: it was found by walking the wait graph",
                src.transition(first.instance, first.name),
            )
        )
    related.extend(_downstream(graph, src, problem.downstream, "this cycle"))
    return Diagnostic(
        "deadlock",
        f"deployment can deadlock: {chain}",
        src.transition(first.instance, first.name),
        related=tuple(related),
    )


def _step_notes(
    graph: WaitGraph, src: Sources, step: Sequence[Node], following: Node
) -> list[Related]:
    t = step[0]
    place = step[-1]
    # What the next transition's end leads to: the place; it may need others to end too.
    entering = src.entering(place.instance, place.name)
    others = [e for e in entering if e != following.label]
    ends = _when_ends([following.label, *others])
    if len(step) == 2:  # the transition's own source place
        return [
            Related(
                f"{q(t.label)} starts only once place {q(place.label)} is reached, {ends}",
                src.transition(t.instance, t.name),
            )
        ]
    use = step[1]
    provide = next((n for n in step if n.kind == "provide"), None)
    notes = [
        Related(
            f"{q(t.label)} waits for use port {q(use.label)}, bound to it here",
            src.port(use.instance, use.name, "for", t.name),
        ),
        Related(
            f"{q(use.label)} is connected to {q(src.provider(use.instance, use.name))} here",
            src.link(use.instance, use.name),
        ),
    ]
    if provide is not None:
        group = _group(src, provide)
        text = f"{q(provide.label)} is provided once place {_or(group)} is reached"
        if len(group) > 1:
            rest = [g for g in group if g != place.label]
            text += f"; {q(place.label)} is reached {ends}, and {_or(rest)} is not reached either"
        else:
            text += f", {ends}"
        notes.append(Related(text, src.port(provide.instance, provide.name, "at", place.name)))
    return notes


def _group(src: Sources, provide: Node) -> list[str]:
    port = src.component(provide.instance).provide(provide.name)
    places = port.places if port is not None else ()
    return [f"{provide.instance}.{p}" for p in dict.fromkeys(places)]


def _downstream(
    graph: WaitGraph, src: Sources, downstream: Sequence[int], what: str
) -> list[Related]:
    if not downstream:
        return []
    labels = [graph.nodes[n].label for n in downstream]
    first = graph.nodes[downstream[0]]
    if len(labels) == 1:
        text = f"because of {what}, {q(labels[0])} never starts either"
    else:
        text = f"because of {what}, {len(labels)} more transitions never start: {_and(labels)}"
    return [Related(text, src.transition(first.instance, first.name))]


def _never_starts(graph: WaitGraph, src: Sources, problem: DeployProblem) -> Diagnostic:
    t, place = (graph.nodes[n] for n in problem.nodes)
    related = [src.never_reached_note(place.instance, place.name)]
    related.extend(_downstream(graph, src, problem.downstream, "this"))
    return Diagnostic(
        "never-starts",
        f"transition {q(t.label)} can never start: its source place {q(place.label)} is never "
        "reached in the deploy behaviour",
        src.transition(t.instance, t.name),
        related=tuple(related),
    )


def _unreachable_provider(graph: WaitGraph, src: Sources, problem: DeployProblem) -> Diagnostic:
    t, use, provide = (graph.nodes[n] for n in problem.nodes)
    provider = src.provider(use.instance, use.name)
    group = _group(src, provide)
    related = [
        Related(
            f"{q(t.label)} waits for use port {q(use.label)}, bound to it here",
            src.port(use.instance, use.name, "for", t.name),
        ),
        Related(
            f"{q(use.label)} is connected to {q(provider)} here", src.link(use.instance, use.name)
        ),
        Related(
            f"{q(provide.label)} is provided once place {_or(group)} is reached",
            src.port(provide.instance, provide.name, "at", group[0].split(".", 1)[1]),
        ),
    ]
    related.extend(src.never_reached_note(provide.instance, p.split(".", 1)[1]) for p in group)
    related.extend(_downstream(graph, src, problem.downstream, "this"))
    return Diagnostic(
        "unreachable-provider",
        f"transition {q(t.label)} can never start: it waits for use port {q(use.label)}, "
        f"connected to {q(provider)}, which is never provided",
        src.transition(t.instance, t.name),
        related=tuple(related),
    )


# --- port safety ------------------------------------------------------------------------------


def safety_diagnostic(unsafe: UnsafeUse, src: Sources) -> Diagnostic:
    use = f"{unsafe.instance}.{unsafe.port}"
    place = f"{unsafe.instance}.{unsafe.place}"
    provider = f"{unsafe.link.provider}.{unsafe.link.provider_port}"
    group = [f"{unsafe.link.provider}.{p}" for p in unsafe.group]
    never = not unsafe.waiting
    related = [
        Related(f"{q(use)} is connected to {q(provider)} here", unsafe.link.span),
        Related(
            f"{q(provider)} is provided once place {_or(group)} is reached",
            src.port(unsafe.link.provider, unsafe.link.provider_port, "at", *unsafe.group[:1]),
        ),
    ]
    if never:
        related.extend(src.never_reached_note(unsafe.link.provider, p) for p in unsafe.group)
        status = f"{q(provider)} is never provided"
    else:
        status = f"none of {_and(unsafe.waiting)} has ended"
        if len(unsafe.waiting) == 1:
            status = f"{q(unsafe.waiting[0])} has not ended"
    component = src.component(unsafe.instance)
    p = component.place(unsafe.place)
    if not unsafe.witness and p is not None and p.initial:
        example = f"{q(place)} is an initial place: it is marked from the start, while {status}"
    elif not unsafe.witness:
        example = f"{q(place)} is reached at once, while {status}"
    else:
        sequence = ", then ".join(q(t) for t in unsafe.witness)
        ended = "ends" if len(unsafe.witness) == 1 else "end"
        example = f"for example: {sequence} {ended}; then {q(place)} is reached while {status}"
    related.append(Related(example, src.place(unsafe.instance, unsafe.place)))
    return Diagnostic(
        "port-safety",
        f"use port {q(use)} can be in use before it is provided: place {q(place)}, bound to "
        f"it, can be marked while {q(provider)} is not provided",
        src.port(unsafe.instance, unsafe.port, "for", unsafe.place),
        related=tuple(related),
    )


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int]:
    span = diagnostic.span
    return (span.path, span.line, span.col)


def net_edges(graph: WaitGraph, cycle: Sequence[int], closed: bool) -> list[tuple[str, str]]:
    """The edges of the dependency net along a chain of waits (in the net's direction, which
    is the opposite of "waits for"), docks included: what `--highlight-problems` draws."""
    nodes = [graph.nodes[n] for n in cycle]
    pairs = list(zip(nodes, nodes[1:] + nodes[:1] if closed else nodes[1:], strict=False))
    edges: list[tuple[str, str]] = []
    for waiter, waited in pairs:
        edges.extend(_net_edges(waiter, waited))
    return edges


def _net_edges(waiter: Node, waited: Node) -> list[tuple[str, str]]:
    if waiter.kind == "transition" and waited.kind == "place":
        dock = f"{waiter.instance}:dock-out:{waited.name}:{waiter.name}"
        return [(waited.net_id, dock), (dock, waiter.net_id)]
    if waiter.kind == "place" and waited.kind == "transition":
        dock = f"{waited.instance}:dock-in:{waited.name}:{waiter.name}"
        return [(waited.net_id, dock), (dock, waiter.net_id)]
    # use -> transition, provide -> use (connection), place -> provide: one edge each.
    return [(waited.net_id, waiter.net_id)]


def dock_nodes(edges: Iterable[tuple[str, str]]) -> set[str]:
    return {n for edge in edges for n in edge if ":dock-" in n}
