"""Site agents over SSH on a real testbed: shipped, started on the chosen host of each site,
running their site's jobs on its hosts, a data value crossing sites, hostile and secret values,
and the files they leave on their hosts (0700/0600, no secret).

Two sites of two hosts (20 and 60 ms one way from this machine); `madeus deploy --agents` runs
as a subprocess, as an operator would. Needs root, iproute2 and OpenSSH.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_integration_testbed import HAVE_TESTBED, madeus, on_host

from madeus.testbed import State, down, load_spec_text, up

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_TESTBED, reason="needs root, iproute2 and OpenSSH"),
    pytest.mark.timeout(300),
]

TESTBED = """\
resources:
  a: 2
  b: 2
network_constraints:
  default_delay: 20ms
  constraints:
    - {dst: b, delay: 60ms}
sites:
  sa: [a]
  sb: [b]
"""

ASSEMBLY = textwrap.dedent(
    """\
    component Registry(port: int = 5000, token: secret = env("AGENT_TEST_TOKEN")) {
        places off*, on
        transition start: off -> on  shell "printf %s {token} | sha256sum > token.sum"  ~0.2s
        provide service registry: reg at on
        provide data url = "{host.address}:{port}" at on
    }
    component Client(note: str = "") {
        places a*, b, c
        transition install: a -> b  shell "printf '%s' {note} > note.txt"  ~0.2s
        transition register: b -> c  shell "printf '%s' {url} > url.txt; echo registered"  ~0.2s
        use service registry: reg for register
        use data url for register
    }
    assembly agents_tb {
        registry = Registry on a-1
        for h in hosts of b {
            client[h] = Client(note = env("AGENT_TEST_NOTE")) on h
            connect client[h].registry -> registry.registry
            connect client[h].url -> registry.url
        }
    }
    """
)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    directory = tmp_path_factory.mktemp("agents") / "tb"
    state = up(load_spec_text(TESTBED, "agents-testbed.yml"), directory)
    try:
        yield state
    finally:
        down(directory)


def test_sites_run_their_part_through_agents(testbed: State, tmp_path: Path) -> None:
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    note = f"$(touch {marker})'\"\n; touch {marker}"
    token = f"SECRET-{uuid.uuid4().hex}"
    inventory = tmp_path / "inventory.yml"
    # The site sa's agent on its second host, as an operator would choose it.
    text = Path(testbed.dir, "inventory.yml").read_text()
    inventory.write_text(text.replace("a-2:\n", "a-2:\n          madeus_agent: true\n", 1))
    assert "madeus_agent: true" in inventory.read_text()
    (tmp_path / "known_hosts").write_text(Path(testbed.dir, "known_hosts").read_text())
    mad = tmp_path / "agents.mad"
    mad.write_text(ASSEMBLY)
    env = {**os.environ, "AGENT_TEST_TOKEN": token, "AGENT_TEST_NOTE": note}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())",
         "deploy", str(mad), "-i", str(inventory), "--agents", "--trace", "trace.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deployed agents_tb: 5/5 jobs ok" in done.stdout

    trace = json.loads((tmp_path / "trace.json").read_text())
    agents = {a["site"]: (a["host"], a["instances"]) for a in trace["agents"]}
    assert agents == {
        "sa": ("a-2", ["registry"]),
        "sb": ("b-1", ["client[b-1]", "client[b-2]"]),
    }
    (run_dir,) = (tmp_path / ".madeus" / "runs").iterdir()
    madeus("trace", "check", "trace.json", "--plan", str(run_dir / "plan.json"), cwd=tmp_path)

    # The data value crossed from site sa to site sb, hostile values arrived as they are, and
    # the secret reached its command (its hash is there) without being written anywhere.
    address = testbed.host("a-1").address
    for host in ("b-1", "b-2"):
        assert on_host(testbed, host, "cat url.txt") == f"{address}:5000"
        assert on_host(testbed, host, "cat note.txt") == note
        assert on_host(testbed, host, f"ls {marker} 2>/dev/null || echo absent") == "absent\n"
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert on_host(testbed, "a-1", "cat token.sum").split()[0] == digest

    # What agents leave on their hosts: private directories and files, no secret.
    for host in ("a-2", "b-1"):
        modes = on_host(
            testbed,
            host,
            "cd && stat -c '%a %n' .madeus/agent .madeus/agent/runs .madeus/agent/runs/* "
            ".cache/madeus .cache/madeus/* .madeus/agent/runs/*/*",
        ).split("\n")
        dirs = [m for m in modes if m and not m.split()[1].endswith((".pyz", ".out", ".err"))]
        files = [m for m in modes if m.endswith((".pyz", ".out", ".err", "known_hosts"))]
        assert files and all(m.startswith("600 ") for m in files), modes
        assert all(m.startswith(("700 ", "600 ")) for m in dirs), modes
        found = on_host(testbed, host, f"grep -rl {token} .madeus .cache/madeus || echo none")
        assert found == "none\n"
    # Both clients' logs are on their site's agent host, not on this machine.
    logs = on_host(testbed, "b-1", "cat .madeus/agent/runs/*/client*register*.out")
    assert logs == "registered\nregistered\n"
    assert not list(run_dir.glob("client*"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


def test_a_rehearsal_runs_through_agents(
    testbed: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--simulate=remote`: the sleeps run on the sites' hosts, started by their agents."""
    monkeypatch.setenv("AGENT_TEST_TOKEN", "x")
    monkeypatch.setenv("AGENT_TEST_NOTE", "y")
    mad = tmp_path / "agents.mad"
    mad.write_text(ASSEMBLY)
    inventory = Path(testbed.dir, "inventory.yml")
    on_host(testbed, "b-2", "rm -f url.txt")
    madeus("deploy", str(mad), "-i", str(inventory), "--agents", "--simulate=remote",
           "--time-scale", "0.5", "--trace", "trace.json", cwd=tmp_path)  # fmt: skip
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert {a["site"] for a in trace["agents"]} == {"sa", "sb"}
    assert len(trace["events"]) == 5
    (run_dir,) = (tmp_path / ".madeus" / "runs").iterdir()
    madeus("trace", "check", "trace.json", "--plan", str(run_dir / "plan.json"), cwd=tmp_path)
    # A rehearsal runs `sleep`, not the actions: the client's file is not written again.
    assert on_host(testbed, "b-2", "ls url.txt 2>/dev/null || echo absent") == "absent\n"


def test_a_resumed_run_hands_agents_the_values_of_record(
    testbed: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stops after the registry (another site) provided its address; the resume skips
    the registry, and the client that had not run yet gets the address from the journal."""
    monkeypatch.setenv("AGENT_TEST_TOKEN", "x")
    monkeypatch.setenv("AGENT_TEST_NOTE", "y")
    mad = tmp_path / "agents.mad"
    mad.write_text(ASSEMBLY)
    inventory = str(Path(testbed.dir, "inventory.yml"))
    on_host(testbed, "b-2", "rm -f url.txt")
    inject = ("--inject-failure", "client[[]b-2].register")  # `[` starts a pattern's class
    failed = madeus("deploy", str(mad), "-i", inventory, "--agents", *inject, cwd=tmp_path,
                    check=False)  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # The other client's register, cancelled when the run stopped, runs again.
    done = madeus("deploy", str(mad), "-i", inventory, "--agents", "--resume", "--rerun",
                  "cancelled", "--trace", "trace.json", cwd=tmp_path)  # fmt: skip
    status = {(e["id"], e["host"]): e["status"] for e in json.loads(
        (tmp_path / "trace.json").read_text())["events"]}  # fmt: skip
    assert status[("registry.start", "a-1")] == "skipped", done.stdout
    assert status[("client[b-2].register", "b-2")] == "ok"
    address = testbed.host("a-1").address
    assert on_host(testbed, "b-2", "cat url.txt") == f"{address}:5000"


FAILING = textwrap.dedent(
    """\
    component Leaky(token: secret = env("AGENT_TEST_TOKEN")) {
        places a*, b
        transition run: a -> b  shell "echo token is {token} >&2; exit 3"  ~0.1s
    }
    assembly leaky {
        leaky = Leaky on b-2
    }
    """
)


def test_a_failure_on_a_site_is_reported_redacted(testbed: State, tmp_path: Path) -> None:
    """A job an agent runs fails printing a secret: the controller reports the failure (site,
    host, exit status, stderr tail) with the secret redacted, and neither the agent's host nor
    this machine keeps it in any file."""
    token = f"SECRET-{uuid.uuid4().hex}"
    mad = tmp_path / "leaky.mad"
    mad.write_text(FAILING)
    inventory = Path(testbed.dir, "inventory.yml")
    env = {**os.environ, "AGENT_TEST_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from madeus.cli import main; sys.exit(main())",
         "deploy", str(mad), "-i", str(inventory), "--agents"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'transition "leaky.run" failed on host "b-2" (exit status 3)' in done.stderr
    assert "token is ******" in done.stderr
    assert token not in done.stdout + done.stderr
    # The site's only host of the run is its agent's: the log is there.
    assert on_host(testbed, "b-2", "cat .madeus/agent/runs/*/leaky.run@b-2.err") == (
        "token is ******\n"
    )
    found = on_host(testbed, "b-2", f"grep -rl {token} .madeus .cache/madeus || echo none")
    assert found == "none\n"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
