"""Text to model: one `.mad` file to its imports, component types and assembly.

The grammar (`dsl/madeus.lark`) and lark's LALR tables and tree-shaping callbacks define
the language; `_ModelBuilder` is the transformer those callbacks call, building model objects
directly, with no intermediate parse tree. The lexer and the loop over the tables are our
own: a 100,000-transition file has two million tokens, which lark's generic lexer and parser
take about 14 s to turn into a tree, and this module about 4 s into the model.

The lexer is contextual in the same way as lark's: a keyword is a keyword only where the
parser state accepts it (elsewhere it is a name), and a number is a `SIGNED_INT` only where
one is expected. `tests/test_frontend.py` checks that both parsers accept the same texts and
see the same tokens.

Syntax errors become `ParseError` diagnostics in plain words (`expected a place name after
"->", found "}"`). After an error the parser resumes at the next line that starts a
top-level item, so one run reports the first error of each broken item.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, NamedTuple, cast

from lark import Tree
from lark.parse_tree_builder import ParseTreeBuilder

from madeus.errors import Diagnostic, ParseError, did_you_mean
from madeus.frontend.grammar import Tables, tables
from madeus.memory import gc_paused
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
    OutputOf,
    Param,
    ParamType,
    Place,
    PortKind,
    PortRef,
    ProvidePort,
    PythonAction,
    ShellAction,
    Target,
    Transition,
    UploadAction,
    UsePort,
    Value,
)
from madeus.source import Span

__all__ = [
    "ImportStmt",
    "ParsedFile",
    "Tok",
    "decode_string",
    "family_target",
    "parse_duration",
    "parse_text",
    "scan_tokens",
    "split_use_names",
    "tokenize",
]

MAX_SYNTAX_ERRORS = 20


class Tok(NamedTuple):
    """A token, with lark's attribute names. End columns are exclusive."""

    type: str
    value: str
    line: int
    column: int
    end_line: int
    end_column: int


# NamedTuple's own constructor is a Python function: too slow for millions of tokens.
_new_tok: Callable[[type[Tok], tuple[str, str, int, int, int, int]], Tok] = tuple.__new__

# One match per token, blanks before it included; `lastindex` says which class matched
# (None for the blanks at the very end). Mirrors the terminals of madeus.lark; no DOTALL,
# since `\\.` must not cross a line, as in lark.
_TOKEN_RE = re.compile(
    r"""
    [ \t\r\f]*
    (?:
     (\#[^\n]*)                                          # 1 comment
    |(\n[ \t\r\f\n]*)                                   # 2 newlines and the indentation
    |(\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|"(?:[^"\\\n]|\\.)*")  # 3 STRING
    |([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*)            # 4 NAME or keyword
    |((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)                      # 5 DURATION
    |([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)                 # 6 SIGNED_NUMBER or SIGNED_INT
    |(->|[{}()\[\]:,=.~*])                                 # 7 punctuation
    |(.)                                                   # 8 anything else: an error
    |\Z
    )
    """,
    re.VERBOSE,
)
_COMMENT, _NEWLINES, _STRING, _WORD, _DURATION, _NUMBER, _PUNCT, _BAD = range(1, 9)

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_RESUME = re.compile(r"^(?:component|assembly|import)\b", re.MULTILINE)


def scan_tokens(text: str, start: int, end: int) -> Iterator[tuple[bool, str, int, int]]:
    """`(is a string literal, token text, start, end)` for each token of `text[start:end]`,
    comments and newlines left out: to find a name inside an element's span again."""
    for match in _TOKEN_RE.finditer(text, start, end):
        kind = match.lastindex
        if kind is not None and kind > _NEWLINES:
            yield kind == _STRING, match.group(kind), match.start(kind), match.end(kind)


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


# --- mapping rules shared with the builder ---------------------------------------------------


def parse_duration(text: str) -> float:
    """`1m30s` -> 90.0, `500ms` -> 0.5. Raises ValueError if `text` is not a duration."""
    if _DURATION_RE.fullmatch(text) is None:
        raise ValueError(f"not a duration: {text!r}")
    return _seconds(text)


def _seconds(text: str) -> float:
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


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


def decode_string(raw: str) -> str:
    """The value of a string literal (quotes included in `raw`)."""
    if not raw.startswith('"""') and "\\" not in raw:
        return raw[1:-1]
    return decode_string_mapped(raw)[0]


def decode_string_mapped(raw: str) -> tuple[str, list[int]]:
    """The value of a string literal and, for each of its characters, its index in `raw`.

    `\\"` `\\\\` `\\n` `\\t` are escapes; any other backslash is kept as written (shell
    commands are full of them). A triple-quoted string loses one leading newline and its
    common indentation, which is removed before escapes are read."""
    if raw.startswith('"""'):
        start = 3
        body = raw[3:-3]
        if body.startswith("\n"):
            body, start = body[1:], 4
        chars, where = _dedent(body, start)
    else:
        chars, where = raw[1:-1], list(range(1, len(raw) - 1))
    if "\\" not in chars:
        return chars, where
    out: list[str] = []
    out_where: list[int] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if char == "\\" and i + 1 < len(chars):
            escaped = _ESCAPES.get(chars[i + 1])
            if escaped is not None:
                out.append(escaped)
                out_where.append(where[i])
                i += 2
                continue
        out.append(char)
        out_where.append(where[i])
        i += 1
    return "".join(out), out_where


def _dedent(body: str, start: int) -> tuple[str, list[int]]:
    """textwrap.dedent, keeping track of where each character came from."""
    lines = body.split("\n")
    indents = [line[: len(line) - len(line.lstrip(" \t"))] for line in lines if line.strip(" \t")]
    margin = _common_prefix(indents)
    chars: list[str] = []
    where: list[int] = []
    offset = start
    for number, line in enumerate(lines):
        if number:
            chars.append("\n")
            where.append(offset - 1)
        if line.strip(" \t"):
            kept = line[len(margin) :]
            chars.append(kept)
            where.extend(range(offset + len(margin), offset + len(line)))
        offset += len(line) + 1
    return "".join(chars), where


def _common_prefix(texts: Sequence[str]) -> str:
    if not texts:
        return ""
    low, high = min(texts), max(texts)
    size = 0
    while size < len(low) and low[size] == high[size]:
        size += 1
    return low[:size]


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


class _ModelBuilder:
    """The callbacks of the grammar's rules, named after them; each gets the rule's children
    (every token kept, `None` for a missing optional part) and returns a model object."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self._repeated: list[tuple[str, str, Span]] = []  # (transition, attribute, span)
        self._durations: dict[str, float] = {}  # the same few durations recur all along

    # -- spans and small values

    def _span(self, first: Any, last: Any) -> Span:
        if isinstance(first, tuple):
            line, col = first[2], first[3]
        else:
            line, col = first.span.line, first.span.col
        if isinstance(last, _Attr):
            last = last.end
        if isinstance(last, tuple):
            end_line, end_col = last[4], last[5]
        else:
            end_line, end_col = last.span.end_line, last.span.end_col
        return Span(self.path, line, col, end_line, end_col)

    def _bounds(self, children: list[Any]) -> Span:
        first = next(c for c in children if c is not None)
        last = next(c for c in reversed(children) if c is not None)
        return self._span(first, last)

    def _tok_span(self, tok: Tok) -> Span:
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)

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
            seconds = _seconds(tok.value)
            if not math.isfinite(seconds):
                self._problem("bad-duration", "duration is too large", self._tok_span(tok))
                return 0.0
            self._durations[tok.value] = seconds
        return seconds

    # -- file level

    def start(self, c: list[Any]) -> list[Item]:
        return [item for item in c if isinstance(item, ImportStmt | ComponentType | Assembly)]

    def import_stmt(self, c: list[Any]) -> ImportStmt:
        return ImportStmt(decode_string(c[1].value), self._span(c[0], c[1]))

    # -- component types

    def component(self, c: list[Any]) -> ComponentType:
        name = c[1].value
        params: tuple[Param, ...] = ()
        places: list[Place] = []
        transitions: list[Transition] = []
        provides: list[ProvidePort] = []
        raw_uses: list[_Use] = []
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
        )

    def params(self, c: list[Any]) -> _Group:
        return _Group(tuple(p for p in c if isinstance(p, Param)), self._span(c[0], c[-1]))

    def param(self, c: list[Any]) -> Param:
        default = c[-1].value if isinstance(c[-1], _Lit) else None
        return Param(c[0].value, cast(ParamType, c[2].value), default, self._bounds(c))

    def places(self, c: list[Any]) -> _Group:
        return _Group(tuple(p for p in c if isinstance(p, Place)), self._span(c[0], c[-1]))

    def place(self, c: list[Any]) -> Place:
        mark = c[1]
        return Place(c[0].value, mark is not None, self._span(c[0], mark or c[0]))

    def transition(self, c: list[Any]) -> Transition:
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
        kind, name = c[1].value, c[2].value
        port_type = c[4].value if c[4] is not None else None
        names: _Group = c[-1]
        return _Use(name, kind, names.items, port_type, c[5] is not None, self._span(c[0], names))

    def name_list(self, c: list[Any]) -> _Group:
        return _Group(tuple(t.value for t in c if t.type == "NAME"), self._span(c[0], c[-1]))

    # -- assemblies

    def assembly(self, c: list[Any]) -> Assembly:
        instances = tuple(s for s in c[3:] if isinstance(s, Instance))
        connections = tuple(s for s in c[3:] if isinstance(s, Connection))
        families = tuple(s for s in c[3:] if isinstance(s, Family))
        return Assembly(c[1].value, (), instances, connections, families, self._span(c[0], c[-1]))

    def instance(self, c: list[Any]) -> Instance:
        ref: InstanceRef = c[0]
        args: tuple[tuple[str, Value], ...] = c[3].items if c[3] is not None else ()
        return Instance(ref, c[2].value, c[5], args, self._bounds(c))

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
        return Connection(c[1], c[3], self._span(c[0], c[3]))

    def port_ref(self, c: list[Any]) -> PortRef:
        return PortRef(c[0], c[2].value, self._span(c[0], c[2]))

    def instance_ref(self, c: list[Any]) -> InstanceRef:
        index = c[2].value if c[2] is not None else None
        return InstanceRef(c[0].value, index, self._bounds(c))

    def family(self, c: list[Any]) -> Family:
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


# --- syntax errors ----------------------------------------------------------------------------


class _SyntaxFailure(Exception):
    def __init__(self, diagnostic: Diagnostic, offset: int) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic
        self.offset = offset


_TERMINAL_WORDS = {
    "STRING": "a string",
    "DURATION": "a duration such as 30s, 1m30s or 500ms",
    "SIGNED_INT": "a whole number",
    "SIGNED_NUMBER": "a number",
    "PORT_KIND": '"service" or "data"',
    "OUTPUT": '"output of"',
    "$END": "the end of the file",
}
_VALUE_TERMINALS = frozenset({"STRING", "SIGNED_NUMBER", "TRUE", "FALSE", "ENV"})
_CONSTRUCTS = frozenset(
    {"IMPORT", "COMPONENT", "PLACES", "TRANSITION", "PROVIDE", "USE", "ASSEMBLY", "CONNECT", "FOR"}
)
# What a NAME is, by the construct being parsed and the token before it.
_NAME_ROLES = {
    ("COMPONENT", "component"): "a component name",
    ("COMPONENT", "("): "a parameter name",
    ("COMPONENT", ","): "a parameter name",
    ("COMPONENT", ":"): "a parameter type (str, int, float, bool or secret)",
    ("PLACES", "places"): "a place name",
    ("PLACES", ","): "a place name",
    ("TRANSITION", "transition"): "a transition name",
    ("TRANSITION", ":"): "a place name",
    ("TRANSITION", "->"): "a place name",
    ("TRANSITION", "behaviour"): "a behaviour name",
    ("PROVIDE", "PORT_KIND"): "a port name",
    ("PROVIDE", ":"): "a port type",
    ("PROVIDE", "at"): "a place name",
    ("PROVIDE", ","): "a place name",
    ("PROVIDE", "of"): "a transition name",
    ("USE", "PORT_KIND"): "a port name",
    ("USE", ":"): "a port type",
    ("USE", "for"): "a transition or place name",
    ("USE", ","): "a transition or place name",
    ("ASSEMBLY", "assembly"): "an assembly name",
    ("ASSEMBLY", "="): "a component type name",
    ("ASSEMBLY", "("): "a parameter name",
    ("ASSEMBLY", ","): "a parameter name",
    ("ASSEMBLY", "on"): "a host or group name (or a host pattern in quotes)",
    ("ASSEMBLY", "in"): "a site name",
    ("ASSEMBLY", "["): "an index variable",
    ("CONNECT", "connect"): "an instance name",
    ("CONNECT", "->"): "an instance name",
    ("CONNECT", "."): "a port name",
    ("CONNECT", "["): "an index variable",
    ("FOR", "for"): "a loop variable name",
    ("FOR", "of"): "a group name",
}
_BODY_NAME = {"ASSEMBLY": "an instance name", "FOR": "an instance name"}


def _shown(text: str) -> str:
    text = text if len(text) <= 30 else text[:27] + "..."
    return text.replace("\n", "\\n")


def _describe(tok: Tok) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "NAME":
        return f'name "{tok.value}"'
    if tok.type == "STRING":
        return f"string {_shown(tok.value)}"
    if tok.type in ("SIGNED_NUMBER", "SIGNED_INT"):
        return f"number {tok.value}"
    if tok.type == "DURATION":
        return f"duration {tok.value}"
    return f'"{tok.value}"'


def _quote(tok: Tok) -> str:
    return _shown(tok.value) if tok.type == "STRING" else f'"{_shown(tok.value)}"'


def _construct(values: Sequence[Any]) -> str | None:
    """The keyword that opened the construct being parsed, read off the value stack."""
    for i in range(len(values) - 1, -1, -1):
        item = values[i]
        if isinstance(item, tuple) and item[0] in _CONSTRUCTS:
            if item[0] == "FOR" and i > 0:
                before = values[i - 1]
                # `use ... NAME [optional] for ...`: this `for` belongs to a use port.
                if isinstance(before, tuple) and before[0] in ("NAME", "OPTIONAL"):
                    continue
            return str(item[0])
    return None


def _expected_phrases(
    expected: Iterable[str], construct: str | None, prev: Tok | None, words: dict[str, str]
) -> list[str]:
    expected = set(expected)
    phrases: list[str] = []
    if expected >= _VALUE_TERMINALS:
        expected -= _VALUE_TERMINALS
        phrases.append('a value (a string, a number, true, false or env("VAR"))')
    if "NAME" in expected:
        expected.discard("NAME")
        if prev is not None and prev.value == "on" and "STRING" in expected:
            expected.discard("STRING")  # `on "web:&db"`: the pattern is part of the role
        key = (
            "PORT_KIND"
            if prev is not None and prev.type == "PORT_KIND"
            else (prev.value if prev else "")
        )
        role = (
            _NAME_ROLES.get((construct or "", key))
            or (construct == "FOR" and _NAME_ROLES.get(("ASSEMBLY", key)))
            or _BODY_NAME.get(construct or "", "a name")
        )
        phrases.insert(0, role)
    if len(expected) > 1:
        expected.discard("$END")
    others = sorted(_TERMINAL_WORDS.get(t) or f'"{words.get(t, t)}"' for t in expected)
    return phrases + others


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


# --- the parser loop --------------------------------------------------------------------------


@cache
def _tree_builder() -> ParseTreeBuilder:
    """lark's tree-shaping wrappers (token filtering, `_rule` inlining, `None` for a missing
    `[optional]`), to be bound to a fresh `_ModelBuilder` for each file."""
    shape = tables()
    return ParseTreeBuilder(  # type: ignore[no-untyped-call]
        list(shape.rules), Tree, False, False, shape.maybe_placeholders
    )


_REPETITION = re.compile(r"__\w+_(?:star|plus)_\d+")


def _repetition_callback(rule: Any) -> Callable[[list[Any]], Any] | None:
    """A faster callback for the helper rules lark makes of `x*` and `x+` (`__r_star_N: x |
    __r_star_N x`): grow one Tree in place, which the enclosing rule's callback inlines, as
    lark's own would, minus a generic filtering step per item."""
    origin = str(rule.origin.name)
    if _REPETITION.fullmatch(origin) is None:
        return None
    expansion = rule.expansion
    if expansion and str(expansion[0].name) == origin:

        def extend(children: list[Any]) -> Any:
            run = children[0]
            run.children.extend(children[1:])
            return run

        return extend

    def begin(children: list[Any]) -> Any:
        return Tree(origin, list(children))

    return begin


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.tables: Tables = tables()
        self.builder = _ModelBuilder(path)
        by_rule = _tree_builder().create_callback(self.builder)  # type: ignore[no-untyped-call]
        self.callbacks: list[Callable[[list[Any]], Any]] = [
            _repetition_callback(rule) or by_rule[rule] for rule in self.tables.rules
        ]
        self.words = {name: text for text, name in self.tables.keywords.items()}

    def run(self, pos: int, line: int) -> list[Item]:
        """Parse from `pos` (the start of line `line`) to the end of the text."""
        text = self.text
        actions = self.tables.actions
        sizes = self.tables.sizes
        origins = self.tables.origins
        keywords = self.tables.keywords
        callbacks = self.callbacks
        end_state = self.tables.end_state
        state = self.tables.start_state
        states = [state]
        values: list[Any] = []
        line_start = pos
        prev: Tok | None = None
        for match in _TOKEN_RE.finditer(text, pos):
            kind = match.lastindex
            if kind == _WORD:
                value = match.group(kind)
                row = actions[state]
                typ = keywords.get(value)
                if typ is None or (typ not in row and "NAME" in row):
                    typ = "NAME"
            elif kind == _PUNCT:
                value = match.group(kind)
                row = actions[state]
                typ = keywords[value]
            elif kind == _NEWLINES:
                value = match.group(kind)
                line += value.count("\n")
                line_start = match.start(kind) + value.rfind("\n") + 1
                continue
            elif kind is None or kind == _COMMENT:
                continue
            else:
                value = match.group(kind)
                row = actions[state]
                typ = self._classify(kind, value, row, match.start(kind), line, line_start)
            start = match.start(kind)
            column = start - line_start + 1
            tok = _new_tok(Tok, (typ, value, line, column, line, column + len(value)))
            if typ == "STRING" and value[0:3] == '"""' and "\n" in value:
                tok = self._multiline(tok)
            act = row.get(typ)
            while act is not None and act < 0:  # reduce, as often as the lookahead asks
                rule = -1 - act
                size = sizes[rule]
                if size:
                    children = values[-size:]
                    del values[-size:]
                    del states[-size:]
                else:
                    children = []
                values.append(callbacks[rule](children))
                state = actions[states[-1]][origins[rule]]
                states.append(state)
                act = actions[state].get(typ)
            if act is None:
                raise self._syntax_error(tok, prev, states, values, start)
            state = act
            states.append(state)
            values.append(tok)
            prev = tok
            if tok.end_line != line:
                line = tok.end_line
                line_start = start + value.rfind("\n") + 1
        return self._finish(states, values, prev, end_state)

    def _classify(
        self, kind: int, value: str, row: dict[str, int], start: int, line: int, line_start: int
    ) -> str:
        """The terminal of a string, duration or number token (rarer than names and
        punctuation, which the loop handles inline)."""
        if kind == _STRING:
            if value == '""' and self.text.startswith('"', start + 2):
                raise self._lexical_error(start, line, start - line_start + 1, '"""')
            return "STRING"
        if kind == _DURATION:
            return "DURATION"
        if kind == _NUMBER:
            integral = "SIGNED_INT" in row and value.lstrip("+-").isdigit()
            return "SIGNED_INT" if integral else "SIGNED_NUMBER"
        raise self._lexical_error(start, line, start - line_start + 1, value)

    @staticmethod
    def _multiline(tok: Tok) -> Tok:
        value = tok.value
        end_line = tok.line + value.count("\n")
        end_column = len(value) - value.rfind("\n")
        return tok._replace(end_line=end_line, end_column=end_column)

    def _finish(
        self, states: list[int], values: list[Any], prev: Tok | None, end_state: int
    ) -> list[Item]:
        actions = self.tables.actions
        if prev is not None:
            line, column = prev.end_line, prev.end_column
        else:
            line, column = 1, 1
        end = _new_tok(Tok, ("$END", "", line, column, line, column + 1))
        act = actions[states[-1]].get("$END")
        while act is not None and act < 0:
            rule = -1 - act
            size = self.tables.sizes[rule]
            children = values[-size:] if size else []
            if size:
                del values[-size:]
                del states[-size:]
            values.append(self.callbacks[rule](children))
            goto = actions[states[-1]][self.tables.origins[rule]]
            if goto == end_state:
                return cast(list[Item], values[-1])
            states.append(goto)
            act = actions[goto].get("$END")
        raise self._syntax_error(end, prev, states, values, len(self.text))

    def _syntax_error(
        self, tok: Tok, prev: Tok | None, states: list[int], values: list[Any], offset: int
    ) -> _SyntaxFailure:
        row = self.tables.actions[states[-1]]
        expected = [s for s in row if s.isupper()]
        phrases = _expected_phrases(expected, _construct(values), prev, self.words)
        after = f" after {_quote(prev)}" if prev is not None else ""
        if tok.type == "$END" and len(phrases) > 4:
            missing = ', missing "}"' if "RBRACE" in row else ""
            message = f"unexpected end of the file{missing}"
        elif len(phrases) <= 4:
            message = f"expected {_join(phrases)}{after}, found {_describe(tok)}"
        else:
            message = f"unexpected {_describe(tok)}{after}"
        if tok.type == "NAME":
            keywords = [w for t in expected if (w := self.words.get(t, "")).isalpha()]
            message += did_you_mean(tok.value, keywords)
        span = Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)
        return _SyntaxFailure(Diagnostic("syntax-error", message, span), offset)

    def _lexical_error(self, offset: int, line: int, column: int, char: str) -> _SyntaxFailure:
        if char == '"""':
            message, width = "unterminated triple-quoted string", 3
        elif char == '"':
            message, width = 'unterminated string (a string ends on its line; use """ for more)', 1
        elif char.isprintable():
            message, width = f'unexpected character "{char}"', 1
        else:
            message, width = f"unexpected character U+{ord(char):04X}", 1
        span = Span(self.path, line, column, line, column + width)
        return _SyntaxFailure(Diagnostic("syntax-error", message, span), offset)


def tokenize(text: str) -> list[Tok]:
    """The tokens of a syntactically valid text, as the parser sees them (for tests and
    tools). Raises `ParseError` like `parse_text`."""
    seen: list[Tok] = []
    parser = _Parser(text, "<tokens>")
    original = parser.callbacks
    # Record the tokens each reduction consumes, in order.
    parser.callbacks = [_recording(callback, seen) for callback in original]
    _parse_or_raise(parser)
    return sorted(seen, key=lambda t: (t.line, t.column))


def _recording(callback: Callable[[list[Any]], Any], seen: list[Tok]) -> Callable[[list[Any]], Any]:
    def record(children: list[Any]) -> Any:
        seen.extend(cast(Tok, c) for c in children if isinstance(c, tuple))
        return callback(children)

    return record


def _parse_or_raise(parser: _Parser) -> list[Item]:
    failures: list[Diagnostic] = []
    pos, line = 0, 1
    items: list[Item] = []
    text = parser.text
    with gc_paused():
        while True:
            try:
                chunk = parser.run(pos, line)
            except _SyntaxFailure as failure:
                failures.append(failure.diagnostic)
                # Resume at the next line that starts a top-level item, to report more.
                next_line = text.find("\n", failure.offset)
                resume = _RESUME.search(text, next_line + 1) if next_line >= 0 else None
                if resume is None or len(failures) >= MAX_SYNTAX_ERRORS:
                    break
                pos = resume.start()
                line = text.count("\n", 0, pos) + 1
                continue
            items.extend(chunk)
            break
    if failures:
        raise ParseError(failures)
    return items


def parse_text(text: str, path: str) -> ParsedFile:
    """Parse one file's text. Raises `ParseError` with the syntax errors found.

    Spans carry `path` as given."""
    parser = _Parser(text, path)
    items = _parse_or_raise(parser)
    return ParsedFile(path, tuple(items), tuple(parser.builder.diagnostics))
