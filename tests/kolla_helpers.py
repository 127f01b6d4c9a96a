"""Kolla-Ansible's package, for tests that compare madeus with it: the wheel of the release
docs/openstack.md names, downloaded once into the test cache (not installed: its ansible-core
pin need not match ours)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KOLLA_VERSION = "19.8.0"  # the release docs/openstack.md names (2024.2)


def kolla_wheel() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "madeus-tests"
    wheel_dir = cache / f"kolla-ansible-{KOLLA_VERSION}"
    wheels = list(wheel_dir.glob("*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                "-d", str(wheel_dir), f"kolla-ansible=={KOLLA_VERSION}",
            ],
            check=True,
        )  # fmt: skip
        wheels = list(wheel_dir.glob("*.whl"))
    return wheels[0]
