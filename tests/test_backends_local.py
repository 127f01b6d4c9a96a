"""The local backend with real subprocesses; the python and simulate backends; the router."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hostile_values import CONTEXTS, IN_SHELL, MEGABYTE, expected_output, hostile

from madeus.backends.base import Job, Outcome
from madeus.backends.local import LocalBackend
from madeus.backends.python import PythonBackend
from madeus.backends.router import BackendConfig, Router
from madeus.backends.simulate import SimulateBackend
from madeus.errors import BackendError
from madeus.inventory import Host
from madeus.model import AnsibleAction, PythonAction, ShellAction, UploadAction

LOCAL = Host("localhost", "127.0.0.1", connection="local")
REMOTE = Host("node-1", "192.0.2.1", connection="ssh")


def job(
    tmp_path: Path,
    action: ShellAction | UploadAction | PythonAction | AnsibleAction | None,
    values: dict[str, str] | None = None,
    secrets: frozenset[str] = frozenset(),
    host: Host = LOCAL,
    duration: float = 0.0,
) -> Job:
    return Job(
        id="web.install",
        instance="web",
        transition="install",
        behaviour="deploy",
        action=action,
        host=host,
        values=values or {},
        secrets=secrets,
        duration=duration,
        stdout_path=tmp_path / "web.install@localhost.out",
        stderr_path=tmp_path / "web.install@localhost.err",
        workdir=tmp_path,
    )


def run(coro: object) -> Outcome:
    result = asyncio.run(coro)  # type: ignore[arg-type]
    assert isinstance(result, Outcome)
    return result


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_output_goes_to_log_files_and_outcome(tmp_path: Path) -> None:
    outcome = run(LocalBackend().run(job(tmp_path, ShellAction("echo hello; echo oops >&2"))))
    assert outcome == Outcome(ok=True, exit_status=0, output="hello")
    out = tmp_path / "web.install@localhost.out"
    err = tmp_path / "web.install@localhost.err"
    assert out.read_text() == "hello\n"
    assert err.read_text() == "oops\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_no_output_no_log_files(tmp_path: Path) -> None:
    outcome = run(LocalBackend().run(job(tmp_path, ShellAction("true"))))
    assert outcome.ok
    assert list(tmp_path.iterdir()) == []


def test_exit_status_and_stderr_tail(tmp_path: Path) -> None:
    command = "echo partial; for i in $(seq 1 30); do echo line $i >&2; done; exit 3"
    outcome = run(LocalBackend().run(job(tmp_path, ShellAction(command))))
    assert not outcome.ok
    assert outcome.exit_status == 3
    assert outcome.message == "exit status 3"
    assert outcome.output == "partial"
    assert outcome.stderr_tail == "\n".join(f"line {i}" for i in range(11, 31))


def test_values_with_metacharacters_are_literal(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = f"$(touch {marker}); rm -rf x `touch {marker}` && echo 'quoted' \"double\" \n"
    outcome = run(
        LocalBackend().run(job(tmp_path, ShellAction("printf %s {v}"), values={"v": value}))
    )
    assert outcome.ok
    assert (tmp_path / "web.install@localhost.out").read_text() == value
    assert not marker.exists()


@pytest.mark.parametrize(("template", "shown"), CONTEXTS)
def test_hostile_values_arrive_literally_in_every_quoting_context(
    template: str, shown: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    big = [MEGABYTE] if (template, shown) in IN_SHELL else []
    for value in [*hostile(marker), *big]:
        log = tmp_path / "web.install@localhost.out"
        log.unlink(missing_ok=True)
        outcome = run(LocalBackend().run(job(tmp_path, ShellAction(template), values={"p": value})))
        assert outcome.ok, (template, value[:80], outcome)
        printed = log.read_text() if log.exists() else ""
        assert printed == expected_output(shown, value), (template, value[:80])
        assert not marker.exists(), (template, value)


def test_a_nul_byte_in_a_value_fails_the_job_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    action = ShellAction(f"touch {marker}; echo {{v}}")
    outcome = run(LocalBackend().run(job(tmp_path, action, values={"v": "a\0b"})))
    assert outcome == Outcome(
        ok=False,
        message="cannot substitute values: the value of {v} holds a NUL byte, which no shell "
        "command can carry",
    )
    assert not marker.exists()


def test_neither_the_command_nor_its_values_show_in_the_process_table(tmp_path: Path) -> None:
    secret = f"S3cret-{os.getpid()}-{time.time_ns()}"
    action = ShellAction("PW={pw} sleep 2.{n}; echo {pw} > /dev/null")
    values = {"pw": secret, "n": str(time.time_ns() % 1000)}

    async def scenario() -> tuple[Outcome, str]:
        task = asyncio.ensure_future(LocalBackend().run(job(tmp_path, action, values=values)))
        await asyncio.sleep(1)
        listing = subprocess.run(["ps", "axwwo", "args"], capture_output=True, text=True).stdout
        return await task, listing

    outcome, listing = asyncio.run(scenario())
    assert outcome.ok
    assert "sleep 2." in listing  # the command was running while ps looked
    assert secret not in listing


def test_missing_value_fails_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    outcome = run(LocalBackend().run(job(tmp_path, ShellAction(f"touch {marker} {{nope}}"))))
    assert outcome == Outcome(
        ok=False, message='cannot substitute values: no value for placeholder "{nope}"'
    )
    assert not marker.exists()


def test_secrets_are_redacted_in_logs_and_outcome(tmp_path: Path) -> None:
    command = "echo token={pw}; printf 'a{pw}b' >&2; exit 1"
    outcome = run(
        LocalBackend().run(
            job(tmp_path, ShellAction(command), values={"pw": "hunter2"}, secrets={"hunter2"})
        )
    )
    logs = (tmp_path / "web.install@localhost.out").read_text()
    logs += (tmp_path / "web.install@localhost.err").read_text()
    assert "hunter2" not in logs
    assert logs == "token=******\na******b"
    assert outcome.stderr_tail == "a******b"
    assert "hunter2" not in repr(outcome)


async def _cancel_after_start(
    backend: LocalBackend, the_job: Job, fifo: Path, settle: float = 0.0
) -> list[int]:
    """Start the job, read the PIDs it reports through a FIFO (so we know it runs), cancel.
    Without `settle` the cancellation usually lands while asyncio is still connecting the
    pipes; with it, once the backend is streaming output."""
    task = asyncio.create_task(backend.run(the_job))
    pids = await asyncio.to_thread(lambda: fifo.read_text().split())
    if settle:
        await asyncio.sleep(settle)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return [int(p) for p in pids]


@pytest.mark.parametrize("settle", [0.0, 0.2])
def test_cancellation_kills_the_process_group(tmp_path: Path, settle: float) -> None:
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    command = f"echo started; sleep 60 & echo $$ $! > {fifo}; wait"
    the_job = job(tmp_path, ShellAction(command))
    pids = asyncio.run(_cancel_after_start(LocalBackend(), the_job, fifo, settle))
    assert len(pids) == 2
    # SIGTERM reached the shell and its background child at once.
    for pid in pids:
        assert not alive(pid), f"process {pid} survived the cancellation"


def test_cancellation_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    command = f"trap '' TERM; sh -c 'trap \"\" TERM; sleep 60' & echo $$ $! > {fifo}; wait"
    started = time.monotonic()
    pids = asyncio.run(
        _cancel_after_start(LocalBackend(grace=0.3), job(tmp_path, ShellAction(command)), fifo)
    )
    assert time.monotonic() - started < 10
    for pid in pids:
        assert not alive(pid), f"process {pid} survived SIGKILL"


def test_killed_by_signal_is_reported(tmp_path: Path) -> None:
    outcome = run(LocalBackend().run(job(tmp_path, ShellAction("kill -KILL $$"))))
    assert not outcome.ok
    assert outcome.exit_status == -signal.SIGKILL
    assert outcome.message == "killed by signal 9"


def test_upload_copies_relative_to_workdir(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd").write_text("welcome {not a placeholder}\n")
    dest = tmp_path / "out" / "motd.txt"
    action = UploadAction("files/{name}", str(dest))
    outcome = run(LocalBackend().run(job(tmp_path, action, values={"name": "motd"})))
    assert outcome == Outcome(ok=True)
    assert dest.read_text() == "welcome {not a placeholder}\n"


def test_upload_of_missing_file_fails(tmp_path: Path) -> None:
    outcome = run(LocalBackend().run(job(tmp_path, UploadAction("nope", str(tmp_path / "x")))))
    assert not outcome.ok
    assert outcome.message.startswith(f"cannot copy {tmp_path / 'nope'} to {tmp_path / 'x'}:")


def test_local_backend_refuses_ansible(tmp_path: Path) -> None:
    with pytest.raises(BackendError):
        run(LocalBackend().run(job(tmp_path, AnsibleAction(playbook="site.yml"))))


# --- python -------------------------------------------------------------------------------


def sync_action(ctx: object) -> str:
    from madeus.backends.python import ActionContext

    assert isinstance(ctx, ActionContext)
    ctx.log(f"deploying on {ctx.host.name} with {ctx.values['v']}")
    return f"  {ctx.values['v']}-done  \n"


async def async_action(ctx: object) -> str:
    await asyncio.sleep(0)
    return "async-done"


def failing_action(ctx: object) -> None:
    raise RuntimeError("the database said no to hunter2")


def test_python_sync_action(tmp_path: Path) -> None:
    action = PythonAction(f"{__name__}:sync_action")
    outcome = run(PythonBackend().run(job(tmp_path, action, values={"v": "x"})))
    assert outcome == Outcome(ok=True, output="x-done")
    log = (tmp_path / "web.install@localhost.out").read_text()
    assert log == "deploying on localhost with x\n"


def test_python_async_action(tmp_path: Path) -> None:
    outcome = run(PythonBackend().run(job(tmp_path, PythonAction(f"{__name__}:async_action"))))
    assert outcome == Outcome(ok=True, output="async-done")


def test_python_exception_fails_with_message(tmp_path: Path) -> None:
    the_job = job(tmp_path, PythonAction(f"{__name__}:failing_action"), secrets={"hunter2"})
    outcome = run(PythonBackend().run(the_job))
    assert outcome == Outcome(
        ok=False,
        stderr_tail="RuntimeError: the database said no to ******",
        message="RuntimeError: the database said no to ******",
    )
    traceback = (tmp_path / "web.install@localhost.err").read_text()
    assert "Traceback" in traceback
    assert "hunter2" not in traceback


def test_python_module_beside_the_mad_file(tmp_path: Path) -> None:
    (tmp_path / "my_actions_beside.py").write_text("def go(ctx):\n    return 'beside'\n")
    outcome = run(PythonBackend().run(job(tmp_path, PythonAction("my_actions_beside:go"))))
    assert outcome == Outcome(ok=True, output="beside")


def test_python_bad_reference(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match='must read "module:function"'):
        run(PythonBackend().run(job(tmp_path, PythonAction("no_colon"))))
    with pytest.raises(BackendError, match="cannot import"):
        run(PythonBackend().run(job(tmp_path, PythonAction("no_such_module_xyz:f"))))


# --- simulate and router ------------------------------------------------------------------


def test_simulate_sleeps_scaled_duration(tmp_path: Path) -> None:
    backend = SimulateBackend(time_scale=0.1)
    started = time.monotonic()
    assert run(backend.run(job(tmp_path, ShellAction("exit 1"), duration=2.0))).ok
    assert 0.19 <= time.monotonic() - started < 1.0
    assert list(tmp_path.iterdir()) == []


async def _zero_duration_does_not_yield(backend: SimulateBackend, the_job: Job) -> bool:
    coro = backend.run(the_job)
    try:
        coro.send(None)
    except StopIteration as done:
        return bool(done.value.ok)
    coro.close()
    return False


def test_simulate_zero_duration_does_not_sleep(tmp_path: Path) -> None:
    the_job = job(tmp_path, None, duration=0.0)
    assert asyncio.run(_zero_duration_does_not_yield(SimulateBackend(1.0), the_job))


class Recorder:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    async def run(self, job: Job) -> Outcome:
        self.jobs.append(job)
        return Outcome(ok=True, output="recorded")

    async def aclose(self) -> None:
        return None


def test_router_table() -> None:
    router = Router()
    assert router.route(ShellAction("x"), LOCAL) == "local"
    assert router.route(ShellAction("x"), REMOTE) == "ssh"
    assert router.route(UploadAction("a", "b"), LOCAL) == "local"
    assert router.route(UploadAction("a", "b"), REMOTE) == "ssh"
    assert router.route(PythonAction("m:f"), REMOTE) == "python"
    assert router.route(AnsibleAction(playbook="p.yml"), LOCAL) == "ansible"
    assert router.route(None, LOCAL) is None
    simulated = Router(BackendConfig(simulate="local"))
    assert simulated.route(AnsibleAction(playbook="p.yml"), REMOTE) == "simulate"
    remote = Router(BackendConfig(simulate="remote"))
    assert remote.route(PythonAction("m:f"), REMOTE) == "ssh"
    assert remote.route(PythonAction("m:f"), LOCAL) == "local"


def test_router_instant() -> None:
    assert Router().instant(None, 5.0)
    assert not Router().instant(ShellAction("x"), 0.0)
    assert Router(BackendConfig(simulate="local")).instant(ShellAction("x"), 0.0)
    assert not Router(BackendConfig(simulate="local", time_scale=0.1)).instant(None, 1.0)


def test_router_plugs_backends_by_name(tmp_path: Path) -> None:
    recorder = Recorder()
    router = Router(backends={"ssh": recorder})
    outcome = run(router.run(job(tmp_path, ShellAction("hostname"), host=REMOTE)))
    assert outcome == Outcome(ok=True, output="recorded")
    assert recorder.jobs[0].action == ShellAction("hostname")


def test_capabilities_are_found_by_their_protocols(tmp_path: Path) -> None:
    """The router answers the engine's questions (instant, capacity) and asks each backend it
    built only what that backend's protocols say it can: a plugged backend with none of them
    has no limit and nothing to connect."""
    from madeus.backends.ansible import AnsibleBackend
    from madeus.backends.base import Capacity, Configurable, Connects, HostCapacity, Instant
    from madeus.backends.ssh import SshBackend

    router = Router(backends={"ssh": Recorder()})
    assert isinstance(router, Instant) and isinstance(router, Capacity)
    assert router.capacity(ShellAction("x"), REMOTE) is None
    assert asyncio.run(router.connect([(ShellAction("x"), REMOTE)])) == []
    assert not isinstance(Recorder(), Connects | HostCapacity)
    assert issubclass(SshBackend, Configurable) and issubclass(AnsibleBackend, Configurable)
    assert not issubclass(LocalBackend, Configurable)
    ssh = Router().backend("ssh")
    assert isinstance(ssh, Connects) and isinstance(ssh, HostCapacity)
    assert Router().capacity(ShellAction("x"), REMOTE) == ssh.host_capacity(REMOTE) == 8


def test_router_remote_simulation_sends_sleep_to_ssh(tmp_path: Path) -> None:
    recorder = Recorder()
    router = Router(BackendConfig(simulate="remote", time_scale=0.5), backends={"ssh": recorder})
    action = AnsibleAction(role="mariadb", tasks="pull")
    run(router.run(job(tmp_path, action, host=REMOTE, duration=3.0)))
    assert recorder.jobs[0].action == ShellAction("sleep 1.500000")
    assert recorder.jobs[0].host == REMOTE


def test_router_reports_a_missing_backend() -> None:
    import madeus.backends.router as router_module

    router = Router()
    saved = dict(router_module.BACKENDS)
    router_module.BACKENDS["ansible"] = "madeus.backends.no_such_backend:Nope"
    try:
        with pytest.raises(BackendError) as caught:
            router.prepare([(AnsibleAction(playbook="p.yml"), LOCAL)])
    finally:
        router_module.BACKENDS.clear()
        router_module.BACKENDS.update(saved)
    assert str(caught.value).startswith(
        "the ansible backend (madeus.backends.no_such_backend) is not available: "
    )


def test_no_action_succeeds_at_once(tmp_path: Path) -> None:
    assert run(Router().run(job(tmp_path, None, duration=10.0))) == Outcome(ok=True)
