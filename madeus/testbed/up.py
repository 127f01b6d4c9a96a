"""`up`: build an emulated multi-site testbed on this machine (needs root).

For each host of the spec:
- a network namespace, whose `eth0` is one end of a veth pair; the other end is a port of the
  testbed's private bridge, which also carries the controller's address (`.1` of a /24 in
  10.0.0.0/8 that nothing on this machine routes yet). Hosts reach each other over the bridge,
  without delay; `tc tbf` on both ends of the veth caps the rate when the spec gives one;
- a copy-on-write root filesystem: overlayfs over `/` with its upper and work directories on a
  tmpfs of its own (an upper directory inside the lower `/` would change the lower layer under
  the overlay, which overlayfs leaves undefined), mounted in DIR/hosts/<host>/root;
- mount and UTS namespaces, in which a shell pivots into that root (fresh /proc, /sys, /tmp,
  /run, /dev/shm; /dev bound from the machine), sets the hostname and execs sshd, so everything
  the host runs later is confined to them;
- an sshd on <address>:22 with its own host key, root login with the testbed's key, and a clean
  root home (no rc files: root's real ~/.bashrc costs ~100 ms per command);
- a delay proxy (proxy.py) on 127.0.0.1:<port>, which the inventory points Ansible and madeus at.

Every resource is recorded in DIR/state.json before it is created (state.py), and a failure
anywhere tears down what exists so far (down.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from madeus.errors import Diagnostic
from madeus.inventory import AGENT_PYTHON_VAR, CONSTRAINTS_VAR, SITES_VAR
from madeus.testbed.spec import HostSpec, TestbedError, TestbedSpec, problem
from madeus.testbed.state import (
    CLIENT_KEY_FILE,
    INVENTORY_FILE,
    KNOWN_HOSTS_FILE,
    NETNS_DIR,
    HostState,
    Progress,
    Resource,
    State,
    StateFile,
    find_tool,
    link_exists,
    owns,
    run,
)

# Tools `up` runs; tc only when a rate is given.
TOOLS = ("ip", "sshd", "ssh-keygen", "nsenter", "unshare", "mount", "umount", "pivot_root")
READY_TIMEOUT = 15.0
HOST_CONFIG_DIR = "/etc/madeus-testbed"  # inside each host's filesystem
OLD_ROOT = ".madeus-oldroot"
FIRST_HOST = 10  # host addresses are .10, .11, ... of the testbed's /24
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs inside the host's new mount and UTS namespaces (and its network namespace), with the
# hostname, the merged root and sshd's path as $1 $2 $3, and as $4 (maybe empty) a directory
# of this machine's /tmp to show, read-only, in the host's fresh /tmp: the Python environment
# madeus runs in, when it lives there (site agents run on it). Values come in as arguments,
# never spliced into the script. Mounts made here are private to the host and vanish with it.
HOST_INIT = r"""
set -eu
hostname "$1"
cd "$2"
mount -t proc -o nosuid,nodev,noexec proc proc
mount --rbind /dev dev
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs dev/shm
mount -t sysfs -o nosuid,nodev,noexec sysfs sys
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs tmp
if [ -n "$4" ]; then
    mkdir -p "tmp/${4#/tmp/}"
    mount --bind "$4" "tmp/${4#/tmp/}"
    mount -o remount,bind,ro "tmp/${4#/tmp/}"
fi
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs run
mkdir -m 755 run/sshd
pivot_root . .madeus-oldroot
cd /
umount -l /.madeus-oldroot
rmdir /.madeus-oldroot
exec "$3" -D -e -f /etc/madeus-testbed/sshd_config
"""

SSHD_CONFIG = """\
# Written by madeus testbed for host {name}.
ListenAddress {address}:22
HostKey {config_dir}/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxSessions 64
MaxStartups 100
LogLevel INFO
SetEnv {path_env}
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def testbed_id(directory: Path) -> str:
    """A short id derived from DIR: names stay unique per testbed and short enough for links."""
    return hashlib.sha256(str(directory).encode()).hexdigest()[:4]


def _routed_networks(ip: str) -> list[ipaddress.IPv4Network]:
    out: list[ipaddress.IPv4Network] = []
    text = run([ip, "-4", "route", "show", "table", "all"], "list the routes")
    for line in text.splitlines():
        words = line.split()
        for word in words[:3]:
            try:
                out.append(ipaddress.IPv4Network(word, strict=False))
            except ValueError:
                continue
            break
    addrs = run([ip, "-4", "-o", "addr", "show"], "list the addresses")
    for line in addrs.splitlines():
        words = line.split()
        if "inet" in words:
            out.append(ipaddress.IPv4Network(words[words.index("inet") + 1], strict=False))
    return out


def choose_subnet(ip: str, tbid: str) -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that overlaps nothing routed here, starting from one given by the id.

    Starting from the id keeps two testbeds of this machine apart from each other too (each
    one's bridge route is in the table when the next one is chosen).
    """
    taken = [n for n in _routed_networks(ip) if n.prefixlen > 0]  # ignore the default route
    start = int(tbid, 16)
    for i in range(65536):
        n = (start + i * 97) % 65536  # 97 is odd: steps through every /24 once
        if n >> 8 == 0:
            continue  # skip 10.0.x.0/24, the range most likely used by something else
        candidate = ipaddress.IPv4Network(f"10.{n >> 8}.{n & 255}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise TestbedError([problem("testbed-subnet", "no free /24 left in 10.0.0.0/8")])


def check_environment(spec: TestbedSpec) -> dict[str, str]:
    """Root and every tool `up` needs; returns tool name -> path."""
    problems: list[Diagnostic] = []
    if os.geteuid() != 0:
        problems.append(
            problem(
                "testbed-not-root",
                "madeus testbed needs root (network namespaces, veth links, mounts): "
                "run it as root",
            )
        )
    tools = list(TOOLS)
    if any(h.rate is not None for h in spec.hosts()):
        tools.append("tc")
    found: dict[str, str] = {}
    for tool in tools:
        path = find_tool(tool)
        if path is None:
            package = {
                "ip": "iproute2",
                "tc": "iproute2",
                "sshd": "openssh-server",
                "ssh-keygen": "openssh-client",
            }.get(tool, "util-linux")
            problems.append(
                problem("testbed-tool", f"`{tool}` is not installed (Debian package {package})")
            )
        else:
            found[tool] = path
    if problems:
        raise TestbedError(problems)
    return found


def _emit(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


class _Builder:
    """Creates the resources one by one, recording each before it exists."""

    def __init__(self, sf: StateFile, spec: TestbedSpec, tools: dict[str, str]) -> None:
        self.sf = sf
        self.spec = spec
        self.tools = tools
        self.dir = sf.directory
        self.prefix = f"mdtb-{sf.state.id}"

    # -- recording helpers

    def mkdir(self, path: Path, mode: int = 0o755) -> None:
        if path.exists():
            return
        self.sf.add(Resource("dir", str(path)))
        path.mkdir(mode=mode)

    def file(self, path: Path, text: str, mode: int = 0o644) -> None:
        self.sf.add(Resource("file", str(path)))
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)

    def keygen(self, path: Path, comment: str) -> str:
        """An ed25519 key pair at `path` (+ .pub); returns the public key line."""
        self.sf.add(Resource("file", str(path)))
        self.sf.add(Resource("file", str(path) + ".pub"))
        run(
            [self.tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", comment,
             "-f", str(path)],
            f"generate the key {path}",
        )  # fmt: skip
        return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()

    def ip(self, *args: str, what: str) -> None:
        run([self.tools["ip"], *args], what)

    # -- steps

    def network(self) -> None:
        st = self.sf.state
        self.sf.add(Resource("bridge", st.bridge))
        self.ip("link", "add", st.bridge, "type", "bridge", what="create the bridge")
        net = ipaddress.IPv4Network(st.subnet)
        self.ip("addr", "add", f"{st.gateway}/{net.prefixlen}", "dev", st.bridge,
                what="address the bridge")  # fmt: skip
        self.ip("link", "set", st.bridge, "up", what="bring the bridge up")

    def host_network(self, h: HostState, spec: HostSpec) -> None:
        prefixlen = ipaddress.IPv4Network(self.sf.state.subnet).prefixlen
        self.sf.add(Resource("netns", h.netns, host=h.name))
        self.ip("netns", "add", h.netns, what=f"create the namespace of {h.name}")
        self.sf.add(Resource("veth", h.veth, host=h.name))
        self.ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns,
                what=f"create the link of {h.name}")  # fmt: skip
        self.ip("link", "set", h.veth, "master", self.sf.state.bridge, "up",
                what=f"attach {h.name} to the bridge")  # fmt: skip
        self.ip("-n", h.netns, "addr", "add", f"{h.address}/{prefixlen}", "dev", "eth0",
                what=f"address {h.name}")  # fmt: skip
        self.ip("-n", h.netns, "link", "set", "eth0", "up", what=f"bring up eth0 of {h.name}")
        self.ip("-n", h.netns, "link", "set", "lo", "up", what=f"bring up lo of {h.name}")
        if spec.rate is not None:
            # Both directions: traffic to the host leaves by the bridge-side end, traffic from
            # it by eth0. Burst: 10 ms at the rate (and at least a few packets), so that tbf
            # stays accurate; latency: how long a packet may wait in the bucket's queue.
            bits = spec.rate.bits_per_second
            burst = str(max(bits // 8 // 100, 16 * 1514))
            tbf = ["root", "tbf", "rate", f"{bits}bit", "burst", burst, "latency", "100ms"]
            run([self.tools["tc"], "qdisc", "add", "dev", h.veth, *tbf],
                f"limit the rate of {h.name}")  # fmt: skip
            run([self.tools["tc"], "-n", h.netns, "qdisc", "add", "dev", "eth0", *tbf],
                f"limit the rate of {h.name}")  # fmt: skip

    def host_filesystem(self, h: HostState, authorized: str, hosts_file: str) -> Path:
        """Mount the host's copy-on-write root; returns the merged directory."""
        base = self.dir / "hosts" / h.name
        rw, root = base / "rw", base / "root"
        self.mkdir(rw, 0o700)
        self.mkdir(root)
        self.sf.add(Resource("mount", str(rw), host=h.name))
        run([self.tools["mount"], "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(rw)],
            f"mount the tmpfs of {h.name}")  # fmt: skip
        upper, work = rw / "upper", rw / "work"
        upper.mkdir()
        work.mkdir()
        self._populate_upper(h, upper, base, authorized, hosts_file)
        self.sf.add(Resource("mount", str(root), host=h.name))
        options = f"lowerdir=/,upperdir={upper},workdir={work}"
        run([self.tools["mount"], "-t", "overlay", "-o", options, "overlay", str(root)],
            f"mount the root filesystem of {h.name}")  # fmt: skip
        return root

    def _populate_upper(
        self, h: HostState, upper: Path, base: Path, authorized: str, hosts_file: str
    ) -> None:
        """Files the host starts with, written straight into the (not yet mounted) upper layer.

        Directories copy the mode of the directory they cover, since an upper directory's
        attributes win over the lower one's.
        """

        def mirror(rel: str) -> Path:
            path = upper
            for part in Path(rel).parts:
                path = path / part
                if not path.exists():
                    path.mkdir()
                    st = os.stat(Path("/") / path.relative_to(upper))
                    os.chmod(path, stat.S_IMODE(st.st_mode))
            return path

        def put(path: Path, text: str, mode: int) -> None:
            path.write_text(text, encoding="utf-8")
            path.chmod(mode)

        etc = mirror("etc")
        put(etc / "hostname", h.name + "\n", 0o644)
        put(etc / "hosts", hosts_file, 0o644)
        config_dir = etc / Path(HOST_CONFIG_DIR).name
        config_dir.mkdir(mode=0o755)
        for suffix in ("", ".pub"):
            src = base / ("ssh_host_ed25519_key" + suffix)
            put(config_dir / src.name, src.read_text(encoding="utf-8"),
                0o600 if suffix == "" else 0o644)  # fmt: skip
        put(config_dir / "sshd_config", (base / "sshd_config").read_text(encoding="utf-8"), 0o644)

        # A clean /root: every entry of the machine's /root is hidden by an overlayfs whiteout
        # (a 0/0 character device), except where this Python lives (the hosts' python3 must be
        # the controller's), and .ssh is an opaque directory holding only our key.
        home = mirror("root")
        keep = _python_roots()
        for entry in os.listdir("/root"):
            if entry not in keep:
                os.mknod(home / entry, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        if (home / ".ssh").exists():
            (home / ".ssh").unlink()  # the whiteout made just above
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700)
        os.setxattr(ssh, "trusted.overlay.opaque", b"y")
        put(ssh / "authorized_keys", authorized + "\n", 0o600)
        (upper / OLD_ROOT).mkdir(mode=0o700)

    def start_sshd(self, h: HostState, root: Path) -> None:
        base = self.dir / "hosts" / h.name
        log = base / "sshd.log"
        self.sf.add(Resource("file", str(log), host=h.name))
        resource = self.sf.add(
            Resource("process", f"sshd {h.name}", host=h.name, match="sshd", netns=h.netns)
        )
        argv = [
            self.tools["nsenter"], f"--net={NETNS_DIR / h.netns}", "--",
            self.tools["unshare"], "--mount", "--uts", "--propagation", "private", "--",
            "/bin/sh", "-c", HOST_INIT, "madeus-testbed-init",
            h.name, str(root), self.tools["sshd"], _python_in_tmp(),
        ]  # fmt: skip
        with open(log, "ab") as out:
            # nsenter, unshare, sh and its `exec` all replace the same process: this PID is
            # sshd's. A new session keeps it out of the terminal's job control (Ctrl-C on up).
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.sf.set_pid(resource, proc.pid)
        self.sf.update_host(h.name, sshd_pid=proc.pid)
        pidfile = base / "sshd.pid"
        self.file(pidfile, f"{proc.pid}\n")

    def start_proxy(self, h: HostState) -> None:
        base = self.dir / "hosts" / h.name
        log = base / "proxy.log"
        # Bind the port here and hand the socket over: its number is known (and recorded)
        # before the proxy runs, and no other program can take it in between.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            port: int = sock.getsockname()[1]
            self.sf.update_host(h.name, proxy_port=port)
            self.sf.add(Resource("file", str(log), host=h.name))
            resource = self.sf.add(
                Resource(
                    "process",
                    f"proxy {h.name}",
                    host=h.name,
                    match=f"madeus.testbed.proxy --name {h.netns} ",
                )
            )
            argv = [
                sys.executable, "-m", "madeus.testbed.proxy",
                "--name", h.netns,
                "--listen", f"127.0.0.1:{port}",
                "--connect", f"{h.address}:22",
                "--delay", repr(h.delay),
                "--fd", str(sock.fileno()),
            ]  # fmt: skip
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(sock.fileno(),),
                )
        finally:
            sock.close()
        self.sf.set_pid(resource, proc.pid)
        self.sf.update_host(h.name, proxy_pid=proc.pid)

    def inventory(self, public_key_lines: dict[str, str]) -> None:
        st = self.sf.state
        key = str(self.dir / CLIENT_KEY_FILE)
        known_hosts = self.dir / KNOWN_HOSTS_FILE
        children: dict[str, Any] = {}
        for g in self.spec.groups:
            hosts: dict[str, Any] = {}
            for h in st.hosts:
                if h.group == g.name:
                    hosts[h.name] = {
                        "ansible_host": "127.0.0.1",
                        "ansible_port": h.proxy_port,
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": key,
                        "madeus_address": h.address,
                    }
            children[g.name] = {"hosts": hosts}
        ssh_args = (
            f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))} "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        )
        all_vars = {
            "ansible_ssh_common_args": ssh_args,
            SITES_VAR: st.sites,
            CONSTRAINTS_VAR: st.network_constraints,
            # The hosts' filesystems are this machine's: site agents run on this Python,
            # which has what they import (asyncssh).
            AGENT_PYTHON_VAR: sys.executable,
        }
        data = {"all": {"vars": all_vars, "children": children}}
        header = (
            f"# Written by `madeus testbed up` for the testbed in {self.dir}.\n"
            f"# Hosts answer SSH through delay proxies on 127.0.0.1; host keys: {known_hosts}\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        lines = []
        for h in st.hosts:
            pub = " ".join(public_key_lines[h.name].split()[:2])  # type and key, no comment
            lines.append(f"[127.0.0.1]:{h.proxy_port} {pub}")
            lines.append(f"{h.address} {pub}")  # for host-to-host SSH over the bridge
        self.file(known_hosts, "\n".join(lines) + "\n")
        self.file(self.dir / INVENTORY_FILE, text)


async def _wait_banner(
    host: str, port: int, deadline: float, process: Resource | None = None
) -> None:
    """Wait until an SSH server answers on host:port with its version line.

    Gives up early when `process` (the server, or the proxy in front of it) has exited.
    """
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and not owns(process):
            raise TimeoutError(f"{process.name.split()[0]} exited")
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    line = await reader.readline()
                finally:
                    writer.close()
            if line.startswith(b"SSH-"):
                return
            last = ConnectionError(f"unexpected answer {line[:40]!r}")
        except (OSError, TimeoutError) as e:
            last = e
        # sshd is starting in another process: nothing to wait on but its port.
        await asyncio.sleep(0.02)
    raise TimeoutError(str(last) if last else "timed out")


async def _wait_ready(state: State, deadline: float) -> dict[str, str]:
    """Each host's sshd on its address, then through its proxy; returns host -> error."""
    processes = {(r.host, r.name.split()[0]): r for r in state.resources if r.kind == "process"}

    async def one(h: HostState) -> tuple[str, str]:
        try:
            await _wait_banner(h.address, 22, deadline, processes.get((h.name, "sshd")))
        except TimeoutError as e:
            return h.name, f"sshd does not answer on {h.address}:22 ({e})"
        assert h.proxy_port is not None
        try:
            proxy = processes.get((h.name, "proxy"))
            await _wait_banner("127.0.0.1", h.proxy_port, deadline, proxy)
        except TimeoutError as e:
            return h.name, f"the proxy on 127.0.0.1:{h.proxy_port} does not answer ({e})"
        return h.name, ""

    results = await asyncio.gather(*(one(h) for h in state.hosts))
    return {name: error for name, error in results if error}


def _python_in_tmp() -> str:
    """The running Python environment's directory when it lives under /tmp (a virtualenv of a
    checkout there), which the hosts' fresh /tmp would hide; else ""."""
    prefix = os.path.realpath(sys.prefix)
    return prefix if prefix.startswith("/tmp/") else ""


def _python_roots() -> set[str]:
    """The entries of /root that hold the running Python (pyenv, a venv...), if any."""
    out: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}:
        parts = Path(prefix).parts
        if len(parts) > 2 and parts[:2] == ("/", "root"):
            out.add(parts[2])
    return out


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _initial_state(spec: TestbedSpec, directory: Path, ip: str) -> State:
    tbid = testbed_id(directory)
    prefix = f"mdtb-{tbid}"
    subnet = choose_subnet(ip, tbid)
    addresses = list(subnet.hosts())
    hosts = []
    for i, hs in enumerate(spec.hosts()):
        hosts.append(
            HostState(
                name=hs.name,
                group=hs.group,
                site=hs.site,
                address=str(addresses[FIRST_HOST - 1 + i]),
                netns=f"{prefix}-{hs.name}",
                veth=f"{prefix}-{i}",  # 15 characters at most: "mdtb-abcd-" + index
                delay=hs.delay.seconds if hs.delay else 0.0,
                rate=hs.rate.text if hs.rate else None,
            )
        )
    return State(
        id=tbid,
        dir=str(directory),
        subnet=str(subnet),
        bridge=f"{prefix}-br",
        gateway=str(addresses[0]),
        status="starting",
        hosts=tuple(hosts),
        sites={s.name: list(s.groups) for s in spec.sites},
        network_constraints=spec.network.as_given(),
    )


def _hosts_file(hosts: Iterable[HostState]) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "# madeus testbed hosts",
    ]
    lines.extend(f"{h.address}\t{h.name}" for h in hosts)
    return "\n".join(lines) + "\n"


def _path_env() -> str:
    # The interpreter behind a virtualenv: a venv under /tmp (a fresh tmpfs on the hosts)
    # would not be there, the interpreter it points to is (the hosts see the machine's /).
    path = f"{os.path.dirname(os.path.realpath(sys.executable))}:{STANDARD_PATH}"
    if any(c.isspace() or c == '"' for c in path):
        raise TestbedError(
            [problem("testbed-python", f"cannot give the hosts a PATH with spaces: {path}")]
        )
    return f"PATH={path}"


def up(spec: TestbedSpec, directory: str | Path, progress: Progress | None = None) -> State:
    """Build the testbed described by `spec`, writing its state and inventory into DIR.

    On any failure (or Ctrl-C) whatever was created so far is torn down before the error is
    raised.
    """
    tools = check_environment(spec)
    d = Path(directory).resolve()
    existing = StateFile.load(d) if d.exists() else None
    if existing is not None:
        raise TestbedError(
            [
                problem(
                    "testbed-exists",
                    f"{d} already holds a testbed (id {existing.state.id}, "
                    f"{existing.state.status}): run `madeus testbed down {d}` first",
                )
            ]
        )
    if any(c in str(d) for c in ",:\\\"'") or any(c.isspace() for c in str(d)):
        # The path goes into overlayfs options (comma and colon separated) and sshd's config.
        raise TestbedError(
            [
                problem(
                    "testbed-dir",
                    f"{d}: choose a directory whose path has no spaces, "
                    "commas, colons, quotes or backslashes",
                )
            ]
        )
    created_dir = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    try:
        state = _initial_state(spec, d, tools["ip"])
    except BaseException:
        if created_dir:
            d.rmdir()
        raise
    prefix = f"mdtb-{state.id}"
    clash = [state.bridge] if link_exists(state.bridge) else []
    clash += [h.netns for h in state.hosts if (NETNS_DIR / h.netns).exists()]
    if clash:
        if created_dir:
            d.rmdir()
        raise TestbedError(
            [
                problem(
                    "testbed-clash",
                    f"{', '.join(clash)} already exist: another testbed has id {state.id} "
                    f"({prefix}); tear it down or choose another directory",
                )
            ]
        )
    sf = StateFile(d, state)
    sf.write()
    if created_dir:
        sf.add(Resource("dir", str(d)))
    try:
        _build(sf, spec, tools, progress)
    except BaseException as e:
        sf.set_status("failed")
        _emit(progress, "failed: removing what was created")
        from madeus.testbed.down import down

        try:
            down(d, progress=None)
        except TestbedError as cleanup:
            if isinstance(e, TestbedError):
                raise TestbedError([*e.diagnostics, *cleanup.diagnostics]) from e
        raise
    return sf.state


def _build(
    sf: StateFile, spec: TestbedSpec, tools: dict[str, str], progress: Progress | None
) -> None:
    b = _Builder(sf, spec, tools)
    d = sf.directory
    st = sf.state
    started = time.monotonic()
    _emit(progress, f"testbed {st.id}: {len(st.hosts)} hosts on {st.subnet}, bridge {st.bridge}")
    client_pub = b.keygen(d / CLIENT_KEY_FILE, f"madeus-testbed-{st.id}")
    b.mkdir(d / "hosts")
    host_pubs: dict[str, str] = {}
    path_env = _path_env()
    for h in st.hosts:
        base = d / "hosts" / h.name
        b.mkdir(base)
        host_pubs[h.name] = b.keygen(base / "ssh_host_ed25519_key", f"root@{h.name}")
        b.file(
            base / "sshd_config",
            SSHD_CONFIG.format(
                name=h.name, address=h.address, config_dir=HOST_CONFIG_DIR, path_env=path_env
            ),
        )
    b.network()
    hosts_file = _hosts_file(st.hosts)
    specs = {hs.name: hs for hs in spec.hosts()}
    for h in st.hosts:
        _emit(progress, f"{h.name}: namespace {h.netns}, {h.address}, {_describe(specs[h.name])}")
        b.host_network(h, specs[h.name])
        root = b.host_filesystem(h, client_pub, hosts_file)
        b.start_sshd(h, root)
    for h in sf.state.hosts:
        b.start_proxy(h)
    _emit(progress, "waiting for sshd and the delay proxies")
    errors = asyncio.run(_wait_ready(sf.state, time.monotonic() + READY_TIMEOUT))
    if errors:
        diags = []
        for name, error in errors.items():
            tail = _tail(d / "hosts" / name / "sshd.log")
            diags.append(
                problem("testbed-not-ready", f"{name}: {error}" + (f"\n{tail}" if tail else ""))
            )
        raise TestbedError(diags)
    b.inventory(host_pubs)
    sf.set_status("up")
    _emit(progress, f"up in {time.monotonic() - started:.1f}s: inventory {d / INVENTORY_FILE}")


def _describe(h: HostSpec) -> str:
    delay = h.delay.text if h.delay else "no delay"
    rate = h.rate.text if h.rate else "no rate limit"
    return f"{delay}, {rate}"
