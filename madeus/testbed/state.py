"""DIR/state.json: everything a testbed created, so that `down` can undo it, even after a crash.

`up` appends a `Resource` to the state file (and writes it to disk) *before* it creates the
resource, so a crash at any point leaves a file that names everything that may exist. `down`
undoes resources in reverse order and drops each from the file once it is gone.

This module also holds the small queries on a running testbed: process identity checks,
`status`, `ssh_argv`, and `link_down`/`link_up` for fault tests.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from madeus.testbed.spec import TestbedError, problem

STATE_FILE = "state.json"
INVENTORY_FILE = "inventory.yml"
KNOWN_HOSTS_FILE = "known_hosts"
CLIENT_KEY_FILE = "id_ed25519"
STATE_VERSION = 1
NETNS_DIR = Path("/run/netns")

Kind = Literal["dir", "file", "bridge", "netns", "veth", "mount", "process"]
Status = Literal["starting", "up", "failed"]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Resource:
    """One thing the testbed created.

    `name` is a path (dir, file, mount), an interface (bridge, veth), a namespace name (netns)
    or, for a process, its role (`sshd control-1`). A process is only ever signalled after its
    identity is checked: its command line contains `match` and, when `netns` is set, it runs in
    that network namespace.
    """

    kind: Kind
    name: str
    host: str = ""
    pid: int | None = None
    match: str = ""
    netns: str = ""


@dataclass(frozen=True, slots=True)
class HostState:
    name: str
    group: str
    site: str
    address: str
    netns: str
    veth: str
    delay: float
    rate: str | None
    proxy_port: int | None = None
    sshd_pid: int | None = None
    proxy_pid: int | None = None


@dataclass(frozen=True, slots=True)
class State:
    id: str
    dir: str
    subnet: str
    bridge: str
    gateway: str
    status: Status
    hosts: tuple[HostState, ...]
    resources: tuple[Resource, ...] = ()
    sites: dict[str, list[str]] = field(default_factory=dict)
    network_constraints: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    def host(self, name: str) -> HostState:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise TestbedError(
            [problem("testbed-unknown-host", f"no host {name!r} in {self.dir} (hosts: {known})")]
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> State:
        return State(
            id=data["id"],
            dir=data["dir"],
            subnet=data["subnet"],
            bridge=data["bridge"],
            gateway=data["gateway"],
            status=data["status"],
            hosts=tuple(HostState(**h) for h in data["hosts"]),
            resources=tuple(Resource(**r) for r in data["resources"]),
            sites={k: list(v) for k, v in data.get("sites", {}).items()},
            network_constraints=dict(data.get("network_constraints", {})),
            version=int(data.get("version", STATE_VERSION)),
        )


class StateFile:
    """The state of one testbed, kept on disk after every change (atomic replace)."""

    def __init__(self, directory: Path, state: State) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.state = state

    @staticmethod
    def load(directory: str | Path) -> StateFile | None:
        """The recorded state, or None when DIR holds no testbed."""
        d = Path(directory).resolve()
        path = d / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = State.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TestbedError(
                [problem("testbed-state", f"{path}: unreadable testbed state ({e})")]
            ) from e
        return StateFile(d, state)

    def write(self) -> None:
        # Written whole then renamed, so a crash of `up` at any point leaves a readable file.
        # No fsync: it guards against a crash of the machine, which takes the namespaces,
        # mounts and processes with it anyway; it would only slow `up` and `down` down.
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, resource: Resource) -> Resource:
        """Record a resource (on disk) before creating it."""
        self.state = replace(self.state, resources=(*self.state.resources, resource))
        self.write()
        return resource

    def set_pid(self, resource: Resource, pid: int) -> Resource:
        new = replace(resource, pid=pid)
        self.state = replace(
            self.state,
            resources=tuple(new if r == resource else r for r in self.state.resources),
        )
        self.write()
        return new

    def drop(self, resource: Resource) -> None:
        """Forget a resource that no longer exists."""
        self.state = replace(
            self.state, resources=tuple(r for r in self.state.resources if r != resource)
        )
        self.write()

    def update_host(self, name: str, **changes: Any) -> None:
        self.state = replace(
            self.state,
            hosts=tuple(replace(h, **changes) if h.name == name else h for h in self.state.hosts),
        )
        self.write()

    def set_status(self, status: Status) -> None:
        self.state = replace(self.state, status=status)
        self.write()


def load_state(directory: str | Path) -> State:
    """The state of the testbed in DIR; raises TestbedError when there is none."""
    sf = StateFile.load(directory)
    if sf is None:
        raise TestbedError(
            [problem("testbed-none", f"no testbed in {directory} (no {STATE_FILE})")]
        )
    return sf.state


# ---------------------------------------------------------------- commands


def find_tool(name: str) -> str | None:
    """A tool on PATH, or in the sbin directories a non-login root shell may lack."""
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin")
    return found


def run(argv: Sequence[str], what: str) -> str:
    """Run a command (argument list, no shell); raise TestbedError with its stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as e:
        raise TestbedError(
            [problem("testbed-command", f"{what}: cannot run {argv[0]}: {e.strerror}")]
        ) from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise TestbedError([problem("testbed-command", f"{what}: {detail}")])
    return proc.stdout


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str) -> bool:
    # /sys/class/net lists the interfaces of our own (root) network namespace.
    return Path("/sys/class/net", name).exists()


# ---------------------------------------------------------------- processes


def cmdline(pid: int) -> str | None:
    """The command line of a live process, arguments joined by spaces; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None  # a zombie, or a kernel thread: not a process we could still own
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _proc_netns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is the named one (what `ip netns pids` does)."""
    target = _netns_inode(name)
    if target is None:
        return []
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _proc_netns(int(entry)) == target:
            out.append(int(entry))
    return out


def owns(resource: Resource, pid: int | None = None) -> bool:
    """Whether `pid` (default: the recorded one) is still the process the resource names."""
    pid = resource.pid if pid is None else pid
    if pid is None:
        return False
    line = cmdline(pid)
    if line is None or (resource.match and resource.match not in line):
        return False
    if resource.netns:
        ns = _netns_inode(resource.netns)
        return ns is not None and _proc_netns(pid) == ns
    return True


def find_unrecorded(resource: Resource) -> list[int]:
    """Processes matching a resource whose PID was never recorded (crash right after spawn)."""
    if not resource.match:
        return []
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and owns(resource, int(entry)):
            out.append(int(entry))
    return out


# ---------------------------------------------------------------- queries and faults


def ssh_argv(state: State, host: str, *command: str) -> list[str]:
    """The OpenSSH client command that runs `command` on a testbed host, checking its key."""
    h = state.host(host)
    d = Path(state.dir)
    return [
        find_tool("ssh") or "ssh",
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={d / KNOWN_HOSTS_FILE}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=10",
        "-i", str(d / CLIENT_KEY_FILE),
        "-p", str(h.proxy_port),
        "root@127.0.0.1",
        "--",
        *command,
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class HostStatus:
    name: str
    group: str
    site: str
    address: str
    proxy_port: int | None
    sshd_alive: bool
    proxy_alive: bool
    ssh_ok: bool
    ssh_seconds: float | None
    ssh_error: str = ""


def _process_resource(state: State, host: str, role: str) -> Resource | None:
    for r in state.resources:
        if r.kind == "process" and r.host == host and r.name.startswith(role + " "):
            return r
    return None


def _probe_ssh(state: State, host: HostState, timeout: float) -> tuple[bool, float | None, str]:
    if host.proxy_port is None:
        return False, None, "no proxy port recorded"
    start = time.monotonic()
    try:
        proc = subprocess.run(
            ssh_argv(state, host.name, "true"),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, None, f"no answer within {timeout:g}s"
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, elapsed, lines[-1] if lines else f"exit status {proc.returncode}"
    return True, elapsed, ""


def status(directory: str | Path, *, ssh: bool = True, timeout: float = 10.0) -> list[HostStatus]:
    """Each host's processes and whether an SSH command answers (probed in parallel)."""
    state = load_state(directory)

    def one(h: HostState) -> HostStatus:
        sshd = _process_resource(state, h.name, "sshd")
        proxy = _process_resource(state, h.name, "proxy")
        ok, seconds, error = _probe_ssh(state, h, timeout) if ssh else (False, None, "")
        return HostStatus(
            h.name,
            h.group,
            h.site,
            h.address,
            h.proxy_port,
            sshd is not None and owns(sshd),
            proxy is not None and owns(proxy),
            ok,
            seconds,
            error,
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(state.hosts))) as pool:
        return list(pool.map(one, state.hosts))


def _set_link(directory: str | Path, host: str, updown: Literal["up", "down"]) -> None:
    state = load_state(directory)
    h = state.host(host)
    ip = find_tool("ip")
    if ip is None:
        raise TestbedError([problem("testbed-tool", "`ip` (iproute2) is not installed")])
    run([ip, "link", "set", "dev", h.veth, updown], f"set the link of {host} {updown}")


def link_down(directory: str | Path, host: str) -> None:
    """Cut a host off (its veth on the bridge goes down): for fault-injection tests."""
    _set_link(directory, host, "down")


def link_up(directory: str | Path, host: str) -> None:
    """Reconnect a host cut off by `link_down`."""
    _set_link(directory, host, "up")


CONTROLLER = "controller"  # this machine, as one end of a cut (`cut`, `heal`)
_TABLE = "madeus_testbed"  # the nftables table of a host's namespace that holds its cuts


def cut(directory: str | Path, a: str, b: str) -> None:
    """Partition two ends: two sites, or a site and `"controller"` (this machine, through the
    hosts' delay proxies). Their packets are dropped both ways, established connections
    included (they stall, as over a real partition); the hosts of each site still reach each
    other and the other sites. Cuts add up; `heal` undoes one."""
    _partition(directory, a, b, "add")


def heal(directory: str | Path, a: str, b: str) -> None:
    """Undo `cut(directory, a, b)` (a pair that is not cut is left as it is)."""
    _partition(directory, a, b, "delete")


def _partition(directory: str | Path, a: str, b: str, op: Literal["add", "delete"]) -> None:
    state = load_state(directory)
    if a == b:
        raise TestbedError([problem("testbed-cut", f"cannot cut {a!r} from itself")])
    ends = [_end(state, a), _end(state, b)]
    tools = {name: find_tool(name) for name in ("ip", "nft")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise TestbedError(
            [problem("testbed-tool", f"{', '.join(missing)} not installed (nftables, iproute2)")]
        )
    # Each end's hosts filter the other end's addresses.
    for (hosts, _), (_, addresses) in (ends, ends[::-1]):
        for h in hosts:
            nft = [str(tools["ip"]), "netns", "exec", h.netns, str(tools["nft"])]
            if op == "add":
                _ensure_table(nft, h.name)
            elif not _has_table(nft):
                continue  # never cut
            for address in addresses:
                # One element at a time: deleting one that is not there fails alone.
                command = [*nft, op, "element", "inet", _TABLE, "cut", f"{{ {address} }}"]
                if op == "add":
                    run(command, f"cut {h.name} from {address}")
                else:
                    subprocess.run(command, capture_output=True, check=False)


def _end(state: State, name: str) -> tuple[list[HostState], list[str]]:
    """The hosts whose namespaces filter for one end, and the addresses of that end."""
    if name == CONTROLLER:
        # The proxies connect from this machine's address on the bridge.
        return [], [state.gateway]
    hosts = [h for h in state.hosts if h.site == name]
    if not hosts:
        known = ", ".join(sorted({h.site for h in state.hosts} | {CONTROLLER}))
        raise TestbedError([problem("testbed-cut", f"no site {name!r} in {state.dir} ({known})")])
    return hosts, [h.address for h in hosts]


def _has_table(nft: list[str]) -> bool:
    listed = subprocess.run([*nft, "list", "table", "inet", _TABLE], capture_output=True)
    return listed.returncode == 0


def _ensure_table(nft: list[str], host: str) -> None:
    if _has_table(nft):
        return
    what = f"prepare the cuts of {host}"
    run([*nft, "add", "table", "inet", _TABLE], what)
    run([*nft, "add", "set", "inet", _TABLE, "cut", "{ type ipv4_addr; }"], what)
    for chain, hook, match in (("input", "input", "saddr"), ("output", "output", "daddr")):
        spec = f"{{ type filter hook {hook} priority 0; }}"
        run([*nft, "add", "chain", "inet", _TABLE, chain, spec], what)
        run([*nft, "add", "rule", "inet", _TABLE, chain, "ip", match, "@cut", "drop"], what)
