"""Suite-wide rules.

In CI (`CI` set, as `.ci/run` runs), a test that skips fails instead: the CI machine installs
every tool and has every privilege the suite needs (root, sshd, iproute2, graphviz, chattr...),
so a skip there would hide a missing piece and still report green. Outside CI a skip stays a
skip, with its reason, for a developer without root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
