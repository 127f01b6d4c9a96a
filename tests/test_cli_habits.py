"""Ansible's command-line habits on deploy, reconfigure, destroy and plan: --limit, --check
(with --diff), -f, -q, -v, -u, --private-key, -b, and the vault password asked once.

Real runs throughout: local shell actions, real ansible-playbook runs, a loopback sshd, sudo.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from madeus.cli import main
from madeus.trace import load

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assemblies" / "demo" / "demo.mad"
OPENSTACK = ROOT / "assemblies" / "openstack" / "openstack.mad"
INVENTORY = ROOT / "assemblies" / "openstack" / "inventory.yml"
UPDATE = ROOT / "assemblies" / "openstack" / "reconfigure" / "update-mariadb.py"
REHEARSE = ("-i", str(INVENTORY), "--simulate", "--time-scale", "0")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --- --limit ---------------------------------------------------------------------------------


def test_limit_deploys_what_its_hosts_need_and_says_what_it_leaves_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        ["deploy", str(OPENSTACK), *REHEARSE, "-l", "compute-1", "--trace", "t.json"], capsys
    )
    assert code == 0, err
    # compute-1 runs Neutron and Open vSwitch (Kolla's groups); Neutron needs MariaDB and
    # Keystone, which need HAProxy, common and the facts: those run where they are placed.
    # Nothing needs Glance, Nova, Memcached or RabbitMQ.
    assert (
        "note: --limit compute-1: left out memcached, rabbitmq, glance, nova (not needed there); "
        "neutron not on control-1, network-1; openvswitch not on network-1\n"
    ) in err
    trace = load("t.json")
    placed = {(e.id.split(".")[0], e.host) for e in trace.events}
    assert {h for i, h in placed if i in ("neutron", "openvswitch")} == {"compute-1"}
    assert {h for i, h in placed if i == "mariadb"} == {"control-1"}
    assert {i for i, _ in placed} == {
        "facts", "common", "haproxy", "mariadb", "keystone", "neutron", "openvswitch"
    }  # fmt: skip
    assert "simulated openstack: 23/23 jobs ok" in out
    # The journal keeps what the limited run did: resuming without the limit does the rest.
    code, out, err = run(["deploy", str(OPENSTACK), *REHEARSE, "--resume", "-q"], capsys)
    assert code == 0, err
    assert "simulated openstack: 46/46 jobs ok (23 skipped: done in an earlier run)" in out


def test_limit_takes_ansible_patterns_and_plan_takes_it_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        ["plan", str(OPENSTACK), "-i", str(INVENTORY), "-l", "network:&openvswitch", "--format",
         "json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    hosts = {t["id"].split(".")[0]: t["hosts"] for t in plan["transitions"]}
    assert hosts["openvswitch"] == ["network-1"]
    assert "nova" not in hosts
    code, _, err = run(["plan", str(OPENSTACK), "-i", str(INVENTORY), "-l", "nowhere*"], capsys)
    assert code == 1
    assert "error: --limit nowhere*: the pattern matches no host" in err


def test_limit_on_a_program_refuses_to_change_an_instance_beyond_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(
        ["reconfigure", str(OPENSTACK), str(UPDATE), *REHEARSE, "--assume-deployed", "-l",
         "network-1"],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert (
        "push('mariadb', 'stop') changes \"mariadb\", which also runs on control-1, outside "
        "--limit network-1 (an instance changes on all its hosts at once)"
    ) in err
    assert not Path(".madeus/runs").exists()  # refused before anything ran


def test_limited_destroy_leaves_the_rest_and_is_verified(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Only instances on control-1 alone: MariaDB among them, whose users (Neutron on three
    # hosts) stay: MariaDB could never leave, and the verifier says so before anything runs.
    code, _, err = run(
        ["destroy", str(OPENSTACK), *REHEARSE, "--assume-deployed", "-l", "control-1"], capsys
    )
    assert code == 1
    assert "note: --limit control-1: left as they are: facts, common, haproxy, neutron" in err
    assert "refusing to run a program that does not verify" in err
    assert not Path(".madeus/runs").exists()
    code, out, err = run(
        ["destroy", str(OPENSTACK), *REHEARSE, "--assume-deployed", "-l", "all"], capsys
    )
    assert code == 0, err
    assert out.startswith("[") and "destroyed (simulated) openstack: " in out


# --- --check ---------------------------------------------------------------------------------


def test_check_prints_shell_actions_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "$(touch pwned) `touch pwned2` 'q\" \nnext"
    extra = json.dumps({"title": hostile})
    code, out, err = run(["deploy", str(DEMO), "--check", "-e", extra], capsys)
    assert code == 0, err
    assert "] ok    content.prepare @ localhost (" in out
    assert "    would run on localhost: mkdir -p {out}/pages\n      where out=demo-site\n" in out
    # Values are shown shell-quoted: what the shell would get as one word.
    shown = out.replace("\n    ", "\n")  # without the progress display's indentation
    assert f"where title={shlex.quote(hostile)}, out=demo-site\n" in shown
    assert "checked demo: 7/7 jobs would run (nothing changed, nothing recorded)\n" in out
    assert "makespan" not in out  # a rehearsal's times say nothing of a real run
    assert not (tmp_path / "demo-site").exists()
    assert not list(tmp_path.glob("pwned*"))
    assert not (tmp_path / ".madeus" / "state").exists()  # no journal
    # The run's logs say what would have run.
    (log,) = (tmp_path / ".madeus" / "runs").glob("*/content.prepare@localhost.out")
    assert log.read_text().startswith("would run on localhost: mkdir -p {out}/pages")
    # key=value with an unbalanced quote: Ansible cannot split it, and madeus says so.
    code, _, err = run(["deploy", str(DEMO), "--check", "-e", f"title={hostile}"], capsys)
    assert code == 1
    assert err.startswith("madeus: error: extra variables (-e): failed at splitting arguments")


TASKS = """\
- ansible.builtin.copy:
    content: "hello {{ who }} {{ flavour }}\\n"
    dest: "{{ dest }}"
"""
ANSIBLE_ASSEMBLY = """
component Files(dest: str, who: str = "world") {
    places a*, b
    transition write: a -> b  ansible tasks "write.yml"
}
assembly files { f = Files(dest = env("MADEUS_TEST_DEST")) }
"""


def test_check_runs_ansible_in_check_mode_with_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "write.yml").write_text(TASKS)
    (tmp_path / "files.mad").write_text(ANSIBLE_ASSEMBLY)
    dest = tmp_path / "out.txt"
    monkeypatch.setenv("MADEUS_TEST_DEST", str(dest))
    # `who` overrides a parameter; `flavour` is none: it reaches Ansible as an extra variable.
    extra = ["-e", "who=ops", "-e", '{"flavour": "vanilla"}']
    code, out, err = run(["deploy", "files.mad", "--check", "--diff", *extra], capsys)
    assert code == 0, err
    assert not dest.exists()  # check mode: Ansible changed nothing
    assert "    would change: ansible.builtin.copy\n" in out
    assert "+hello ops vanilla\n" in out  # the diff Ansible computed
    assert "checked files: 1/1 jobs would run" in out
    # For real, the same run writes the file; the diff shows again, now as a change.
    code, out, err = run(["deploy", "files.mad", "--diff", *extra], capsys)
    assert code == 0, err
    assert dest.read_text() == "hello ops vanilla\n"
    (log,) = [p for p in Path(".madeus/runs").glob("*/f.write@localhost.out") if "+hello" in
              p.read_text() and "changed:" in p.read_text()]  # fmt: skip
    assert log.exists()


def test_check_does_not_go_with_simulate_or_resume(capsys: pytest.CaptureFixture[str]) -> None:
    for extra, other in ((["--simulate"], "--simulate"), (["--resume"], "--resume")):
        code, _, err = run(["deploy", str(DEMO), "--check", *extra], capsys)
        assert code == 2
        assert f"madeus deploy: error: --check does not go with {other}" in err


def test_check_on_destroy_records_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Path("one.mad").write_text(
        "component S { places off*, on\n"
        '  transition start: off -> on  shell "touch started"\n'
        '  transition stop: on -> off  shell "rm started"  behaviour uninstall }\n'
        "assembly one { s = S }\n"
    )
    assert run(["deploy", "one.mad"], capsys)[0] == 0
    journal = {p: p.read_bytes() for p in Path(".madeus/state").rglob("*") if p.is_file()}
    assert journal
    code, out, err = run(["destroy", "one.mad", "--check"], capsys)
    assert code == 0, err
    assert "would run on localhost: rm started" in out
    assert "checked destroy of one: 1/1 jobs would run (nothing changed, nothing recorded)" in out
    assert Path("started").exists()
    after = {p: p.read_bytes() for p in Path(".madeus/state").rglob("*") if p.is_file()}
    assert after == journal


# --- -f, -q, -v ----------------------------------------------------------------------------


def test_forks_is_max_parallel_for_deploy_and_reconfigure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(["deploy", str(DEMO), "-f", "1", "--trace", "d.json"], capsys)
    assert code == 0, err
    trace = load("d.json")
    assert trace.limits is not None and trace.limits.max_parallel == 1
    spans = sorted((e.start, e.end) for e in trace.events)
    assert all(a_end <= b_start + 1e-6 for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    code, _, err = run(
        ["reconfigure", str(OPENSTACK), str(UPDATE), "--simulate", "--time-scale", "0.001",
         "--assume-deployed", "-f", "1", "--trace", "r.json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    trace = load("r.json")
    assert trace.limits is not None and trace.limits.max_parallel == 1
    spans = sorted((e.start, e.end) for e in trace.events)
    assert len(spans) > 10
    assert all(a_end <= b_start + 1e-6 for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_quiet_shows_failures_and_the_summary_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["deploy", str(DEMO), "-q", "--simulate", "--time-scale", "0"], capsys)
    assert code == 0
    assert out.startswith("simulated demo: 7/7 jobs ok\n")
    code, out, _ = run(
        ["deploy", str(DEMO), "-q", "--simulate", "--time-scale", "0", "--inject-failure",
         "theme.css"],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert out.splitlines()[0].startswith("[") and "failed theme.css @ localhost" in out
    assert " start " not in out and " ok " not in out


def test_verbose_says_what_madeus_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["deploy", str(OPENSTACK), *REHEARSE, "-v", "-q"], capsys)
    assert code == 0
    assert "madeus: INFO: madeus.inventory: inventory " in err
    assert "3 hosts" in err
    assert "openstack: 31 transitions, 46 jobs, predicted makespan 148.800 s" in err
    assert "the simulate backend runs 46 jobs" in err


# --- -u, --private-key, -b -------------------------------------------------------------------

SHELL_AND_ANSIBLE = """
component Who(out: str) {
    places a*, b, c
    transition shell: a -> b  shell "id -un; echo home=$HOME"
    transition play: b -> c  ansible tasks "who.yml"
}
assembly who { w = Who(out = env("MADEUS_TEST_OUT")) on nodes }
"""
WHO_TASKS = """\
- ansible.builtin.command: id -un
  register: who
- ansible.builtin.copy: {content: "{{ who.stdout }}\\n", dest: "{{ out }}"}
  delegate_to: localhost
  become: false
"""


def test_user_and_private_key_fill_what_the_inventory_leaves_unsaid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sshd_helpers import running_sshd

    monkeypatch.setenv("MADEUS_TEST_OUT", str(tmp_path / "ansible-user"))
    (tmp_path / "who.mad").write_text(SHELL_AND_ANSIBLE)
    (tmp_path / "who.yml").write_text(WHO_TASKS)
    with running_sshd(tmp_path / "ssh", hosts=("node-1",)) as sshd:
        # Address and port only: no user, no key.
        inventory = tmp_path / "ssh" / "sshd" / "inventory.yml"
        inventory.write_text(
            "nodes:\n  hosts:\n    node-1: "
            f"{{ansible_host: 127.0.0.1, ansible_port: {sshd.port}}}\n"
        )
        base = ["deploy", "who.mad", "-i", str(inventory)]
        code, _, err = run(base, capsys)  # the SSH defaults: not this server's key
        assert code == 1
        assert "cannot connect to node-1" in err
        code, _, err = run([*base, "-u", "root", "--private-key", str(sshd.client_key)], capsys)
    assert code == 0, err
    (run_dir,) = sorted(Path(".madeus/runs").iterdir())[-1:]
    assert (run_dir / "w.shell@node-1.out").read_text().startswith("root\n")
    assert (tmp_path / "ansible-user").read_text() == "root\n"  # ansible-playbook got them too


def test_become_runs_actions_through_sudo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MADEUS_TEST_OUT", str(tmp_path / "ansible-user"))
    (tmp_path / "who.mad").write_text(SHELL_AND_ANSIBLE)
    (tmp_path / "who.yml").write_text(WHO_TASKS)
    tmp_path.chmod(0o755)  # nobody runs its command here
    inventory = tmp_path / "hosts.yml"
    # The system's Python: nobody may not run the virtualenv's (under root's home).
    inventory.write_text(
        "nodes:\n  hosts:\n    here:\n      ansible_connection: local\n"
        "      ansible_become_user: nobody\n      ansible_python_interpreter: /usr/bin/python3\n"
    )
    base = ["deploy", "who.mad", "-i", str(inventory)]
    code, _, err = run(base, capsys)
    assert code == 0, err
    runs = Path(".madeus/runs")
    assert (sorted(runs.iterdir())[-1] / "w.shell@here.out").read_text().startswith("root\n")
    code, _, err = run([*base, "-b", "--redeploy"], capsys)
    assert code == 0, err
    said = (sorted(runs.iterdir())[-1] / "w.shell@here.out").read_text()
    assert said.startswith("nobody\n")  # sudo -u nobody, with nobody's home (-H)
    expected_home = subprocess.run(
        ["getent", "passwd", "nobody"], capture_output=True, text=True, check=True
    ).stdout.split(":")[5]
    assert f"home={expected_home}\n" in said
    assert (tmp_path / "ansible-user").read_text() == "nobody\n"


def test_become_with_another_method_is_refused_for_shell_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "one.mad").write_text(
        'component S { places a*, b  transition t: a -> b  shell "true" }\n'
        "assembly one { s = S on nodes }\n"
    )
    (tmp_path / "hosts.yml").write_text(
        "nodes:\n  hosts:\n    here: {ansible_connection: local, ansible_become: true, "
        "ansible_become_method: su}\n"
    )
    code, _, err = run(["deploy", "one.mad", "-i", "hosts.yml"], capsys)
    assert code == 1
    assert 'host "here": become method su is not supported for shell actions (sudo is)' in err


# --- the vault password, asked once ----------------------------------------------------------


def test_ask_vault_pass_asks_once_and_no_command_line_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-J`: madeus asks once; the inventory reader and the Ansible worker get the answer on
    standard input (they could not read the vaulted inventory otherwise)."""
    import getpass
    import uuid

    from hostile_values import process_listings

    password = f"vault-{uuid.uuid4().hex}"
    secret_file = tmp_path / "pw"
    secret_file.write_text(password)
    vaulted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
         "--vault-password-file", str(secret_file), "from-the-vault"],
        capture_output=True, text=True, check=True,
    ).stdout.replace("\n", "\n      ")  # fmt: skip
    secret_file.unlink()
    (tmp_path / "hosts.yml").write_text(
        "nodes:\n  hosts:\n    here:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n      word: {vaulted}\n"
    )
    (tmp_path / "say.yml").write_text(
        "- ansible.builtin.command: sleep 1.5\n"
        "- ansible.builtin.copy: {content: '{{ word }}', dest: '{{ out }}'}\n"
    )
    (tmp_path / "say.mad").write_text(
        'component Say(out: str) { places a*, b  transition t: a -> b  ansible tasks "say.yml" }\n'
        f'assembly say {{ s = Say(out = "{tmp_path / "said"}") on nodes }}\n'
    )
    asked: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": asked.append(prompt) or password)
    with process_listings() as seen:
        code, _, err = run(["deploy", "say.mad", "-i", "hosts.yml", "-J"], capsys)
    assert code == 0, err
    assert asked == ["Vault password: "]
    assert (tmp_path / "said").read_text() == "from-the-vault"
    assert any("madeus.ansible_worker" in s for s in seen)
    assert [s for s in seen if password in s] == []
