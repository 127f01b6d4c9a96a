"""Hostile input: the front end under fuzzing (a few hundred cases of bench/fuzz_frontend.py),
and parameter and data values full of shell metacharacters, which must never execute (local
and SSH backends, data ports, `output of`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from madeus.engine import deploy_sync
from madeus.inventory import Inventory

ROOT = Path(__file__).resolve().parent.parent


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fuzz_frontend", ROOT / "bench" / "fuzz_frontend.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_frontend"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fuzzing_the_front_end_finds_no_traceback(tmp_path: Path) -> None:
    harness = _harness()
    report = harness.run(cases=400, seed=7, out=tmp_path / "failures")
    assert report["cases"] >= 400
    assert report["failures"] == []
    assert (report["tracebacks"], report["unpositioned"]) == (0, 0)
    # Every kind of case ran, and both verdicts occur.
    assert set(report["kinds"]) >= {
        "generated",
        "tokens",
        "truncate",
        "deep-parens",
        "huge-identifier",
    }
    assert report["accepted"] > 0 and report["rejected"] > 0


def test_the_harness_reports_a_traceback(tmp_path: Path) -> None:
    """The harness itself: an exception that is not a MadeusError is counted and saved."""
    harness = _harness()
    results = harness.Results(out=tmp_path)

    def boom() -> None:
        raise KeyError("x")

    results.record("probe", "probe", b"data", boom)
    assert results.kinds["probe"].tracebacks == 1
    (failure,) = results.failures
    assert failure["problem"] == "traceback" and "KeyError" in failure["detail"]
    assert Path(failure["saved"]).read_bytes() == b"data"


# --- shell metacharacters never execute ------------------------------------------------------


def hostile(directory: Path) -> str:
    """A value that runs commands if it ever reaches a shell unquoted."""
    d = directory
    return (
        f"$(touch {d}/pwned-1); touch {d}/pwned-2 `touch {d}/pwned-3` | touch {d}/pwned-4 "
        f"&& touch {d}/pwned-5 > {d}/pwned-6 '\"\\ * ~ # {{x}} %s\n; touch {d}/pwned-7"
    )


def assembly_text(directory: Path) -> str:
    return f"""
component Provider(v: str) {{
    places a*, b
    transition emit: a -> b  shell "printf '%s' '$(touch {directory}/pwned-out)'"
    provide data given = "{{v}}" at b
    provide data printed = output of emit at b
}}
component User(v: str) {{
    places a*, b
    transition show: a -> b
        shell "printf '%s|' {{v}} {{given}} {{printed}} > {directory}/shown-{{host.name}}.txt"
    use data given for show
    use data printed for show
}}
assembly hostile {{
    p = Provider(v = env("MADEUS_HOSTILE")) on nodes
    u = User(v = env("MADEUS_HOSTILE")) on nodes
    connect u.given -> p.given
    connect u.printed -> p.printed
}}
"""


def check_nothing_ran(directory: Path, value: str, hosts: tuple[str, ...]) -> None:
    assert sorted(p.name for p in directory.glob("pwned-*")) == []
    for host in hosts:
        shown = (directory / f"shown-{host}.txt").read_text()
        assert shown == f"{value}|{value}|$(touch {directory}/pwned-out)|"


def test_metacharacters_are_data_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = hostile(tmp_path)
    monkeypatch.setenv("MADEUS_HOSTILE", value)
    source = tmp_path / "hostile.mad"
    source.write_text(assembly_text(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = deploy_sync(str(source), inventory=Inventory.local_default())
    assert {e.status for e in result.trace.events} == {"ok"}
    check_nothing_ran(tmp_path, value, ("localhost",))


def test_metacharacters_are_data_over_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshd_helpers import running_sshd, sshd_available

    if not sshd_available():
        pytest.skip("needs root and OpenSSH's sshd")
    value = hostile(tmp_path)
    monkeypatch.setenv("MADEUS_HOSTILE", value)
    source = tmp_path / "hostile.mad"
    source.write_text(assembly_text(tmp_path))
    with running_sshd(tmp_path / "sshd", hosts=("node-1", "node-2")) as sshd:
        inventory = sshd.write_inventory()
        result = deploy_sync(str(source), inventory=str(inventory))
    assert {e.status for e in result.trace.events} == {"ok"}
    check_nothing_ran(tmp_path, value, ("node-1", "node-2"))


@pytest.mark.parametrize("path", ["lib\0.mad", "lib/*\0.mad"])
def test_an_import_path_with_a_nul_byte_is_a_diagnostic(tmp_path: Path, path: str) -> None:
    """Found by the fuzzer: a NUL byte in an import path made glob raise ValueError."""
    from madeus.errors import CheckError
    from madeus.frontend import load_text

    text = f'import "{path}"\n\ncomponent A {{ places a*, b\n transition go: a -> b }}\n'
    with pytest.raises(CheckError) as caught:
        load_text(text, str(tmp_path / "main.mad"))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "import-bad-path"
    assert diagnostic.message == "an import path cannot hold a NUL byte"
    assert (diagnostic.span.line, diagnostic.span.col) == (1, 1)
