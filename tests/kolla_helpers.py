"""Kolla-Ansible's package, for tests that compare madeus with it: the release docs/openstack.md
names, installed (`pip install 'madeus[kolla]'`) or else its wheel, downloaded once into the
test cache and unpacked there (not installed: its ansible-core pin need not match ours)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

KOLLA_VERSION = "19.8.0"  # the release docs/openstack.md names (2024.2)


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "madeus-tests"


def kolla_wheel() -> Path:
    wheel_dir = _cache() / f"kolla-ansible-{KOLLA_VERSION}"
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


def kolla_share() -> Path:
    """`share/kolla-ansible` of the release: `ansible/` (site.yml, roles, inventories...)."""
    try:
        installed = importlib.metadata.version("kolla-ansible") == KOLLA_VERSION
    except importlib.metadata.PackageNotFoundError:
        installed = False
    share = Path(sys.prefix) / "share" / "kolla-ansible"
    if installed and (share / "ansible" / "site.yml").is_file():
        return share
    wheel = kolla_wheel()
    unpacked = wheel.parent / "unpacked"
    share = unpacked / f"kolla_ansible-{KOLLA_VERSION}.data" / "data" / "share" / "kolla-ansible"
    if not (share / "ansible" / "site.yml").is_file():
        staging = Path(tempfile.mkdtemp(dir=wheel.parent))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        shutil.rmtree(unpacked, ignore_errors=True)
        staging.rename(unpacked)  # whole or not at all, should a run stop half-way
    return share


# The collections of Kolla-Ansible's requirements-core.yml, at versions it accepts, from the
# `ansible` package of PyPI (this machine reaches no Galaxy): what `kolla-ansible install-deps`
# would install. Tests only load them (Ansible resolves module names when it reads a play).
COLLECTIONS_FROM = "ansible==7.7.0"
COLLECTIONS = (
    "ansible/netcommon", "ansible/posix", "ansible/utils", "community/crypto",
    "community/general", "community/docker", "containers/podman",
)  # fmt: skip


def kolla_collections() -> Path:
    """A collections path (`ANSIBLE_COLLECTIONS_PATH`) with Kolla-Ansible's collections."""
    cache = _cache() / COLLECTIONS_FROM.replace("==", "-")
    target = cache / "collections"
    if (target / "ansible_collections").is_dir():
        return target
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
            "-d", str(cache), COLLECTIONS_FROM,
        ],
        check=True,
    )  # fmt: skip
    staging = Path(tempfile.mkdtemp(dir=cache))
    prefixes = tuple(f"ansible_collections/{name}/" for name in COLLECTIONS)
    with zipfile.ZipFile(next(cache.glob("*.whl"))) as archive:
        archive.extractall(staging, [n for n in archive.namelist() if n.startswith(prefixes)])
    staging.rename(target)
    return target
