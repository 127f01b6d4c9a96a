"""Suite-wide rules.

In CI (`CI` set, as `.ci/run` runs), a test that skips fails instead: the CI machine installs
every tool and has every privilege the suite needs (root, sshd, iproute2, graphviz, chattr...),
so a skip there would hide a missing piece and still report green. Outside CI a skip stays a
skip, with its reason, for a developer without root.

Every test keeps its states of record (`$MADEUS_STATE`) in its own temporary directory: states
are kept beside the assembly file by default, and many tests deploy the repository's own
assemblies, which must stay clean. `tests/test_state.py` unsets it where the default is tested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For the fixtures wider than a test, which run before `_private_states`."""
    before = os.environ.get("MADEUS_STATE")
    os.environ["MADEUS_STATE"] = str(tmp_path_factory.mktemp("states"))
    yield
    if before is None:
        os.environ.pop("MADEUS_STATE", None)
    else:
        os.environ["MADEUS_STATE"] = before


@pytest.fixture(autouse=True)
def _private_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MADEUS_STATE", str(tmp_path / ".madeus" / "state"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI ({reason}): CI must provide every tool and privilege the tests need"
        )
    return report


@pytest.fixture
def lab_env() -> dict[str, str]:
    """The environment of the OpenStack lab's tests: this one, with a fresh password in each of
    the lab's `OSLAB_*_PASSWORD` variables."""
    import secrets

    from test_openstack_lab import PASSWORDS

    env = dict(os.environ)
    for name in PASSWORDS:
        env[name] = secrets.token_hex(16)
    return env
