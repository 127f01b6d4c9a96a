"""How a site's agent authenticates to its site's hosts without a credential of its own: the
controller forwards an SSH agent over the connection to the agent's host (as `ssh -A`), so
private keys never leave the controller.

When the inventory names key files for the site's hosts (`ansible_ssh_private_key_file`, or
`--private-key`), a private `ssh-agent` is started for the run (its socket in a 0700 directory
of its own), holds just those keys, and is stopped when the run ends; otherwise the user's own
agent (`SSH_AUTH_SOCK`) is forwarded, if there is one. As with `ssh -A`, whoever has the SSH
user's rights or root on an agent's host can use the forwarded agent while the run lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import asyncssh

from madeus.agents.split import Split
from madeus.backends.base import Backend
from madeus.backends.connection import connection_of
from madeus.backends.router import Habits
from madeus.backends.ssh import SshBackend
from madeus.errors import BackendError, Diagnostic


class Forwarding:
    """The agent forwarded to the agents' hosts: `path`, and `keys` (False when it is the
    user's own agent, whose keys the site's hosts are reached with as they are)."""

    def __init__(self, path: str | None, keys: bool, process: asyncio.subprocess.Process | None,
                 directory: str | None) -> None:  # fmt: skip
        self.path = path
        self.keys = keys
        self._process = process
        self._directory = directory

    async def aclose(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._process.wait(), 5)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


async def forward_keys(ssh: Backend, parts: Split, habits: Habits | None) -> Forwarding:
    """Start forwarding an agent to every agent's host of `parts` (see the module), on the
    run's SSH backend `ssh`."""
    if not isinstance(ssh, SshBackend):
        raise TypeError("site agents are reached with the SSH backend")
    files = sorted(
        {
            key
            for site in parts.sites
            for name in site.hosts
            for key in (connection_of(ssh.inventory.hosts[name], habits).key_file,)
            if key is not None
        }
    )
    agent_hosts = {site.host.name for site in parts.sites}
    if not files:
        path = os.environ.get("SSH_AUTH_SOCK") or None
        if path is not None:
            ssh.forward_agent(agent_hosts, path)
        return Forwarding(path, False, None, None)
    program = shutil.which("ssh-agent")
    if program is None:
        raise BackendError(
            [Diagnostic("agent", "site agents need ssh-agent (OpenSSH's client) on this machine")]
        )
    directory = tempfile.mkdtemp(prefix="madeus-agent-")  # 0700
    path = str(Path(directory) / "agent.sock")
    process = await asyncio.create_subprocess_exec(
        program, "-D", "-a", path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    forwarding = Forwarding(path, True, process, directory)
    try:
        for _ in range(200):
            if os.path.exists(path) or process.returncode is not None:
                break
            await asyncio.sleep(0.01)
        if not os.path.exists(path):
            raise BackendError([Diagnostic("agent", "ssh-agent did not start")])
        agent = await asyncssh.connect_agent(path)
        try:
            for name in files:
                try:
                    key = asyncssh.read_private_key(name)
                except (OSError, asyncssh.KeyImportError) as exc:
                    raise BackendError(
                        [Diagnostic("agent", f"cannot read private key file {name}: {exc}")]
                    ) from None
                await agent.add_keys([key])
        finally:
            agent.close()
            await agent.wait_closed()
    except BaseException:
        await forwarding.aclose()
        raise
    ssh.forward_agent(agent_hosts, path)
    return forwarding
