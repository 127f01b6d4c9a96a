"""Placeholders: parsing, literal braces, substitution as text (shell commands: test_shell.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from madeus.errors import MadeusError
from madeus.template import MissingValueError, TemplateError, placeholders, render


def test_placeholders_with_their_offsets() -> None:
    text = "ping {host.address} -v {version} {host.vars.zone}"
    assert placeholders(text) == [("host.address", 5), ("version", 23), ("host.vars.zone", 33)]


def test_doubled_braces_are_literal() -> None:
    assert placeholders("awk '{{print $1}}' {file}") == [("file", 19)]
    assert render("awk '{{print $1}}' {file}", {"file": "/etc/hosts"}) == (
        "awk '{print $1}' /etc/hosts"
    )
    assert render("{{}}", {}) == "{}"


def test_no_braces_is_the_fast_path() -> None:
    assert placeholders("plain text") == []
    assert render("plain text", {}) == "plain text"


@pytest.mark.parametrize(
    ("text", "reason", "offset"),
    [
        ("echo {", '"{" is not closed (write "{{" for a literal brace)', 5),
        ("echo }", '"}" has no matching "{" (write "}}" for a literal brace)', 5),
        ("a {b{c}", '"{" is not closed (write "{{" for a literal brace)', 2),
        (
            "awk '{print $1}'",
            '"{print $1}" is not a placeholder name (write "{{" and "}}" for literal braces)',
            5,
        ),
        ("{}", '"{}" is not a placeholder name (write "{{" and "}}" for literal braces)', 0),
        ("{ x }", '"{ x }" is not a placeholder name (write "{{" and "}}" for literal braces)', 0),
    ],
)
def test_malformed_templates(text: str, reason: str, offset: int) -> None:
    with pytest.raises(TemplateError) as caught:
        placeholders(text)
    assert (caught.value.reason, caught.value.offset) == (reason, offset)
    assert isinstance(caught.value, MadeusError)
    assert caught.value.diagnostics[0].code == "bad-template"


def test_values_are_substituted_as_they_are() -> None:
    assert render("{name}/x", {"name": "x; rm -rf /"}) == "x; rm -rf //x"


def test_a_missing_value_is_a_key_error() -> None:
    with pytest.raises(KeyError) as caught:
        render("echo {version}", {})
    error = caught.value
    assert isinstance(error, MissingValueError) and isinstance(error, MadeusError)
    assert error.name == "version"
    assert str(error) == 'no value for placeholder "{version}"'
    assert error.diagnostics[0].code == "missing-value"


@given(st.text(max_size=60))
def test_any_text_either_parses_or_raises_a_template_error(text: str) -> None:
    try:
        found = placeholders(text)
    except TemplateError as error:
        assert 0 <= error.offset < len(text)
        return
    names = {name: f"<{name}>" for name, _ in found}
    rendered = render(text, names)
    assert all(f"<{name}>" in rendered for name in names)
