"""Shell commands built from pieces: a value reaches the command as literal text in every
quoting context, or the placeholder is refused; the script never appears in an argv.

Each command runs for real with `/bin/sh` (`SHELL_ARGV`, the script on standard input), as the
local and SSH backends run it (their own tests repeat the hostile cases end to end)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hostile_values import CONTEXTS, DATA_PORT_FILES, data_port_assembly, expected_output, hostile
from hypothesis import given, settings
from hypothesis import strategies as st

from madeus.shell import (
    SHELL_ARGV,
    ShellValueError,
    UnsafePlaceholder,
    parse_shell,
    shell_script,
    unsafe_placeholders,
)
from madeus.template import MissingValueError, TemplateError


def run(command: str, values: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    script = shell_script(command, values)
    return subprocess.run(
        SHELL_ARGV, input=script.encode(), capture_output=True, cwd=cwd, timeout=30, check=False
    )


@pytest.mark.parametrize(("template", "shown"), CONTEXTS)
def test_a_hostile_value_arrives_literally_in_every_context(
    template: str, shown: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    for value in hostile(marker):
        done = run(template, {"p": value}, tmp_path)
        expected = expected_output(shown, value)
        assert (done.returncode, done.stdout.decode()) == (0, expected), (template, value)
        assert not marker.exists(), (template, value)


def test_a_megabyte_value_arrives_whole(tmp_path: Path) -> None:
    value = "x'\"$(y)" * (1 << 20 // 7)
    done = run('printf %s {p} > out; printf %s "{p}" >> out', {"p": value}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_text() == value * 2


def test_a_nul_byte_is_refused_with_a_plain_message() -> None:
    with pytest.raises(ShellValueError) as caught:
        shell_script("echo {p}", {"p": "a\0b"})
    assert str(caught.value) == (
        "the value of {p} holds a NUL byte, which no shell command can carry"
    )


def test_environment_is_exported_and_names_are_checked(tmp_path: Path) -> None:
    script = shell_script("sh -c 'printf %s \"$K\"'", {}, {"K": "$(touch pwned)"})
    done = subprocess.run(SHELL_ARGV, input=script.encode(), capture_output=True, cwd=tmp_path)
    assert done.stdout == b"$(touch pwned)"
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ShellValueError) as caught:
        shell_script("true", {}, {"A=B; touch x; C": "v"})
    assert str(caught.value) == "invalid environment variable name 'A=B; touch x; C'"


def test_a_missing_value_names_its_placeholder() -> None:
    with pytest.raises(MissingValueError) as caught:
        shell_script("echo {version}", {})
    assert str(caught.value) == 'no value for placeholder "{version}"'


def test_the_command_never_holds_a_value() -> None:
    script = shell_script("echo {p} \"{p}\" '{p}'", {"p": "secret"})
    head, _, command = script.rpartition("\n")
    assert head == "_madeus_1=secret"
    assert command == 'echo "${_madeus_1}" "${_madeus_1}" \'\'"${_madeus_1}"\'\''
    assert SHELL_ARGV == ("/bin/sh", "-c", 'eval "$(cat)"')


REFUSED = [
    (
        "echo `cat {p}`",
        'placeholder "{p}" inside backquotes cannot be substituted safely; write $(...) '
        "instead of `...`",
        10,
    ),
    (
        "echo ${{x:-{p}}}",
        'placeholder "{p}" inside a parameter expansion ${...} cannot be substituted safely; '
        "assign the value to a variable first (v={p}; ... ${v...})",
        11,
    ),
    (
        'echo "${{x:-"{p}"}}"',
        'placeholder "{p}" inside a parameter expansion ${...} cannot be substituted safely; '
        "assign the value to a variable first (v={p}; ... ${v...})",
        13,
    ),
    (
        "echo $(( {p} + 1 ))",
        'placeholder "{p}" inside an arithmetic expression cannot be substituted safely; '
        "assign the value to a variable first (n={p}; ... $((n + 1)))",
        9,
    ),
    (
        "(( x = {p} ))",
        'placeholder "{p}" inside an arithmetic expression cannot be substituted safely; '
        "assign the value to a variable first (n={p}; ... $((n + 1)))",
        7,
    ),
    (
        "echo $'{p}'",
        "placeholder \"{p}\" inside $'...' quotes cannot be substituted safely; use '...' or "
        '"..." quotes',
        7,
    ),
    (
        "echo \\{p}",
        'placeholder "{p}" right after a backslash cannot be substituted safely; remove the '
        "backslash",
        6,
    ),
    (
        'echo "\\{p}"',
        'placeholder "{p}" right after a backslash cannot be substituted safely; remove the '
        "backslash",
        7,
    ),
    (
        "cat <<'E'\n{p}\nE",
        'placeholder "{p}" in the body of a here-document with a quoted delimiter cannot be '
        "substituted safely; nothing is expanded there, unquote the delimiter (<<EOF, not "
        "<<'EOF')",
        10,
    ),
    (
        "cat <<{p}\nx\n",
        'placeholder "{p}" in a here-document delimiter cannot be substituted safely; write '
        "the delimiter as plain text",
        6,
    ),
]


@pytest.mark.parametrize(("template", "reason", "offset"), REFUSED)
def test_refused_contexts_say_where_and_what_to_do(template: str, reason: str, offset: int) -> None:
    with pytest.raises(UnsafePlaceholder) as caught:
        parse_shell(template)
    assert (caught.value.reason, caught.value.offset) == (reason, offset)
    assert [(p.reason, p.offset) for p in unsafe_placeholders(template)] == [(reason, offset)]


def test_every_refused_placeholder_is_reported_not_only_the_first() -> None:
    found = unsafe_placeholders("echo `{a}` ok {b} $(( {c} )) \\{d}")
    assert [p.offset for p in found] == [6, 22, 30]


def test_after_a_quoted_heredoc_the_command_goes_on_normally(tmp_path: Path) -> None:
    done = run("cat <<'E'\nno $(values) here\nE\nprintf %s {p}", {"p": "$(x)"}, tmp_path)
    assert done.stdout == b"no $(values) here\n$(x)"


def test_a_malformed_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        parse_shell("echo {")


# Fragments of shell syntax, in any order: whatever context the lexer sees (or misjudges), a
# value never runs. Templates the lexer refuses are skipped; those it accepts must be safe.
FRAGMENTS = st.sampled_from(
    [
        " ", "'", '"', "$(", ")", "(", "`", "\\", "\n", "#", ";", "|", "&", "{p}", "{p}",
        "{p}", "echo ", "printf %s ", "cat <<E\n", "cat <<'E'\n", "E\n", "${{x:-", "}}",
        "$((", "))", "case ", " in ", "*) ", ";;", " esac", "$'", "x=", "<<-E\n", "\t",
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(FRAGMENTS, max_size=14))
def test_no_template_the_lexer_accepts_runs_a_value(fragments: list[str]) -> None:
    template = "".join(fragments)
    try:
        parse_shell(template)
    except TemplateError:
        return
    marker = Path("/tmp") / f"madeus-shell-test-{abs(hash(template))}"
    values = [f"$(touch {marker})", f"`touch {marker}`", f"';touch {marker};'"]
    values += [f'";touch {marker};"', f"\ntouch {marker}\n", f"E\ntouch {marker}\nE"]
    try:
        for value in values:
            script = shell_script(template, {"p": value})
            subprocess.run(
                SHELL_ARGV,
                input=script.encode(),
                capture_output=True,
                timeout=10,
                check=False,
                cwd="/tmp",
            )
            assert not marker.exists(), (template, value)
    finally:
        marker.unlink(missing_ok=True)


def test_env_values_and_data_ports_take_the_same_path(tmp_path: Path) -> None:
    from madeus import deploy_sync, load_text, resolve

    marker = tmp_path / "pwned"
    for value in hostile(marker):
        module = load_text(data_port_assembly(tmp_path))
        assert module.assembly is not None
        deploy_sync(resolve(module.assembly), environ={"MADEUS_HOSTILE": value})
        for name in DATA_PORT_FILES:
            assert (tmp_path / name).read_text() == value, (name, value)
        assert not marker.exists(), value
