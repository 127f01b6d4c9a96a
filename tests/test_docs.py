"""The docs say what the code does: their Python examples run, their numbers match the
assemblies, and they stand alone."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("dsl/*.md")])


def blocks(path: Path, language: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [b.split("```", 1)[0] for b in text.split(f"```{language}\n")[1:]]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_stand_alone(doc: Path) -> None:
    """They never send the reader to a document the repository does not ship."""
    assert "SPEC" not in doc.read_text(encoding="utf-8")


def test_the_python_examples_of_the_api_guide_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ```python block of docs/api.md, in order, in one namespace (as a reader would
    paste them), from a directory where `assemblies/` is the repository's."""
    (tmp_path / "assemblies").symlink_to(REPO / "assemblies")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEYSTONE_PASSWORD", "example")
    namespace: dict[str, object] = {"__name__": "api_guide"}
    printed = io.StringIO()
    examples = blocks(REPO / "docs" / "api.md", "python")
    assert len(examples) >= 6
    for n, code in enumerate(examples):
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"docs/api.md, python example {n + 1}", "exec"), namespace)
    output = printed.getvalue()
    assert "db.migrate db-host" not in output
    assert "db.migrate localhost failed 3" in output  # the DeployError example caught it
    assert (tmp_path / "trace.json").exists()


def test_the_quoting_example_of_the_language_guide_prints_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from madeus import deploy_sync, load_text, resolve

    (example,) = [b for b in blocks(REPO / "docs" / "language.md", "mad") if "Quoting" in b]
    monkeypatch.chdir(tmp_path)
    module = load_text(example)
    value = "it's $(not) run"
    assert module.components[0].params[0].default == value
    from madeus.model import Assembly, Instance, InstanceRef

    assembly = Assembly("q", module.components, (Instance(InstanceRef("q"), "Quoting"),))
    result = deploy_sync(resolve(assembly), run_dir=tmp_path / "run")
    assert result.trace.ok
    printed = (tmp_path / "run" / "q.show@localhost.out").read_text()
    assert printed == (
        f"{value}\ndouble: {value}\nsingle: {value}\n{value}\nhere-document: {value}\n"
    )


def test_the_openstack_guide_counts_what_the_assembly_holds() -> None:
    from madeus.frontend import load_file

    module = load_file(REPO / "assemblies" / "openstack" / "openstack.mad")
    assert module.assembly is not None
    guide = (REPO / "docs" / "openstack.md").read_text(encoding="utf-8")
    found = re.search(r"the paper's assembly: (\d+) instances, .*, (\d+) connections", guide)
    assert found is not None
    assert (int(found[1]), int(found[2])) == (
        len(module.assembly.instances),
        len(module.assembly.connections),
    )
    kolla = load_file(REPO / "assemblies" / "kolla" / "kolla.mad")
    found = re.search(r"Kolla-Ansible 19.8.0: (\d+) components, (\d+) transitions", guide)
    assert found is not None
    assert (int(found[1]), int(found[2])) == (
        len(kolla.components),
        sum(len(c.transitions) for c in kolla.components),
    )


def test_usage_errors_read_as_the_cli_guide_shows(capsys: pytest.CaptureFixture[str]) -> None:
    from madeus.cli import main

    guide = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = re.findall(r"\$ madeus (deploy --simulate=\S+ \S+)\n(.+)\n", guide)
    assert shown
    for command, message in shown:
        with pytest.raises(SystemExit):
            main(command.split())
        assert capsys.readouterr().err.splitlines()[-1] == message
