"""A real OpenSSH server on loopback, for tests that need an SSH host but no testbed.

`running_sshd(tmp_path)` starts `/usr/sbin/sshd -D -f <config>` on 127.0.0.1 and a free port,
with its own host key, a fresh client key, an `authorized_keys` file and a `known_hosts` file
in `tmp_path`, and yields an `Sshd` whose `inventory()` names one or more hosts that all point
at it (same address and port, different names). sshd is stopped by its PID at the end.

Other test modules import it (`from sshd_helpers import running_sshd`): pytest puts `tests/`
on `sys.path` because the folder has no `__init__.py`.

Why the `HOME` trick: sshd runs a command as `<login shell> -c <command>`, and Debian's bash
reads `~/.bashrc` even non-interactively when started by sshd. Root's `.bashrc` here runs
`pyenv init`, which costs tens of milliseconds per command and may print to stderr. `SetEnv
HOME=<tmp>/home` (applied by sshd after its own `HOME`) points bash at an empty home, so the
tests measure the backend, not the shell's start-up files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from madeus.inventory import Inventory, inventory_from_dict

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_available() -> bool:
    """sshd must exist and we must be root (privilege separation and root logins)."""
    return Path(SSHD).exists() and Path(SSH_KEYGEN).exists() and os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    return free_port()


@dataclass
class Sshd:
    dir: Path
    port: int
    pid: int
    client_key: Path
    known_hosts: Path
    host_names: tuple[str, ...]
    host_public_key: str
    log: Path
    extra_host_vars: dict[str, object] = field(default_factory=dict)
    _loaded: dict[str, Inventory] = field(default_factory=dict, repr=False)

    def inventory_dict(self, *, known_hosts_beside: bool = False) -> dict[str, object]:
        hosts = {
            name: {
                "ansible_host": "127.0.0.1",
                "ansible_port": self.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.client_key),
                **self.extra_host_vars,
            }
            for name in self.host_names
        }
        return {"all": {"children": {"nodes": {"hosts": hosts}}}}

    def inventory(self) -> Inventory:
        """The inventory, written as `dir/inventory.yml` (so `dir/known_hosts` sits beside
        it) and read by Ansible; the same one again while its content does not change."""
        import json

        key = json.dumps(self.inventory_dict(), sort_keys=True, default=str)
        if key not in self._loaded:
            self._loaded.clear()
            self._loaded[key] = inventory_from_dict(
                self.inventory_dict(), str(self.dir / "inventory.yml")
            )
        return self._loaded[key]

    def write_inventory(self) -> Path:
        import yaml

        path = self.dir / "inventory.yml"
        path.write_text(yaml.safe_dump(self.inventory_dict()), encoding="utf-8")
        return path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "madeus-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                # sshd accepted: it answers with its banner once it is fully up.
                with contextlib.suppress(OSError):
                    if s.recv(4).startswith(b"SSH-"):
                        return
        time.sleep(0.02)
    raise RuntimeError(f"sshd did not listen on port {port}: {log.read_text()}")


@contextlib.contextmanager
def running_sshd(
    tmp: Path,
    hosts: tuple[str, ...] = ("node-1",),
    *,
    max_sessions: int = 10,
    clean_home: bool = True,
) -> Iterator[Sshd]:
    """Start sshd on 127.0.0.1:<free port>; stop it (by PID) and keep `tmp` for the caller."""
    if not sshd_available():
        import pytest

        pytest.skip("needs root and /usr/sbin/sshd")
    base = tmp / "sshd"
    base.mkdir(parents=True, exist_ok=True)
    home = base / "home"
    home.mkdir(exist_ok=True)
    host_key = base / "host_ed25519"
    client_key = base / "id_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (base / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    host_public_key = Path(f"{host_key}.pub").read_text().split()[:2]
    # sshd's privilege separation needs this directory; systemd normally creates it.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = base / "sshd.log"
    proc: subprocess.Popen[bytes] | None = None
    for _attempt in range(5):  # the free port may be taken between probing and binding
        port = free_port()
        config = base / "sshd_config"
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {base / 'sshd.pid'}",
            f"AuthorizedKeysFile {base / 'authorized_keys'}",
            "StrictModes no",  # pytest's tmp dirs are not always 0755 up to /
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"MaxSessions {max_sessions}",
            "MaxStartups 100:30:200",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]
        if clean_home:
            lines.append(f"SetEnv HOME={home}")
        config.write_text("\n".join(lines) + "\n")
        with log.open("ab") as log_file:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
            )
        try:
            _wait_listening(port, proc, log, timeout=10)
            break
        except RuntimeError:
            _stop(proc)
            proc = None
    if proc is None:
        raise RuntimeError(f"could not start sshd: {log.read_text()}")
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_public_key)}\n")
    server = Sshd(
        dir=base,
        port=port,
        pid=proc.pid,
        client_key=client_key,
        known_hosts=known_hosts,
        host_names=hosts,
        host_public_key=" ".join(host_public_key),
        log=log,
    )
    try:
        yield server
    finally:
        _stop(proc)


def _descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (from /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the parent PID follows its last `)`.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop sshd by its PID, and the per-connection sshd processes it forked (by their PIDs):
    a client that keeps its connection open (ssh ControlPersist) would keep them alive."""
    for child in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
