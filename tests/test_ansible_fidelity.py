"""Ansible actions behave as under `ansible-playbook`: the same plays (tests/data/
ansible_fidelity: run_once, group_by, serial, handlers, delegate_to, facts, `when` on typed
values) on the same three hosts, run by `madeus deploy` (one play per transition) and by
`ansible-playbook site.yml` (the plays one after another), leave the same lines in their log,
in the same order where Ansible fixes one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "ansible_fidelity"
VALUES = {"flag": False, "ratio": "10.10", "mode": "0755", "count": 3}
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each side's log lines, in the order they were written."""
    root = tmp_path_factory.mktemp("fidelity")
    found: dict[str, list[str]] = {}
    madeus_out, ansible_out = root / "madeus", root / "ansible"
    madeus_out.mkdir()
    ansible_out.mkdir()
    deploy = subprocess.run(
        [BIN / "madeus", "deploy", DATA / "fidelity.mad", "-i", DATA / "inventory.yml"],
        cwd=root,
        env={**_env(), "FIDELITY_OUT": str(madeus_out)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    reference = subprocess.run(
        [
            BIN / "ansible-playbook",
            "-i",
            DATA / "inventory.yml",
            DATA / "site.yml",
            "-e",
            json.dumps({**VALUES, "out": str(ansible_out)}),
        ],
        cwd=DATA,
        env={**_env(), "ANSIBLE_ROLES_PATH": str(DATA / "roles")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stdout + reference.stderr
    found["madeus"] = (madeus_out / "log").read_text().splitlines()
    found["ansible"] = (ansible_out / "log").read_text().splitlines()
    found["plays"] = sorted(p.name for p in root.glob(".madeus/runs/*/*.play.yml"))
    (trace,) = root.glob(".madeus/runs/*/trace.json")
    found["trace"] = [trace.read_text()]
    return found


def test_the_same_tasks_ran_as_often_with_the_same_values(logs: dict[str, list[str]]) -> None:
    assert sorted(logs["madeus"]) == sorted(logs["ansible"])
    madeus = logs["madeus"]
    assert [line for line in madeus if line.startswith("once ")] == ["once h1 of 3"]
    assert [line for line in madeus if line.startswith("once-delegated")] == ["once-delegated h1"]
    assert sorted(line for line in madeus if line.startswith("gathered")) == [
        "gathered h1",
        "gathered h2",
        "gathered h3",
    ]


def test_typed_values_and_facts_reach_later_plays(logs: dict[str, list[str]]) -> None:
    madeus = logs["madeus"]
    assert "typed h2 10.10 str 0755 str 4 int bool" in madeus
    assert "flag false h1" in madeus
    assert not any(line.startswith("flag true") for line in madeus)
    assert "kept h3 h3-Linux plain-h3 h1-Linux Linux" in madeus
    assert "used h2 ['h1'] ['h1', 'h2']" in madeus
    assert not any(line.startswith("used h3") for line in madeus)


def test_serial_batches_and_handlers_keep_their_order(logs: dict[str, list[str]]) -> None:
    for side in ("madeus", "ansible"):
        lines = logs[side]
        rolled = [line for line in lines if line.startswith("roll-")]
        assert rolled == [
            "roll-start h1 ['h1']",
            "roll-end h1",
            "roll-start h2 ['h2']",
            "roll-end h2",
            "roll-start h3 ['h3']",
            "roll-end h3",
        ], side
        for host in ("h1", "h2", "h3"):
            handled = [
                line.split()[0]
                for line in lines
                if line.split()[0] in ("notify", "after", "handler") and line.endswith(host)
            ]
            assert handled == ["notify", "after", "handler"], (side, host)


def test_one_play_per_transition(logs: dict[str, list[str]]) -> None:
    """Six transitions have generated plays: one each, over the three hosts."""
    transitions = ("delegate", "gather", "group", "handle", "once", "typed")
    assert logs["plays"] == [f"node.{t}@h1.play.yml" for t in transitions]


def test_the_trace_shows_when_each_serial_batch_ran(logs: dict[str, list[str]]) -> None:
    """`serial: 1`: the trace's events of the transition follow the batches, host after host;
    the other transitions' hosts start and end together."""
    events = json.loads(logs["trace"][0])["events"]
    assert len(events) == 24
    roll = {e["host"]: e for e in events if e["id"] == "node.roll"}
    assert roll["h1"]["end"] <= roll["h2"]["start"] < roll["h2"]["end"] <= roll["h3"]["start"]
    once = [e for e in events if e["id"] == "node.once"]
    for times in ([e["start"] for e in once], [e["end"] for e in once]):
        assert max(times) - min(times) < 0.1


def _deploy(root: Path, mad: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (root / "three.yml").write_text((DATA / "inventory.yml").read_text())
    (root / "job.mad").write_text(mad)
    return subprocess.run(
        [BIN / "madeus", "deploy", "job.mad", "-i", "three.yml", *extra],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_retry_runs_the_play_again_on_the_failed_host_alone(tmp_path: Path) -> None:
    """h2 fails its first attempt; the retry is a play of its own on h2."""
    (tmp_path / "flaky.yml").write_text(
        '- ansible.builtin.shell: echo "{{ inventory_hostname }} {{ ansible_play_hosts | length }}"'
        " >> {{ out }}/log\n"
        "- ansible.builtin.stat: {path: '{{ out }}/tried'}\n"
        "  register: tried\n"
        "- ansible.builtin.file: {path: '{{ out }}/tried', state: touch}\n"
        "  when: inventory_hostname == 'h2'\n"
        "- ansible.builtin.fail: {msg: first attempt}\n"
        "  when: inventory_hostname == 'h2' and not tried.stat.exists\n"
    )
    done = _deploy(
        tmp_path,
        f'component F(out: str = "{tmp_path}") {{ places a*, b\n'
        '  transition go: a -> b  ansible tasks "flaky.yml"  retries 1 }\n'
        "assembly f { f = F on all }\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted((tmp_path / "log").read_text().splitlines()) == ["h1 3", "h2 1", "h2 3", "h3 3"]


def test_a_timeout_stops_the_play_on_every_host(tmp_path: Path) -> None:
    marker = f"{os.getpid()}{int(time.time() * 1000) % 10**6:06d}"
    (tmp_path / "slow.yml").write_text(f"- ansible.builtin.command: sleep 300.{marker}\n")
    begin = time.monotonic()
    done = _deploy(
        tmp_path,
        "component S { places a*, b\n"
        '  transition go: a -> b  ansible tasks "slow.yml"  timeout 3s }\n'
        "assembly s { s = S on all }\n",
    )
    assert done.returncode == 1
    assert "timed out after 3 s" in done.stderr, done.stdout + done.stderr
    assert time.monotonic() - begin < 60
    left = subprocess.run(["pgrep", "-f", f"sleep 300.{marker}"], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_limit_splits_a_transition_into_plays_as_serial_would(tmp_path: Path) -> None:
    """`--max-parallel 2` on three hosts: a play over the two let in, then one over the third."""
    (tmp_path / "once.yml").write_text(
        "- ansible.builtin.shell: echo \"{{ ansible_play_hosts | sort | join(',') }}\""
        " >> {{ out }}/log\n"
        "  run_once: true\n"
    )
    done = _deploy(
        tmp_path,
        f'component O(out: str = "{tmp_path}") {{ places a*, b\n'
        '  transition go: a -> b  ansible tasks "once.yml" }\n'
        "assembly o { o = O on all }\n",
        "--max-parallel",
        "2",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "log").read_text().splitlines() == ["h1,h2", "h3"]


def test_destroy_gives_ansible_the_same_typed_values(tmp_path: Path) -> None:
    """Reconfigurations (here `destroy`) run Ansible actions with values typed as declared,
    as deployments do."""
    (tmp_path / "say.yml").write_text(
        '- ansible.builtin.shell: echo "{{ n | type_debug }} {{ on | type_debug }}"'
        " >> {{ out }}/log\n"
        "  run_once: true\n"
    )
    mad = (
        f'component T(out: str = "{tmp_path}", n: int = 3, on: bool = false) {{\n'
        "  places a*, b\n"
        '  transition up: a -> b  ansible tasks "say.yml"\n'
        '  transition down: b -> a  ansible tasks "say.yml"  behaviour uninstall }\n'
        "assembly t { t = T on all }\n"
    )
    assert _deploy(tmp_path, mad).returncode == 0
    destroyed = subprocess.run(
        [BIN / "madeus", "destroy", "job.mad", "-i", "three.yml"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines[0] == "int bool"
    assert set(lines[1:]) == {"int bool"}


SERIALS = (7, "29%", "33%", "50%", "100%", "1%")


def test_serial_cuts_hosts_in_the_batches_ansible_makes(tmp_path: Path) -> None:
    """`serial N` and `serial N%` on an instance cut its hosts as `serial` cuts a play's hosts
    under ansible-playbook (on 100 hosts, `29%` is 28 hosts a batch: Ansible computes in
    floats, and 0.29 * 100 is 28.999...)."""
    from madeus.model import Serial

    hosts = tuple(f"h{k}" for k in range(1, 101))
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n" + "".join(f"    {h}: {{ansible_connection: local}}\n" for h in hosts)
    )
    plays = [
        {
            "hosts": "all",
            "gather_facts": False,
            "serial": serial,
            "tasks": [
                {
                    "name": f"batch {serial}",
                    "debug": {"msg": "{{ ansible_play_batch | join(',') }}"},
                    "run_once": True,
                }
            ],
        }
        for serial in SERIALS
    ]
    (tmp_path / "serial.yml").write_text(json.dumps(plays))
    run = subprocess.run(
        [BIN / "ansible-playbook", "-i", "inventory.yml", "serial.yml"],
        cwd=tmp_path,
        env={**_env(), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The default output: `TASK [batch 3] ***` then `ok: [h1] => {"msg": "h1,h2,h3"}`.
    ansible: dict[str, list[tuple[str, ...]]] = {}
    task = ""
    for line in run.stdout.splitlines():
        heading = re.match(r"TASK \[(.*)\]", line)
        if heading is not None:
            task = heading.group(1)
        batch = re.search(r'"msg": "([^"]*)"', line)
        if batch is not None:
            ansible.setdefault(task, []).append(tuple(batch.group(1).split(",")))
    ours = {f"batch {s}": list(Serial.of(s).batches(hosts)) for s in SERIALS}
    assert ours == ansible
    assert len(ansible["batch 29%"][0]) == 28  # what the docstring says
    assert len(ansible["batch 1%"]) == 100
