"""Syntax errors in plain words: what was expected, named after the construct being parsed
(`expected a place name after "->", found "}"`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from madeus.errors import Diagnostic
from madeus.frontend.lexer import Tok

# --- syntax errors ----------------------------------------------------------------------------


class SyntaxFailure(Exception):
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
# The keywords that open a construct (a `for` opens a family, or is part of a use port).
CONSTRUCTS = frozenset(
    {
        "IMPORT",
        "COMPONENT",
        "PLACES",
        "TRANSITION",
        "PROVIDE",
        "USE",
        "CHANGE",
        "ASSEMBLY",
        "CONNECT",
        "FOR",
    }
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
    ("CHANGE", "of"): "a parameter name",
    ("CHANGE", ","): "a parameter or behaviour name",
    ("CHANGE", ":"): "a behaviour name",
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


def describe(tok: Tok) -> str:
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


def quote(tok: Tok) -> str:
    return _shown(tok.value) if tok.type == "STRING" else f'"{_shown(tok.value)}"'


def open_construct(opened: Sequence[Tok]) -> str | None:
    """The keyword that opened the innermost construct being parsed, from the keywords of the
    constructs not reduced yet."""
    for i in range(len(opened) - 1, -1, -1):
        if opened[i].type == "FOR" and i > 0 and opened[i - 1].type == "USE":
            continue  # `use ... for ...`: this `for` belongs to the use port
        return str(opened[i].type)
    return None


def expected_phrases(
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


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]
