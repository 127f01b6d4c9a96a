"""The SSH backend against a real OpenSSH server on loopback (tests/sshd_helpers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hostile_values import (
    CONTEXTS,
    DATA_PORT_FILES,
    IN_SHELL,
    MEGABYTE,
    data_port_assembly,
    expected_output,
    hostile,
)
from sshd_helpers import Sshd, closed_port, running_sshd, sshd_available

from madeus.backends.base import Job, Outcome
from madeus.backends.ssh import SshBackend
from madeus.inventory import Host, inventory_from_dict
from madeus.model import ShellAction, UploadAction

pytestmark = pytest.mark.skipif(not sshd_available(), reason="needs root and /usr/sbin/sshd")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("ssh"), hosts=("node-1", "node-2")) as server:
        yield server


def make_job(sshd: Sshd, tmp_path: Path, command: str, *, host: str = "node-1", **kw: Any) -> Job:
    inventory = sshd.inventory()
    return Job(
        id="app.step",
        instance="app",
        transition="step",
        behaviour="deploy",
        action=ShellAction(command),
        host=inventory.hosts[host],
        stdout_path=tmp_path / "app.step@node-1.out",
        stderr_path=tmp_path / "app.step@node-1.err",
        workdir=tmp_path,
        **kw,
    )


def backend(sshd: Sshd, **kw: Any) -> SshBackend:
    return SshBackend(sshd.inventory(), **kw)


async def run_one(b: SshBackend, job: Job) -> Outcome:
    try:
        return await b.run(job)
    finally:
        await b.aclose()


def pgrep(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_output_lands_in_the_log_files(sshd: Sshd, tmp_path: Path) -> None:
    job = make_job(sshd, tmp_path, "echo one; echo two >&2; echo three")
    outcome = run(run_one(backend(sshd), job))
    assert outcome == Outcome(ok=True, exit_status=0, output="one\nthree")
    assert (tmp_path / "app.step@node-1.out").read_text() == "one\nthree\n"
    # The wrapper's process-group marker line is not part of the command's stderr.
    assert (tmp_path / "app.step@node-1.err").read_text() == "two\n"


def test_output_is_streamed_while_the_command_runs(sshd: Sshd, tmp_path: Path) -> None:
    job = make_job(sshd, tmp_path, "echo early; sleep 1.5; echo late")
    out = tmp_path / "app.step@node-1.out"

    async def scenario() -> tuple[str, Outcome]:
        b = backend(sshd)
        task = asyncio.create_task(b.run(job))
        deadline = time.monotonic() + 5
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        seen = out.read_text() if out.exists() else ""
        outcome = await task
        await b.aclose()
        return seen, outcome

    seen, outcome = run(scenario())
    assert seen == "early\n"
    assert outcome.ok and outcome.output == "early\nlate"


def test_failing_command_reports_host_exit_status_and_stderr_tail(
    sshd: Sshd, tmp_path: Path
) -> None:
    command = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3"
    outcome = run(run_one(backend(sshd), make_job(sshd, tmp_path, command)))
    assert outcome.ok is False
    assert outcome.exit_status == 3
    assert outcome.message == (
        f"command failed on node-1 (127.0.0.1:{sshd.port}) with exit status 3"
    )
    assert outcome.stderr_tail == "\n".join(f"line{i}" for i in range(11, 31))


def test_secrets_are_redacted_from_logs_and_tail(sshd: Sshd, tmp_path: Path) -> None:
    job = make_job(
        sshd,
        tmp_path,
        "echo token={password}; echo bad {password} >&2; exit 1",
        values={"password": "s3cr3t-value"},
        secrets=frozenset({"s3cr3t-value"}),
    )
    outcome = run(run_one(backend(sshd), job))
    assert outcome.stderr_tail == "bad ******"
    assert (tmp_path / "app.step@node-1.out").read_text() == "token=******\n"
    assert "s3cr3t" not in (tmp_path / "app.step@node-1.err").read_text()


def test_values_with_shell_metacharacters_are_passed_literally(sshd: Sshd, tmp_path: Path) -> None:
    witness = tmp_path / f"pwned-{uuid.uuid4().hex}"
    value = f"$(touch {witness}); rm -rf / `touch {witness}` ' \" \\ ;|&"
    job = make_job(sshd, tmp_path, "echo {value}", values={"value": value})
    outcome = run(run_one(backend(sshd), job))
    assert outcome.ok, outcome
    assert outcome.output == value
    assert not witness.exists()


@pytest.mark.parametrize(("template", "shown"), CONTEXTS)
def test_hostile_values_arrive_literally_in_every_quoting_context(
    sshd: Sshd, tmp_path: Path, template: str, shown: str
) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"  # the sshd host shares this filesystem
    big = [MEGABYTE] if (template, shown) in IN_SHELL else []
    values = [*hostile(marker), *big]

    async def all_values() -> list[Outcome]:
        b = backend(sshd)
        try:
            jobs = [
                make_job(sshd, tmp_path / str(n), template, values={"p": v})
                for n, v in enumerate(values)
            ]
            for n in range(len(values)):
                (tmp_path / str(n)).mkdir()
            return list(await asyncio.gather(*(b.run(job) for job in jobs)))
        finally:
            await b.aclose()

    for n, (value, outcome) in enumerate(zip(values, run(all_values()), strict=True)):
        assert outcome.ok, (template, value[:80], outcome)
        log = tmp_path / str(n) / "app.step@node-1.out"
        printed = log.read_text() if log.exists() else ""
        assert printed == expected_output(shown, value), (template, value[:80])
    assert not marker.exists()


def test_a_nul_byte_in_a_value_fails_the_job_before_anything_runs(
    sshd: Sshd, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = make_job(sshd, tmp_path, f"touch {marker}; echo {{v}}", values={"v": "a\0b"})
    outcome = run(run_one(backend(sshd), job))
    assert outcome == Outcome(
        ok=False,
        message="the value of {v} holds a NUL byte, which no shell command can carry",
    )
    assert not marker.exists()


def test_neither_the_command_nor_its_values_show_in_the_process_table(
    sshd: Sshd, tmp_path: Path
) -> None:
    secret = f"S3cret-{uuid.uuid4().hex}"
    naptime = f"2.{uuid.uuid4().int % 10**6:06d}"
    job = make_job(
        sshd,
        tmp_path,
        "PW={pw} sleep {n}; echo {pw} >/dev/null",
        values={"pw": secret, "n": naptime},
    )

    async def scenario() -> tuple[Outcome, str]:
        task = asyncio.ensure_future(run_one(backend(sshd), job))
        await asyncio.sleep(1)
        listing = subprocess.run(["ps", "axwwo", "args"], capture_output=True, text=True).stdout
        return await task, listing

    outcome, listing = run(scenario())
    assert outcome.ok, outcome
    assert f"sleep {naptime}" in listing  # running on the host while ps looked
    assert secret not in listing


def test_environment_is_exported_quoted(sshd: Sshd, tmp_path: Path) -> None:
    env = {"MADEUS_GREETING": "hello world; $(false)", "OTHER": "it's"}
    job = make_job(sshd, tmp_path, 'echo "$MADEUS_GREETING|$OTHER"', env=env)
    outcome = run(run_one(backend(sshd), job))
    assert outcome.output == "hello world; $(false)|it's"


def test_known_hosts_beside_the_inventory_is_the_default(sshd: Sshd, tmp_path: Path) -> None:
    # sshd.inventory() lives in sshd.dir, where the helper wrote known_hosts.
    b = backend(sshd)
    assert b.known_hosts_path == sshd.known_hosts
    assert run(run_one(b, make_job(sshd, tmp_path, "true"))).ok


def test_unknown_host_key_is_refused_by_default(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.ssh
    inventory = inventory_from_dict(sshd.inventory_dict())  # no path: nothing beside it
    b = SshBackend(inventory)
    outcome = run(run_one(b, make_job(sshd, tmp_path, "true")))
    assert outcome.ok is False
    assert outcome.exit_status is None
    assert outcome.message.startswith(f"cannot connect to node-1 (127.0.0.1:{sshd.port}): ")
    assert "host key not trusted" in outcome.message
    assert str(tmp_path / ".ssh" / "known_hosts") in outcome.message
    assert b.connections_opened == 0


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {Path(f'{other}.pub').read_text()}")
    outcome = run(run_one(backend(sshd, known_hosts=known), make_job(sshd, tmp_path, "true")))
    assert outcome.ok is False
    assert "host key not trusted" in outcome.message
    assert str(known) in outcome.message


def test_insecure_mode_skips_the_check_and_warns(
    sshd: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with caplog.at_level("WARNING", logger="madeus.backends.ssh"):
        b = backend(sshd, known_hosts=empty, insecure_no_host_key_check=True)
    assert "host key checking is disabled" in caplog.text
    assert run(run_one(b, make_job(sshd, tmp_path, "echo ok"))).output == "ok"


def test_thirty_parallel_jobs_share_one_connection(sshd: Sshd, tmp_path: Path) -> None:
    b = backend(sshd, max_sessions=8)
    marker = tmp_path / "concurrency"
    # Each job records how many jobs run at once (a directory entry per running job).
    marker.mkdir()
    command = (
        f"touch {marker}/$$; ls {marker} | wc -l >> {marker}.counts; sleep 0.3; rm {marker}/$$"
    )

    async def scenario() -> list[Outcome]:
        try:
            jobs = [replace(make_job(sshd, tmp_path, command), id=f"app.s{i}") for i in range(30)]
            return await asyncio.gather(*(b.run(job) for job in jobs))
        finally:
            await b.aclose()

    outcomes = run(scenario())
    assert [o.ok for o in outcomes] == [True] * 30, [o.message for o in outcomes if not o.ok]
    assert b.connections_opened == 1
    counts = [int(n) for n in Path(f"{marker}.counts").read_text().split()]
    assert max(counts) <= 8


def test_one_connection_per_host(sshd: Sshd, tmp_path: Path) -> None:
    b = backend(sshd)

    async def scenario() -> list[Outcome]:
        try:
            jobs = [make_job(sshd, tmp_path, "true", host=h) for h in ("node-1", "node-2") * 5]
            return await asyncio.gather(*(b.run(job) for job in jobs))
        finally:
            await b.aclose()

    assert all(o.ok for o in run(scenario()))
    assert b.connections_opened == 2


def test_commands_go_out_on_spare_channels(sshd: Sshd, tmp_path: Path) -> None:
    """Each command is sent on a channel opened ahead (one round trip instead of two)."""

    async def scenario(b: SshBackend) -> list[Outcome]:
        try:
            return [await b.run(make_job(sshd, tmp_path, f"echo {i}")) for i in range(5)]
        finally:
            await b.aclose()

    warm = backend(sshd)
    assert [o.output for o in run(scenario(warm))] == ["0", "1", "2", "3", "4"]
    assert (warm.spares_used, warm.connections_opened) == (5, 1)
    cold = backend(sshd, spare_channels=0)
    assert [o.output for o in run(scenario(cold))] == ["0", "1", "2", "3", "4"]
    assert (cold.spares_used, cold.connections_opened) == (0, 1)


@pytest.mark.parametrize("broken", ["__init__", "start"])
def test_without_usable_spare_channels_commands_still_run(
    broken: str, sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a later asyncssh changes what spare channels rely on, new channels take over."""
    import madeus.backends.ssh as ssh_module

    def incompatible(*args: object, **kwargs: object) -> None:
        raise TypeError("an asyncssh whose internals changed")

    monkeypatch.setattr(ssh_module._SpareChannel, broken, incompatible)
    b = backend(sshd)

    async def scenario() -> list[Outcome]:
        try:
            return [await b.run(make_job(sshd, tmp_path, f"echo {i}")) for i in range(3)]
        finally:
            await b.aclose()

    assert [o.output for o in run(scenario())] == ["0", "1", "2"]
    assert (b.spares_used, b.spare_channels) == (0, 0)


def test_parallel_jobs_with_fewer_slots_than_spares(sshd: Sshd, tmp_path: Path) -> None:
    b = backend(sshd, max_sessions=2, spare_channels=4)

    async def scenario() -> list[Outcome]:
        try:
            jobs = [
                replace(make_job(sshd, tmp_path, f"sleep 0.1; echo {i}"), id=f"app.s{i}")
                for i in range(12)
            ]
            return await asyncio.gather(*(b.run(job) for job in jobs))
        finally:
            await b.aclose()

    assert [o.output for o in run(scenario())] == [str(i) for i in range(12)]
    assert b.spares_used >= 6


def unique_sleep() -> str:
    """A `sleep` argument no other process on this machine uses: `pgrep -f` finds ours."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def test_cancellation_kills_the_remote_process(sshd: Sshd, tmp_path: Path) -> None:
    seconds = unique_sleep()
    # A pipeline in a subshell: the shell, its children and grandchildren must all go.
    job = make_job(sshd, tmp_path, f"(sleep {seconds}; echo a) | (sleep {seconds}; cat)")

    async def scenario() -> tuple[list[int], float]:
        b = backend(sshd)
        task = asyncio.create_task(b.run(job))
        running: list[int] = []
        deadline = time.monotonic() + 5
        while len(running) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            running = pgrep(f"^sleep {seconds}$")
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        elapsed = time.monotonic() - start
        await b.aclose()
        return running, elapsed

    try:
        running, elapsed = run(scenario())
        assert len(running) == 2, "the remote command never started"
        assert elapsed < 2
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            signal_pid(pid, signal.SIGKILL)


def test_a_cancelled_command_keeps_its_last_words(sshd: Sshd, tmp_path: Path) -> None:
    """The output pumps outlive the cancellation: what the command says while it is being
    stopped still reaches its log (and so would the process-group marker, were it late)."""
    seconds = unique_sleep()
    job = make_job(
        sshd,
        tmp_path,
        f"trap 'echo stopping >&2; exit 3' TERM; echo up; sleep {seconds} & wait",
    )

    async def scenario() -> None:
        b = backend(sshd)
        task = asyncio.create_task(b.run(job))
        deadline = time.monotonic() + 5
        while not pgrep(f"^sleep {seconds}$") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    try:
        run(scenario())
        assert (tmp_path / "app.step@node-1.out").read_text() == "up\n"
        assert (tmp_path / "app.step@node-1.err").read_text() == "stopping\n"
    finally:
        for pid in pgrep(seconds):
            signal_pid(pid, signal.SIGKILL)


def test_timeout_scope_kills_the_remote_process(sshd: Sshd, tmp_path: Path) -> None:
    seconds = unique_sleep()
    job = make_job(sshd, tmp_path, f"sleep {seconds}")

    async def scenario() -> None:
        b = backend(sshd)
        try:
            async with asyncio.timeout(0.5):
                await b.run(job)
        finally:
            await b.aclose()

    try:
        with pytest.raises(TimeoutError):
            run(scenario())
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            signal_pid(pid, signal.SIGKILL)


def test_cancellation_kills_a_command_started_on_a_spare_channel(
    sshd: Sshd, tmp_path: Path
) -> None:
    seconds = unique_sleep()

    async def scenario() -> int:
        b = backend(sshd)
        try:
            assert (await b.run(make_job(sshd, tmp_path, "true"))).ok  # spares now open
            task = asyncio.create_task(b.run(make_job(sshd, tmp_path, f"sleep {seconds}")))
            deadline = time.monotonic() + 5
            while not pgrep(seconds) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert pgrep(seconds), "the remote command never started"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return b.spares_used
        finally:
            await b.aclose()

    try:
        assert run(scenario()) == 2
        assert pgrep(seconds) == []
    finally:
        for pid in pgrep(seconds):
            signal_pid(pid, signal.SIGKILL)


def test_cancellation_escalates_to_sigkill(sshd: Sshd, tmp_path: Path) -> None:
    marker = f"madeus-stubborn-{uuid.uuid4().hex}"
    command = f"trap '' TERM; while :; do sleep 0.1; done # {marker}"
    job = make_job(sshd, tmp_path, command)

    async def scenario() -> float:
        b = backend(sshd, kill_grace=0.5)
        task = asyncio.create_task(b.run(job))
        deadline = time.monotonic() + 5
        while not pgrep(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()
        return time.monotonic() - start

    elapsed = run(scenario())
    assert 0.4 < elapsed < 3
    assert pgrep(marker) == []


def test_upload_with_sftp(sshd: Sshd, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    source = tmp_path / "files" / "app.conf"
    source.write_text("port = 8080\n")
    source.chmod(0o640)
    dest_dir = tmp_path / "remote"
    dest_dir.mkdir()
    job = replace(
        make_job(sshd, tmp_path, "unused", values={"name": "app"}),
        action=UploadAction("files/{name}.conf", str(dest_dir / "{name}.conf")),
    )
    outcome = run(run_one(backend(sshd), job))
    assert outcome == Outcome(ok=True, exit_status=0)
    copied = dest_dir / "app.conf"
    assert copied.read_text() == "port = 8080\n"
    assert copied.stat().st_mode & 0o777 == 0o640
    assert "uploaded" in (tmp_path / "app.step@node-1.out").read_text()


def test_upload_of_a_missing_file_fails_clearly(sshd: Sshd, tmp_path: Path) -> None:
    job = replace(make_job(sshd, tmp_path, "unused"), action=UploadAction("nope.txt", "/tmp/x"))
    outcome = run(run_one(backend(sshd), job))
    assert outcome == Outcome(
        ok=False, message=f"cannot upload {tmp_path / 'nope.txt'}: no such file or directory"
    )


def test_upload_into_a_missing_directory_fails_clearly(sshd: Sshd, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("a")
    job = replace(
        make_job(sshd, tmp_path, "unused"),
        action=UploadAction("a.txt", str(tmp_path / "missing" / "a.txt")),
    )
    outcome = run(run_one(backend(sshd), job))
    assert outcome.ok is False
    assert outcome.message.startswith(f"upload of {source} to node-1 (127.0.0.1:{sshd.port}):")
    assert "failed: " in outcome.message


def test_connection_refused_is_a_plain_message(tmp_path: Path) -> None:
    port = closed_port()
    host = Host("control-1", "127.0.0.1", port=port, user="root")
    inventory = inventory_from_dict(
        {"all": {"hosts": {"control-1": {"ansible_host": "127.0.0.1", "ansible_port": port}}}}
    )
    job = Job("a.t", "a", "t", "deploy", ShellAction("true"), host, workdir=tmp_path)
    outcome = run(run_one(SshBackend(inventory, known_hosts=tmp_path / "kh"), job))
    assert outcome == Outcome(
        ok=False, message=f"cannot connect to control-1 (127.0.0.1:{port}): connection refused"
    )


def test_connect_timeout_is_a_plain_message(tmp_path: Path) -> None:
    # A listener that never answers: TCP connects, the SSH banner never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        host = Host("control-1", "127.0.0.1", port=port)
        inventory = inventory_from_dict({"all": {"hosts": {"control-1": {}}}})
        job = Job("a.t", "a", "t", "deploy", ShellAction("true"), host, workdir=tmp_path)
        b = SshBackend(inventory, known_hosts=tmp_path / "kh", connect_timeout=0.5)
        outcome = run(run_one(b, job))
    assert outcome == Outcome(
        ok=False,
        message=(
            f"cannot connect to control-1 (127.0.0.1:{port}): connection timed out after 0.5 s"
        ),
    )


def test_authentication_failure_is_a_plain_message(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    job = make_job(sshd, tmp_path, "true")
    job = replace(job, host=replace(job.host, key_file=str(stranger)))
    outcome = run(run_one(backend(sshd), job))
    assert outcome == Outcome(
        ok=False,
        message=(
            f"cannot connect to node-1 (127.0.0.1:{sshd.port}): "
            f"authentication failed for root with key {stranger}"
        ),
    )


def test_lost_connection_is_reported_and_the_next_job_reconnects(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Freeze the server side of the connection: keepalives go unanswered."""
    b = backend(sshd, keepalive_interval=0.2, keepalive_count_max=2)
    marker = unique_sleep()

    async def scenario() -> tuple[Outcome, Outcome]:
        try:
            assert (await b.run(make_job(sshd, tmp_path, "true"))).ok
            before = set(_sshd_children(sshd.pid))
            task = asyncio.create_task(b.run(make_job(sshd, tmp_path, f"sleep {marker}")))
            deadline = time.monotonic() + 5
            while not pgrep(marker) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            frozen = [p for p in _sshd_children(sshd.pid) if p in before]
            for pid in frozen:
                signal_pid(pid, signal.SIGSTOP)
            try:
                lost = await asyncio.wait_for(task, 10)
            finally:
                for pid in frozen:
                    signal_pid(pid, signal.SIGCONT)
                    signal_pid(pid, signal.SIGTERM)
            again = await b.run(make_job(sshd, tmp_path, "echo back"))
            return lost, again
        finally:
            await b.aclose()
            for pid in pgrep(marker):
                signal_pid(pid, signal.SIGKILL)

    lost, again = run(scenario())
    assert lost.ok is False
    assert lost.message == (
        f"lost the connection to node-1 (127.0.0.1:{sshd.port}): Server not responding to keepalive"
    )
    assert again.output == "back"
    assert b.connections_opened == 2


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
        os.kill(pid, sig)


def _sshd_children(listener: int) -> list[int]:
    """Per-connection sshd processes (children of the listener and their children)."""
    out = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    for pid in list(pids):
        more = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in more.stdout.split() if _is_sshd(int(p))]
    return pids


def _is_sshd(pid: int) -> bool:
    try:
        return "sshd" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_connect_opens_every_host_up_front_and_names_the_unreachable(
    sshd: Sshd, tmp_path: Path
) -> None:
    port = closed_port()
    inventory = sshd.inventory()
    reachable = list(inventory.hosts.values())
    lost = Host("lost-1", "127.0.0.1", port=port, user="root")
    b = SshBackend(inventory)

    async def connect_then_run() -> tuple[list[str], Outcome]:
        try:
            problems = await b.connect([*reachable, lost])
            return problems, await b.run(make_job(sshd, tmp_path, "echo ok"))
        finally:
            await b.aclose()

    problems, outcome = run(connect_then_run())
    assert problems == [f"cannot connect to lost-1 (127.0.0.1:{port}): connection refused"]
    assert outcome.output == "ok"
    # One connection per reachable host, opened by `connect` and reused by the job.
    assert b.connections_opened == len(reachable)


def test_the_engine_knows_the_session_limit_so_no_job_waits_unseen(
    sshd: Sshd, tmp_path: Path
) -> None:
    """20 parallel commands on one host whose connection runs 8 at once: the engine's limiter
    starts at most 8 (the trace shows when each really started), never 20 of which 12 would
    wait inside the backend while the trace said they ran."""
    from madeus import deploy_sync, load_text, resolve

    transitions = "\n".join(
        f'    transition t{i}: a -> b  shell "sleep 0.3"  ~0.3s' for i in range(20)
    )
    module = load_text(
        f"component Wide {{\n    places a*, b\n{transitions}\n}}\n"
        "assembly wide {\n    w = Wide on node-1\n}\n"
    )
    assert module.assembly is not None
    result = deploy_sync(
        resolve(module.assembly, sshd.inventory()), known_hosts=str(sshd.known_hosts)
    )
    events = result.trace.events
    assert len(events) == 20
    most = max(sum(1 for e in events if e.start <= x.start < e.end) for x in events)
    assert most == 8
    # The trace records the limit, so that its waits check out as waits for a session.
    from madeus.engine.validate import validate
    from madeus.trace import Limits, Trace

    assert result.trace.limits == Limits(None, {"node-1": 8})
    assert Trace.from_json(result.trace.to_json()).limits == result.trace.limits
    assert validate(result.trace, result.plan, tolerance=0.1) == []


def test_env_values_and_data_ports_take_the_same_path_over_ssh(sshd: Sshd, tmp_path: Path) -> None:
    from madeus import deploy_sync, load_text, resolve

    marker = tmp_path / "pwned"
    inventory = sshd.inventory()
    for value in hostile(marker):
        module = load_text(data_port_assembly(tmp_path, target="node-1"))
        assert module.assembly is not None
        deploy_sync(
            resolve(module.assembly, inventory),
            environ={"MADEUS_HOSTILE": value},
            known_hosts=str(sshd.known_hosts),
        )
        for name in DATA_PORT_FILES:  # written on the host, which shares this filesystem
            assert (tmp_path / name).read_text() == value, (name, value)
        assert not marker.exists(), value
