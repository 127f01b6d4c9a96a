"""The front end: parsing, the mapping to the model, imports, and the exact diagnostics.

Fixtures: every `tests/data/valid/*.mad` loads; every `tests/data/invalid/*.mad` fails with
exactly the diagnostics rendered in the `.err` file beside it. Paths are relative to the
repository root, as the CLI would show them.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Token

from madeus.errors import CheckError, MadeusError, ParseError, render_all
from madeus.frontend import load as load_module
from madeus.frontend import load_file, load_text, parse_text
from madeus.frontend.grammar import grammar_text, lark_parser
from madeus.frontend.lexer import decode_string, parse_duration
from madeus.frontend.parse import tokenize
from madeus.model import (
    AnsibleAction,
    EnvRef,
    InstanceRef,
    OutputOf,
    Param,
    Place,
    PythonAction,
    ShellAction,
    Target,
    UploadAction,
)
from madeus.source import Span

REPO = Path(__file__).resolve().parents[1]
VALID = sorted(glob.glob("data/valid/*.mad", root_dir=REPO / "tests"))
INVALID = sorted(glob.glob("data/invalid/*.mad", root_dir=REPO / "tests"))


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Diagnostics show paths as given; the .err files hold paths from the repository root.
    monkeypatch.chdir(REPO)


def _failure(path: str) -> MadeusError:
    with pytest.raises(MadeusError) as caught:
        load_file(path)
    return caught.value


# --- fixtures -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_fixture_loads(name: str) -> None:
    module = load_file(f"tests/{name}")
    assert module.files[0] == f"tests/{name}"
    assert module.components


@pytest.mark.parametrize("name", INVALID)
def test_invalid_fixture_reports_exactly_its_err_file(name: str) -> None:
    path = f"tests/{name}"
    expected = Path(path).with_suffix(".err").read_text(encoding="utf-8")
    error = _failure(path)
    assert render_all(error.diagnostics) + "\n" == expected
    stem = Path(path).stem
    syntactic = stem.startswith("syntax_") or stem == "encoding"
    assert isinstance(error, ParseError if syntactic else CheckError)


def test_every_check_code_has_a_fixture() -> None:
    codes: set[str] = set()
    for name in INVALID:
        error = _failure(f"tests/{name}")
        codes.update(d.code for d in error.diagnostics)
    # Codes only the builder can trigger (the grammar rules them out) are in test_checks.
    assert codes >= {
        "syntax-error", "file-encoding", "bad-number", "duplicate-attribute",
        "duplicate-component", "duplicate-param", "unknown-param-type", "param-default-type",
        "no-places", "no-initial-place", "duplicate-name", "unknown-place", "bad-retries",
        "bad-timeout", "bad-template", "unknown-placeholder", "duplicate-port", "service-value",
        "data-no-value", "unknown-transition", "unknown-name", "unreachable-place",
        "deploy-cycle", "index-outside-family", "family-unindexed", "family-index",
        "duplicate-instance", "family-hosts-site", "family-site", "unknown-component",
        "duplicate-arg", "unknown-param", "arg-type", "missing-param", "unknown-instance",
        "family-member-outside", "family-domain", "unknown-port", "connect-user",
        "connect-provider", "kind-mismatch", "type-mismatch", "connected-twice",
        "not-connected", "import-missing", "import-glob-empty", "import-cycle",
        "import-assembly", "duplicate-assembly", "bad-serial",
    }  # fmt: skip


def test_several_problems_are_all_reported_in_order() -> None:
    error = _failure("tests/data/invalid/several_problems.mad")
    assert isinstance(error, CheckError)
    assert [d.code for d in error.diagnostics] == [
        "param-default-type",
        "unknown-place",
        "unknown-placeholder",
        "bad-retries",
        "unknown-param",
        "unknown-component",
        "type-mismatch",
    ]


def test_one_syntax_error_per_broken_item() -> None:
    error = _failure("tests/data/invalid/syntax_several.mad")
    assert [d.span.line for d in error.diagnostics] == [4, 8, 13]


# --- the mapping to the model ---------------------------------------------------------------


def test_component_members() -> None:
    module = load_file("tests/data/valid/lib/mariadb.mad")
    (mariadb,) = module.components
    assert mariadb.params == (
        Param("version", "str", "10.11"),
        Param("root_password", "secret", EnvRef("MARIADB_ROOT_PASSWORD")),
    )
    assert mariadb.places[0] == Place("initiated", initial=True)
    assert mariadb.initial_places == ("initiated",)
    bootstrap = mariadb.transition("bootstrap")
    assert bootstrap is not None
    assert bootstrap.action == AnsibleAction(role="mariadb", tasks="bootstrap")
    assert (bootstrap.duration, bootstrap.timeout, bootstrap.retries) == (22.4, 600.0, 2)
    assert bootstrap.behaviour == "deploy"
    check = mariadb.transition("check")
    assert check is not None and check.idempotent
    assert check.action == ShellAction("mysqladmin ping -h {host.address}")
    # Parallel transitions: both leave `initiated`.
    assert [t.name for t in mariadb.transitions if t.source == "initiated"] == ["pull", "config"]
    db = mariadb.port("db")
    assert db is not None and db.kind == "service" and db.type == "mysql"
    common = mariadb.port("common")
    assert common is not None and getattr(common, "optional", False)


def test_every_action_and_value_form() -> None:
    (c,) = load_file("tests/data/valid/everything.mad").components
    actions = {t.name: t.action for t in c.transitions}
    assert actions["fetch"] == ShellAction('curl -fsS {{}} "https://example.org/{name}"\t# tab')
    assert actions["prepare"] == PythonAction("deploy.steps:prepare")
    assert actions["go_left"] == UploadAction("files/{name}.conf", "/etc/{name}.conf")
    assert actions["go_right"] == AnsibleAction(playbook="site.yml")
    assert actions["finish"] == AnsibleAction(tasks="tasks/finish.yml")
    # Triple-quoted: one leading newline dropped, common indentation removed.
    assert actions["finish2"] == ShellAction(
        'set -e\necho "{label}" > /tmp/label\n  echo indented\n'
    )
    durations = {t.name: t.duration for t in c.transitions}
    assert durations["fetch"] == 90.0
    assert durations["prepare"] == 0.5
    assert durations["finish"] == pytest.approx(3661.001)
    assert durations["go_right"] is None
    assert [p.default for p in c.params] == ["demo", -3, 0.25, True, EnvRef("TOKEN"), None]
    assert [type(p.default) for p in c.params[:3]] == [str, int, float]
    assert c.initial_places == ("start", "other")
    assert {t.name: t.behaviour for t in c.transitions}["stop"] == "stop"
    backend = c.port("backend")
    assert backend is not None
    assert (backend.transitions, backend.places) == (("fetch",), ("middle",))  # type: ignore[union-attr]
    assert c.port("secret_out") is not None
    assert c.port("secret_out").value == OutputOf("fetch")  # type: ignore[union-attr]


def test_assembly_instances_targets_and_families() -> None:
    module = load_file("tests/data/valid/openstack.mad")
    asm = module.assembly
    assert asm is not None and asm.name == "openstack"
    assert [c.name for c in asm.components] == [
        "Glance",
        "Keystone",
        "MariaDB",
        "NovaCompute",
        "HAProxy",
    ]
    assert asm.components == module.components
    keystone = asm.instance("keystone")
    assert keystone is not None
    assert keystone.target == Target("control")
    assert keystone.args == (("admin_password", EnvRef("KEYSTONE_ADMIN_PASSWORD")), ("workers", 8))
    sites, hosts = asm.families
    assert (sites.var, sites.over, sites.group) == ("site", "sites", None)
    assert sites.instances[0].ref == InstanceRef("glance", "site")
    assert sites.instances[0].target == Target("control", "site")
    assert str(sites.connections[0].user) == "glance[site].identity"
    assert (hosts.var, hosts.over, hosts.group) == ("h", "hosts", "compute")
    assert hosts.instances[0].target == Target("h")
    assert hosts.instances[0].args == (("cpu_ratio", 4), ("debug", True))


def test_on_the_site_variable_means_every_host_of_the_site() -> None:
    text = """
    component A { places a* }
    assembly x {
        for site in sites { a[site] = A on site }
        b = A on site
    }
    """
    asm = load_text(text).assembly
    assert asm is not None
    assert asm.families[0].instances[0].target == Target(None, "site")
    assert asm.instances[0].target == Target("site")


def test_use_port_names_split_into_transitions_and_places() -> None:
    text = "component A { places a*, b  transition t: a -> b  use service s for b, t }"
    (c,) = load_text(text).components
    assert (c.uses[0].transitions, c.uses[0].places) == (("t",), ("b",))


def test_spans_cover_elements_with_1_based_positions() -> None:
    module = load_file("tests/data/valid/minimal.mad")
    (c,) = module.components
    assert c.span == Span("tests/data/valid/minimal.mad", 1, 1, 3, 2)
    assert c.places[0].span == Span("tests/data/valid/minimal.mad", 2, 12, 2, 17)
    text = 'component A {\n  places a*, b\n  transition t: a -> b shell """\n  x\n  """ ~1s\n}\n'
    (t,) = load_text(text, "mem.mad").components[0].transitions
    assert t.span == Span("mem.mad", 3, 3, 5, 10)


def test_duration_units_combine() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1.5s") == 1.5
    for bad in ("", "5", "s", "1x", "1m 30s", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_string_escapes() -> None:
    assert decode_string(r'"a\"b\\c\nd\te"') == 'a"b\\c\nd\te'
    # Other backslashes stay, as a shell command needs them.
    assert decode_string(r'"sed s/\./_/"') == "sed s/\\./_/"
    assert decode_string('"""\n    one\n      two\n    """') == "one\n  two\n"
    assert decode_string('"""no newline"""') == "no newline"


def test_keywords_are_names_where_no_keyword_fits() -> None:
    text = "component A(on: bool = true) { places data*, service  transition for: data -> service }"
    (c,) = load_text(text).components
    assert [p.name for p in c.places] == ["data", "service"]
    assert c.transitions[0].name == "for"


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.mad"
    path.write_bytes(b"\xef\xbb\xbfcomponent A {\r\n    places a*\r\n}\r\n")
    assert load_file(path).components[0].places == (Place("a", True),)


def test_load_text_without_assembly_and_with_imports(tmp_path: Path) -> None:
    (tmp_path / "lib.mad").write_text("component L { places a* }")
    module = load_text('import "lib.mad"\ncomponent M { places a* }', str(tmp_path / "main.mad"))
    assert [c.name for c in module.components] == ["L", "M"]
    assert module.assembly is None


# --- imports --------------------------------------------------------------------------------


def test_imported_components_come_at_the_import_and_once(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.mad").write_text('import "d.mad"\ncomponent A { places a* }')
    (tmp_path / "lib" / "b.mad").write_text('import "d.mad"\ncomponent B { places a* }')
    (tmp_path / "lib" / "d.mad").write_text("component D { places a* }")
    main = tmp_path / "main.mad"
    main.write_text('component First { places a* }\nimport "lib/[ab].mad"\n')
    module = load_file(main)
    assert [c.name for c in module.components] == ["First", "D", "A", "B"]
    assert [Path(f).name for f in module.files] == ["main.mad", "a.mad", "d.mad", "b.mad"]


def test_a_glob_does_not_import_the_file_holding_it(tmp_path: Path) -> None:
    (tmp_path / "a.mad").write_text('import "*.mad"\ncomponent A { places a* }')
    (tmp_path / "b.mad").write_text("component B { places a* }")
    assert [c.name for c in load_file(tmp_path / "a.mad").components] == ["B", "A"]


def test_long_import_chains_do_not_recurse(tmp_path: Path) -> None:
    depth = 1200  # beyond Python's default recursion limit
    for i in range(depth):
        body = f'import "f{i + 1}.mad"\n' if i + 1 < depth else ""
        (tmp_path / f"f{i}.mad").write_text(body + f"component C{i} {{ places a* }}")
    assert len(load_file(tmp_path / "f0.mad").components) == depth


def test_syntax_errors_of_imported_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.mad").write_text("component {")
    (tmp_path / "main.mad").write_text('import "bad.mad"')
    error = _failure(str(tmp_path / "main.mad"))
    assert isinstance(error, ParseError)
    assert error.diagnostics[0].message == 'expected a component name after "component", found "{"'
    assert error.diagnostics[0].span.path == str(tmp_path / "bad.mad")


# --- bad input never escapes as a Python exception ----------------------------------------------


def test_missing_entry_file() -> None:
    error = _failure("tests/data/valid/nowhere.mad")
    assert isinstance(error, ParseError)
    assert render_all(error.diagnostics) == (
        "tests/data/valid/nowhere.mad: error: cannot read "
        '"tests/data/valid/nowhere.mad": No such file or directory'
    )


def test_a_directory_is_not_a_file() -> None:
    error = _failure("tests/data/valid")
    assert [d.code for d in error.diagnostics] == ["file-unreadable"]


def test_too_large_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "MAX_FILE_BYTES", 10)
    path = tmp_path / "big.mad"
    path.write_text("component A { places a* }")
    error = _failure(str(path))
    assert [d.message for d in error.diagnostics] == [f'"{path}" is larger than 0 MiB']


def test_huge_numbers_are_diagnostics() -> None:
    text = (
        "component A(n: int = "
        + "9" * 5000
        + ") { places a*, b transition t: a -> b retries "
        + "9" * 5000
        + " }"
    )
    with pytest.raises(CheckError) as caught:
        load_text(text)
    assert [d.code for d in caught.value.diagnostics] == ["bad-number", "bad-number"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text_gives_a_model_or_diagnostics(text: str) -> None:
    try:
        load_text(text, "fuzz.mad")
    except MadeusError as error:
        assert error.diagnostics
        for d in error.diagnostics:
            d.render()


_WORDS = [
    "component", "assembly", "import", "places", "transition", "provide", "use", "service",
    "data", "for", "in", "on", "connect", "sites", "hosts", "of", "shell", "ansible", "role",
    "tasks", "playbook", "python", "upload", "to", "timeout", "retries", "behaviour",
    "idempotent", "optional", "output", "env", "true", "false", "A", "a", "b", "t", "x",
    "{", "}", "(", ")", "[", "]", ":", ",", "=", ".", "->", "~", "*", '"s"', '"""\n t\n"""',
    "5s", "1m30s", "3", "-2", "1.5", "\n", "# c\n",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=40))
def test_any_token_soup_gives_a_model_or_diagnostics(words: list[str]) -> None:
    try:
        load_text(" ".join(words), "soup.mad")
    except MadeusError as error:
        assert error.diagnostics and all(d.span.line > 0 for d in error.diagnostics)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_model_or_diagnostics(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "random.mad"
    path.write_bytes(data)
    try:
        load_file(path)
    except MadeusError as error:
        assert error.diagnostics


# --- our lexer and lark's agree -----------------------------------------------------------------


def _lark_tokens(text: str) -> list[tuple[str, str, int, int]]:
    tree = lark_parser().parse(text)
    tokens = tree.scan_values(lambda v: isinstance(v, Token))
    return sorted((t.type, str(t), t.line or 0, t.column or 0) for t in tokens)


@pytest.mark.parametrize(
    "name", [*VALID, *glob.glob("data/valid/lib/*.mad", root_dir=REPO / "tests")]
)
def test_our_lexer_matches_lark_on_valid_files(name: str) -> None:
    text = (REPO / "tests" / name).read_text(encoding="utf-8")
    ours = sorted((t.type, t.value, t.line, t.column) for t in tokenize(text))
    assert ours == _lark_tokens(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=30))
def test_our_parser_accepts_exactly_what_lark_accepts(words: list[str]) -> None:
    text = " ".join(words)
    try:
        expected = _lark_tokens(text)
    except Exception:  # any lark error means "not in the language"
        expected = None
    try:
        ours = sorted((t.type, t.value, t.line, t.column) for t in tokenize(text))
    except ParseError:
        ours = None
    assert ours == expected


def test_grammar_is_the_dsl_file() -> None:
    assert grammar_text() == (REPO / "dsl" / "madeus.lark").read_text(encoding="utf-8")


def test_parse_text_returns_items_in_order() -> None:
    parsed = parse_text('import "x.mad"\ncomponent A { places a* }\nassembly s { }', "p.mad")
    assert [type(i).__name__ for i in parsed.items] == ["ImportStmt", "ComponentType", "Assembly"]


def test_relative_display_paths_for_imports() -> None:
    module = load_file("tests/data/valid/components_only.mad")
    assert module.files == (
        "tests/data/valid/components_only.mad",
        "tests/data/valid/lib/mariadb.mad",
        "tests/data/valid/lib/glance.mad",
    )
    assert os.path.exists(module.files[1])


# Programs shaped like the grammar, with names that are sometimes keywords and random
# layout: our parser and lark's must agree on every one, token by token.
_NAMES = st.sampled_from(
    ["a", "b", "x1", "_y", "data", "service", "on", "in", "of", "to", "for", "tasks", "sites",
     "hosts", "optional", "true", "env", "output", "at", "use", "shell", "component"]
)  # fmt: skip
_GAPS = st.sampled_from([" ", "  ", "\n", "\t", " # note\n", "\n\n    "])
_VALUES = st.one_of(
    st.sampled_from(['"s"', '"a\\"b"', "3", "-2", "1.5", "2e3", "true", "false"]),
    st.builds(lambda n: f'env("{n}")', st.sampled_from(["A", "B"])),
)


@st.composite
def _program(draw: st.DrawFn) -> str:
    out: list[str] = []

    def emit(*words: str) -> None:
        out.extend(words)

    def names(sep: str = ",") -> None:
        for i in range(draw(st.integers(1, 3))):
            if i:
                emit(sep)
            emit(draw(_NAMES))

    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["import", "component", "assembly"]))
        if kind == "import":
            emit("import", '"lib/*.mad"')
        elif kind == "component":
            emit("component", draw(_NAMES))
            if draw(st.booleans()):
                emit("(")
                for i in range(draw(st.integers(0, 2))):
                    if i:
                        emit(",")
                    emit(draw(_NAMES), ":", draw(_NAMES))
                    if draw(st.booleans()):
                        emit("=", draw(_VALUES))
                emit(")")
            emit("{")
            for _ in range(draw(st.integers(0, 4))):
                member = draw(st.sampled_from(["places", "transition", "provide", "use"]))
                if member == "places":
                    emit("places", draw(_NAMES), "*")
                elif member == "transition":
                    emit("transition", draw(_NAMES), ":", draw(_NAMES), "->", draw(_NAMES))
                    for attr in draw(st.lists(st.sampled_from(range(8)), max_size=3)):
                        emit(
                            *[
                                ["shell", '"""\n  x {a}\n"""'],
                                ["ansible", "role", '"r"', "tasks", '"t"'],
                                ["upload", '"a"', "to", '"b"'],
                                ["~", "1m30s"],
                                ["timeout", "500ms"],
                                ["retries", "-1"],
                                ["behaviour", draw(_NAMES)],
                                ["idempotent"],
                            ][attr]
                        )
                elif member == "provide":
                    emit("provide", draw(st.sampled_from(["service", "data"])), draw(_NAMES))
                    if draw(st.booleans()):
                        emit("=", draw(st.sampled_from(['"v"', "output of t"])))
                    emit("at")
                    names()
                else:
                    emit("use", "service", draw(_NAMES))
                    if draw(st.booleans()):
                        emit("optional")
                    emit("for")
                    names()
            emit("}")
        else:
            emit("assembly", draw(_NAMES), "{")
            for _ in range(draw(st.integers(0, 3))):
                statement = draw(st.sampled_from(["instance", "connect", "family"]))
                if statement == "instance":
                    emit(draw(_NAMES), "=", draw(_NAMES))
                    if draw(st.booleans()):
                        emit("(", draw(_NAMES), "=", draw(_VALUES), ")")
                    if draw(st.booleans()):
                        emit("on", draw(_NAMES), "in", draw(_NAMES))
                elif statement == "connect":
                    emit("connect", draw(_NAMES), ".", draw(_NAMES), "->", draw(_NAMES), "[")
                    emit(draw(_NAMES), "]", ".", draw(_NAMES))
                else:
                    emit("for", draw(_NAMES), "in", "hosts", "of", draw(_NAMES), "{")
                    emit(draw(_NAMES), "[", draw(_NAMES), "]", "=", draw(_NAMES), "on", "h", "}")
            emit("}")
    if out and draw(st.booleans()):
        del out[draw(st.integers(0, len(out) - 1))]  # a mutant, most often invalid
    return "".join(word + draw(_GAPS) for word in out)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_program())
def test_our_parser_agrees_with_lark_on_generated_programs(text: str) -> None:
    try:
        expected = _lark_tokens(text)
    except Exception:  # any lark error means "not in the language"
        expected = None
    try:
        ours = sorted((t.type, t.value, t.line, t.column) for t in tokenize(text))
    except ParseError:
        ours = None
    assert ours == expected


def _doc_examples(path: str) -> list[str]:
    text = (REPO / path).read_text(encoding="utf-8")
    blocks = text.split("```mad\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


@pytest.mark.parametrize("example", _doc_examples("docs/language.md"))
def test_the_examples_of_the_language_guide_load(example: str, tmp_path: Path) -> None:
    """An example that imports files loads beside files made for it: one small component type
    per import (a glob gets one file that matches it)."""
    work = tmp_path / "work"
    work.mkdir()
    for n, pattern in enumerate(re.findall(r'^import "([^"]+)"', example, re.MULTILINE)):
        target = work / pattern.replace("**/", "").replace("*", f"part{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"component Imported{n} {{\n    places a*\n}}\n")
    (work / "example.mad").write_text(example)
    load_file(work / "example.mad")
