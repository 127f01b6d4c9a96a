"""The local testbed: spec parsing, the delay proxy, and (as root) real namespaces and sshd."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from madeus.cli import main
from madeus.errors import render_all
from madeus.testbed import (
    State,
    TestbedError,
    cut,
    down,
    heal,
    link_down,
    link_up,
    load_spec,
    load_spec_text,
    load_state,
    parse_delay,
    parse_rate,
    ssh_argv,
    status,
    up,
)
from madeus.testbed.proxy import Address, open_delay_proxy
from madeus.testbed.state import find_tool

# The package exports the functions `up` and `down`, which hide the modules of the same name.
up_module = importlib.import_module("madeus.testbed.up")

REPO = Path(__file__).resolve().parent.parent
THREE_SITES = REPO / "assemblies" / "testbeds" / "three-sites.yml"

ISSUE_EXAMPLE = """\
resources:        # group: number of hosts
  control: 1
  network: 1
  compute: 2
network_constraints:
  default_delay: 25ms      # one way, between the controller and every host
  default_rate: 1gbit
  constraints:             # optional overrides per group
    - {dst: compute, delay: 50ms, rate: 100mbit}
sites:
  site1: [control, network]
  site2: [compute]
"""


# ------------------------------------------------------------------ spec


def test_issue_example_parses() -> None:
    spec = load_spec_text(ISSUE_EXAMPLE)
    assert [(g.name, g.count) for g in spec.groups] == [
        ("control", 1),
        ("network", 1),
        ("compute", 2),
    ]
    assert [(s.name, s.groups) for s in spec.sites] == [
        ("site1", ("control", "network")),
        ("site2", ("compute",)),
    ]
    hosts = [(h.name, h.group, h.site, h.delay and h.delay.seconds, h.rate and h.rate.text)
             for h in spec.hosts()]  # fmt: skip
    assert hosts == [
        ("control-1", "control", "site1", 0.025, "1gbit"),
        ("network-1", "network", "site1", 0.025, "1gbit"),
        ("compute-1", "compute", "site2", 0.05, "100mbit"),
        ("compute-2", "compute", "site2", 0.05, "100mbit"),
    ]
    assert spec.network.as_given() == {
        "default_delay": "25ms",
        "default_rate": "1gbit",
        "constraints": [{"dst": "compute", "delay": "50ms", "rate": "100mbit"}],
    }


def test_shipped_example_parses() -> None:
    spec = load_spec(THREE_SITES)
    assert [h.name for h in spec.hosts()] == ["control-1", "network-1", "compute-1"]
    assert {h.delay.text for h in spec.hosts() if h.delay} == {"25ms"}


def test_default_site_holds_every_group() -> None:
    spec = load_spec_text("resources: {a: 2, b: 1}\n")
    assert [(s.name, s.groups) for s in spec.sites] == [("testbed", ("a", "b"))]
    assert [(h.name, h.delay, h.rate) for h in spec.hosts()] == [
        ("a-1", None, None),
        ("a-2", None, None),
        ("b-1", None, None),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("25ms", 0.025), ("0.5s", 0.5), ("800us", 0.0008), ("2.5 ms", 0.0025), ("1S", 1.0)],
)
def test_parse_delay(text: str, seconds: float) -> None:
    assert parse_delay(text).seconds == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bits"),
    [("1gbit", 10**9), ("100mbit", 10**8), ("500kbit", 5 * 10**5), ("1.5Gbit", 15 * 10**8)],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert parse_rate(text).bits_per_second == bits


def _errors(text: str, tmp_path: Path) -> str:
    path = tmp_path / "testbed.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TestbedError) as info:
        load_spec(path)
    return render_all(info.value.diagnostics).replace(str(path), "T.yml")


def test_errors_are_positioned(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        resources:
          control: 1
          compute: two
        network_constraints:
          default_delay: 25
          default_rate: 1gbps
          constraints:
            - {dst: storage, delay: 5ms}
        sites:
          site1: [control, nope]
        """)
    assert _errors(text, tmp_path) == textwrap.dedent("""\
        T.yml:3:12: error: the number of hosts of 'compute' must be a whole number >= 1, not 'two'
          compute: two
                   ^~~
        T.yml:5:18: error: default_delay: bad delay '25': write a number and a unit (us, ms, s), e.g. 25ms
          default_delay: 25
                         ^~
        T.yml:6:17: error: default_rate: bad rate '1gbps': write a number and a unit (bit, kbit, mbit, gbit), e.g. 100mbit
          default_rate: 1gbps
                        ^~~~~
        T.yml:8:13: error: constraint for unknown group 'storage'
            - {dst: storage, delay: 5ms}
                    ^~~~~~~
        T.yml:10:20: error: site 'site1' lists unknown group 'nope'
          site1: [control, nope]
                           ^~~~""")  # noqa: E501


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resources: {a: 1}\nsites:\n  s1: [a]\n  s2: [a]\n",
            "T.yml:4:8: error: group 'a' is already in site 's1'",
        ),
        (
            "resources: {a: 1, b: 1}\nsites:\n  s1: [a]\n",
            "T.yml:1:19: error: group 'b' is in no site",
        ),
        (
            "resources: {a: 1}\nresources: {b: 1}\n",
            "T.yml:2:1: error: duplicate key 'resources' (first at line 1)",
        ),
        (
            "resources: {a: 1}\nnodes: 3\n",
            "T.yml:2:1: error: unknown key 'nodes': expected resources, network_constraints "
            "or sites",
        ),
        (
            "resources: {a: 1}\nnetwork_constraints: {default_loss: 2%}\n",
            "T.yml:2:37: error: loss is not emulated by the local testbed (only delay and rate)",
        ),
        (
            "resources: {a: 1}\nnetwork_constraints:\n  constraints:\n    - {src: a, dst: a}\n",
            "T.yml:4:8: error: `src` is not supported: the local testbed constrains the link "
            "between the controller and each host of `dst` (hosts talk to each other without "
            "delay)",
        ),
        ("resources: {a: 201}\n", "T.yml:1:1: error: 201 hosts: a local testbed holds at most 200"),
        (
            "resources: {1a: 1}\n",
            "T.yml:1:13: error: bad group name '1a': use letters, digits "
            "and _, starting with a letter",
        ),
        (
            "resources: {a: 1\n",
            "T.yml:2:1: error: invalid YAML: expected ',' or '}', but got '<stream end>'",
        ),
        ("", "T.yml: error: empty testbed description: `resources` is required"),
        (
            "network_constraints: {}\n",
            "T.yml:1:1: error: missing `resources` (group: number of hosts)",
        ),
    ],
)
def test_spec_error(text: str, expected: str, tmp_path: Path) -> None:
    assert _errors(text, tmp_path).splitlines()[0] == expected


# ------------------------------------------------------------------ proxy


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _round_trips(port: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for i in range(count):
        start = time.monotonic()
        writer.write(b"ping %d\n" % i)
        assert await reader.readline() == b"ping %d\n" % i
        times.append(time.monotonic() - start)
    writer.close()
    return times


def test_proxy_round_trip_costs_two_delays() -> None:
    async def scenario() -> list[float]:
        server, port = await _echo_server()
        async with server, open_delay_proxy(Address("127.0.0.1", port), 0.04) as proxy:
            return await _round_trips(proxy.port, 5)

    times = asyncio.run(scenario())
    assert min(times) >= 0.08
    assert statistics.median(times) < 0.08 + 0.03


def test_proxy_streams_megabytes_intact_and_in_order() -> None:
    payload = os.urandom(4 * 1024 * 1024)
    delay = 0.05

    async def scenario() -> tuple[bytes, float]:
        server, port = await _echo_server()
        async with server, open_delay_proxy(Address("127.0.0.1", port), delay) as proxy:
            start = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

            async def send() -> None:
                for i in range(0, len(payload), 10_000):  # many small writes
                    writer.write(payload[i : i + 10_000])
                    await writer.drain()
                writer.write_eof()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(send())
                received = await reader.read()  # until the echo server's EOF
            writer.close()
            return received, time.monotonic() - start

    received, elapsed = asyncio.run(scenario())
    assert len(received) == len(payload)
    assert received == payload
    # Streaming: the whole transfer costs about one round trip, not one delay per chunk
    # (4 MiB is 64+ chunks: serialising them on the delay would take several seconds).
    assert 2 * delay <= elapsed < 2 * delay + 1.0


def test_proxy_closes_the_client_when_the_server_refuses() -> None:
    async def scenario() -> bytes:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        async with open_delay_proxy(Address("127.0.0.1", closed_port), 0.01) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            # The proxy still serves the next connection.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            data += await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

    assert asyncio.run(scenario()) == b""


def test_proxy_command_line() -> None:
    async def scenario() -> list[float]:
        server, port = await _echo_server()
        async with server:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            listen = probe.getsockname()[1]
            probe.close()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "madeus.testbed.proxy",
                "--listen", f"127.0.0.1:{listen}", "--connect", f"127.0.0.1:{port}",
                "--delay", "0.03",
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for _ in range(200):  # the interpreter starts: wait for its port
                    try:
                        _, w = await asyncio.open_connection("127.0.0.1", listen)
                        w.close()
                        break
                    except OSError:
                        await asyncio.sleep(0.02)
                return await _round_trips(listen, 3)
            finally:
                proc.terminate()
                await proc.wait()

    times = asyncio.run(scenario())
    assert min(times) >= 0.06


# ------------------------------------------------------------------ environment checks


def test_up_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError) as info:
        up(load_spec(THREE_SITES), tmp_path / "tb")
    assert render_all(info.value.diagnostics) == (
        "madeus testbed: error: madeus testbed needs root (network namespaces, veth links, "
        "mounts): run it as root"
    )
    assert not (tmp_path / "tb").exists()


def test_up_names_a_missing_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = up_module.find_tool
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(up_module, "find_tool", lambda name: None if name == "sshd" else real(name))
    with pytest.raises(TestbedError) as info:
        up(load_spec(THREE_SITES), tmp_path / "tb")
    assert [d.message for d in info.value.diagnostics if d.code == "testbed-tool"] == [
        "`sshd` is not installed (Debian package openssh-server)"
    ]


def test_cli_reports_spec_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("resources:\n  control: 0\n", encoding="utf-8")
    assert main(["testbed", "up", str(bad), "-o", str(tmp_path / "tb")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"{bad}:2:12: error: the number of hosts of 'control' must be a whole number >= 1, "
        "not '0'\n  control: 0\n           ^\n"
    )
    assert not (tmp_path / "tb").exists()


def test_down_without_testbed_is_a_no_op(tmp_path: Path) -> None:
    assert down(tmp_path).found is False
    assert main(["testbed", "down", str(tmp_path)]) == 0


# ------------------------------------------------------------------ integration (root)

HAVE_TESTBED = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and all(find_tool(t) for t in ("ip", "sshd", "ssh", "ssh-keygen", "nsenter", "unshare"))
)
_needs_testbed = pytest.mark.skipif(not HAVE_TESTBED, reason="needs root, iproute2 and OpenSSH")


def integration(test: Callable[..., None]) -> Callable[..., None]:
    marked: Callable[..., None] = pytest.mark.integration(_needs_testbed(test))
    return marked


def ssh(state: State, host: str, *command: str, timeout: float = 30) -> str:
    proc = subprocess.run(
        ssh_argv(state, host, *command), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _leftovers(state: State, pids: list[int]) -> list[str]:
    """Everything of the testbed still on the machine (empty when `down` did its job)."""
    left: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {line}" for line in netns.splitlines() if f"mdtb-{state.id}-" in line]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [
        f"link {line.split()[1]}" for line in links.splitlines() if f"mdtb-{state.id}-" in line
    ]
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    left += [f"mount {line.split()[4]}" for line in mounts.splitlines() if state.dir in line]
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone
        left.append(f"process {pid}: {stat.split(')')[-1].split()[0]}")
    if Path(state.dir).exists():
        left.append(f"files {sorted(os.listdir(state.dir))}")
    return left


def _recorded_pids(state: State) -> list[int]:
    return [r.pid for r in state.resources if r.kind == "process" and r.pid is not None]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    directory = tmp_path_factory.mktemp("testbed") / "tb"
    state = up(load_spec(THREE_SITES), directory)
    yield state
    down(directory)  # a no-op when test_down_leaves_nothing ran


@integration
def test_up_writes_the_inventory(testbed: State) -> None:
    d = Path(testbed.dir)
    inventory = yaml.safe_load((d / "inventory.yml").read_text())
    assert list(inventory) == ["all"]
    all_vars = inventory["all"]["vars"]
    assert all_vars["madeus_sites"] == {
        "site1": ["control"],
        "site2": ["network"],
        "site3": ["compute"],
    }
    assert all_vars["madeus_network_constraints"] == {
        "default_delay": "25ms",
        "default_rate": "1gbit",
    }
    children = inventory["all"]["children"]
    assert list(children) == ["control", "network", "compute"]
    for h in testbed.hosts:
        assert children[h.group]["hosts"][h.name] == {
            "ansible_host": "127.0.0.1",
            "ansible_port": h.proxy_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(d / "id_ed25519"),
            "madeus_address": h.address,
        }
    known = (d / "known_hosts").read_text().splitlines()
    assert [line.split()[0] for line in known[::2]] == [
        f"[127.0.0.1]:{h.proxy_port}" for h in testbed.hosts
    ]


@integration
def test_up_refuses_a_directory_holding_a_testbed(testbed: State) -> None:
    with pytest.raises(TestbedError) as info:
        up(load_spec(THREE_SITES), testbed.dir)
    assert [d.message for d in info.value.diagnostics] == [
        f"{testbed.dir} already holds a testbed (id {testbed.id}, up): "
        f"run `madeus testbed down {testbed.dir}` first"
    ]


@integration
def test_each_host_has_its_own_hostname(testbed: State) -> None:
    names = [ssh(testbed, h.name, "hostname").strip() for h in testbed.hosts]
    assert names == [h.name for h in testbed.hosts]


@integration
def test_each_host_has_its_own_filesystem(testbed: State) -> None:
    marker = f"/etc/madeus-marker-{testbed.id}"
    a, b = testbed.hosts[0].name, testbed.hosts[1].name
    ssh(testbed, a, "echo", "mine", ">", marker)
    assert ssh(testbed, a, "cat", marker) == "mine\n"
    assert ssh(testbed, b, "test", "-e", marker, "&&", "echo", "yes", "||", "echo", "no") == "no\n"
    assert not Path(marker).exists()  # nor on the machine itself


@integration
def test_root_home_is_clean_and_python_is_the_machines(testbed: State) -> None:
    out = ssh(testbed, "control-1", "ls -A ~; echo ---; command -v python3; echo $PATH")
    home, rest = out.split("---\n")
    assert ".bashrc" not in home.split() and ".ssh" in home.split()
    python, path = rest.splitlines()
    assert python == str(Path(os.path.realpath(sys.executable)).parent / "python3")
    assert "/usr/bin" in path.split(":")


@integration
def test_round_trip_costs_two_delays(testbed: State) -> None:
    # An echo loop on the host: each line goes through the proxy and back (25 ms each way).
    argv = ssh_argv(testbed, "compute-1", "python3", "-u", "-c",
                    "'import sys\nfor l in sys.stdin: print(l, end=\"\")'")  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    times = []
    try:
        for i in range(6):
            start = time.monotonic()
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == f"{i}\n"
            times.append(time.monotonic() - start)
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert min(times) >= 0.05
    assert statistics.median(times[1:]) < 0.05 + 0.05


@integration
def test_hosts_reach_each_other_over_the_bridge(testbed: State) -> None:
    control = testbed.host("control-1")
    script = (
        "import socket, time; t = time.monotonic(); "
        f"s = socket.create_connection(({control.address!r}, 22), 5); "
        "print(s.recv(7).decode(), round(time.monotonic() - t, 3))"
    )
    banner, seconds = ssh(testbed, "compute-1", "python3", "-c", f'"{script}"').split()
    assert banner == "SSH-2.0"
    assert float(seconds) < 0.025  # direct, not through a delay proxy
    # and by name, through the hosts' /etc/hosts
    assert ssh(testbed, "network-1", "getent", "hosts", "control-1").split() == [
        control.address,
        "control-1",
    ]


@integration
def test_status_reports_every_host_alive(testbed: State) -> None:
    for h in status(testbed.dir):
        assert (h.sshd_alive, h.proxy_alive, h.ssh_ok, h.ssh_error) == (True, True, True, "")
        assert h.ssh_seconds is not None and h.ssh_seconds >= 0.05


@integration
def test_status_command(testbed: State, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testbed", "status", testbed.dir, "--no-ssh"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"testbed {testbed.id} (up) in {testbed.dir}")
    assert [line.split()[0] for line in lines[2:]] == ["control-1", "network-1", "compute-1"]
    assert all(line.split()[-3:] == ["up", "up", "-"] for line in lines[2:])


@integration
def test_link_down_cuts_a_host_off(testbed: State) -> None:
    compute = testbed.host("compute-1")
    probe = (
        "import socket\ntry:\n"
        f"    socket.create_connection(({compute.address!r}, 22), 1).close(); print('open')\n"
        "except OSError: print('cut')"
    )
    link_down(testbed.dir, "compute-1")
    try:
        assert ssh(testbed, "control-1", "python3", "-c", f'"{probe}"') == "cut\n"
    finally:
        link_up(testbed.dir, "compute-1")
    assert ssh(testbed, "control-1", "python3", "-c", f'"{probe}"') == "open\n"


def _banner(port: int, timeout: float) -> str:
    """The first bytes an SSH server sends through a proxy port ("" if none in time)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        try:
            return s.recv(7).decode()
        except TimeoutError:
            return ""


@integration
def test_cut_partitions_two_ends_and_heal_reconnects(testbed: State) -> None:
    """site3 (compute-1) cut from the controller: nothing comes back through compute-1's
    proxy, while control-1 (site1) still reaches compute-1; site3 cut from site1: control-1
    no longer reaches compute-1, the controller does. `heal` undoes each cut."""
    compute = testbed.host("compute-1")
    probe = (
        "import socket\ntry:\n"
        f"    socket.create_connection(({compute.address!r}, 22), 1).close(); print('open')\n"
        "except OSError: print('cut')"
    )
    assert compute.proxy_port is not None
    cut(testbed.dir, "site3", "controller")
    try:
        assert _banner(compute.proxy_port, 2.0) == ""
        assert ssh(testbed, "control-1", "python3", "-c", f'"{probe}"') == "open\n"
    finally:
        heal(testbed.dir, "site3", "controller")
    assert _banner(compute.proxy_port, 5.0) == "SSH-2.0"
    assert main(["testbed", "cut", testbed.dir, "site1", "site3"]) == 0
    try:
        assert ssh(testbed, "control-1", "python3", "-c", f'"{probe}"') == "cut\n"
        assert ssh(testbed, "compute-1", "hostname") == "compute-1\n"
    finally:
        assert main(["testbed", "heal", testbed.dir, "site1", "site3"]) == 0
    assert ssh(testbed, "control-1", "python3", "-c", f'"{probe}"') == "open\n"
    heal(testbed.dir, "site1", "site3")  # healing a pair that is not cut changes nothing
    with pytest.raises(TestbedError, match=r"no site 'site9'.*controller, site1, site2, site3"):
        cut(testbed.dir, "site9", "controller")


@integration
def test_down_leaves_nothing(testbed: State) -> None:
    # A daemon started on a host (not by the testbed) must go too: it lives in the namespace.
    ssh(testbed, "compute-1", "nohup", "sleep", "600", ">/dev/null", "2>&1", "&")
    pids = _recorded_pids(load_state(testbed.dir))
    assert len(pids) == 6  # 3 sshd + 3 proxies
    report = down(testbed.dir)
    assert report.found and report.processes >= 7
    assert _leftovers(testbed, pids) == []
    assert down(testbed.dir).found is False  # idempotent


@integration
def test_down_after_a_crash_halfway(tmp_path: Path) -> None:
    """`up` dies (no cleanup) after the sshds started, before any proxy: `down` cleans."""
    directory = tmp_path / "tb"
    script = textwrap.dedent(f"""\
        import os
        from madeus.testbed import load_spec, up
        import importlib
        up_module = importlib.import_module("madeus.testbed.up")
        up_module._Builder.start_proxy = lambda self, h: os._exit(3)
        up(load_spec({str(THREE_SITES)!r}), {str(directory)!r})
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    state = load_state(directory)
    assert state.status == "starting"
    pids = _recorded_pids(state)
    assert len(pids) == 3 and all(Path(f"/proc/{p}").exists() for p in pids)
    assert len(_leftovers(state, [])) > 3  # namespaces, links, mounts, files
    assert main(["testbed", "down", str(directory)]) == 0
    assert [x for x in _leftovers(state, pids) if "process" not in x] == []
    # The sshds were reparented to init when `up` died: at most a zombie until it reaps them.
    assert all(x.endswith(": Z") for x in _leftovers(state, pids))


@integration
def test_down_finds_a_process_whose_pid_was_not_recorded(tmp_path: Path) -> None:
    spec = load_spec_text("resources: {solo: 1}\n")
    state = up(spec, tmp_path / "tb")
    pids = _recorded_pids(state)
    # As if `up` had crashed between starting the proxy and recording its PID.
    path = Path(state.dir) / "state.json"
    data = json.loads(path.read_text())
    for r in data["resources"]:
        if r["kind"] == "process" and r["name"].startswith("proxy"):
            r["pid"] = None
    path.write_text(json.dumps(data))
    down(state.dir)
    assert _leftovers(state, pids) == []


@integration
def test_failed_up_cleans_what_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up_module, "SSHD_CONFIG", up_module.SSHD_CONFIG + "NoSuchOption yes\n")
    directory = tmp_path / "tb"
    with pytest.raises(TestbedError) as info:
        up(load_spec_text("resources: {solo: 1}\n"), directory)
    message = info.value.diagnostics[0].message
    assert message.startswith("solo-1: sshd does not answer on 10.")
    assert "Bad configuration option: NoSuchOption" in message
    assert not directory.exists()
    assert (
        f"mdtb-{up_module.testbed_id(directory.resolve())}"
        not in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    )
