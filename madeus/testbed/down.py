"""`down`: undo everything DIR/state.json records, after a clean `up`, a crash or a partial one.

Two phases:
1. stop every process of the testbed: the recorded sshd and proxy PIDs (each signalled only
   after its identity is checked, through a pidfd so the PID cannot be reused in between), and
   every process left in the testbed's network namespaces (SSH sessions, daemons a deployment
   started on a host). SIGTERM, then SIGKILL what is still there after a grace period;
2. remove the other resources in the reverse order of their creation: unmount (lazily when
   busy), delete links and namespaces, remove files and directories.

Each resource is dropped from state.json once it is gone, so a failed `down` can be run again;
state.json itself goes last. Running `down` on a directory with no testbed does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from madeus.errors import Diagnostic
from madeus.testbed.spec import TestbedError, problem
from madeus.testbed.state import (
    STATE_FILE,
    Progress,
    Resource,
    StateFile,
    find_tool,
    find_unrecorded,
    link_exists,
    netns_exists,
    owns,
    pids_in_netns,
    run,
)

TERM_GRACE = 3.0
KILL_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class DownReport:
    """What `down` did: whether DIR held a testbed, processes stopped, kinds removed."""

    found: bool
    processes: int = 0
    removed: tuple[str, ...] = ()


def _emit(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # already gone


def _signal_all(fds: dict[int, int], sig: signal.Signals) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(fd, sig)


def _wait_exit(fds: dict[int, int], timeout: float) -> dict[int, int]:
    """Wait until the processes behind the pidfds exit; returns those still running."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    remaining = dict(fds)
    deadline = time.monotonic() + timeout
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            remaining.pop(fd, None)
    return remaining


def _reap(pids: list[int]) -> None:
    # When `up` ran in this very process (tests, the library API), its sshd and proxies are
    # our children: collect them so that no zombie keeps their PIDs.
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def stop_processes(sf: StateFile, progress: Progress | None) -> int:
    """Phase 1: returns how many processes were stopped."""
    fds: dict[int, int] = {}  # pidfd -> pid

    def take(pid: int, resource: Resource | None) -> None:
        if pid in fds.values() or pid == os.getpid():
            return
        fd = _open_pidfd(pid)
        if fd is None:
            return
        # Checked after the pidfd is open: if the PID was reused in between, the check fails
        # against the new process and the pidfd is dropped, never signalled.
        if resource is None or owns(resource, pid):
            fds[fd] = pid
        else:
            os.close(fd)

    netns_names = [r.name for r in sf.state.resources if r.kind == "netns"]
    for r in sf.state.resources:
        if r.kind != "process":
            continue
        if r.pid is not None:
            take(r.pid, r)
        else:
            for pid in find_unrecorded(r):
                take(pid, r)
    for ns in netns_names:
        for pid in pids_in_netns(ns):
            # Being in the testbed's namespace is the identity check here.
            take(pid, None)
    if not fds:
        return 0
    _emit(progress, f"stopping {len(fds)} processes")
    try:
        _signal_all(fds, signal.SIGTERM)
        left = _wait_exit(fds, TERM_GRACE)
        if left:
            _signal_all(left, signal.SIGKILL)
            left = _wait_exit(left, KILL_GRACE)
        _reap(list(fds.values()))
        if left:
            raise TestbedError(
                [
                    problem(
                        "testbed-down",
                        f"processes {sorted(left.values())} survived SIGKILL "
                        "(stuck in the kernel?)",
                    )
                ]
            )
    finally:
        for fd in fds:
            os.close(fd)
    return len(fds)


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4]
            # mountinfo escapes space, tab, newline and backslash as octal.
            for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(code, char)
            if point == path:
                return True
    return False


def _umount(path: str) -> None:
    if not _mounted(path):
        return
    umount = find_tool("umount") or "umount"
    try:
        run([umount, path], f"unmount {path}")
    except TestbedError:
        # Busy (a shell of the operator sitting in it?): detach it now, the kernel frees it
        # when its last user goes.
        run([umount, "-l", path], f"unmount {path}")


def _remove(r: Resource, directory: Path) -> None:
    ip = find_tool("ip") or "ip"
    if r.kind == "mount":
        _umount(r.name)
    elif r.kind == "veth" or r.kind == "bridge":
        if link_exists(r.name):
            run([ip, "link", "del", "dev", r.name], f"delete the link {r.name}")
    elif r.kind == "netns":
        if netns_exists(r.name):
            run([ip, "netns", "del", r.name], f"delete the namespace {r.name}")
    elif r.kind == "file":
        Path(r.name).unlink(missing_ok=True)
    elif r.kind == "dir":
        path = Path(r.name)
        if path == directory:
            return  # DIR itself goes after state.json, below
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
            # Files we did not create: not ours to delete, and not worth failing `down`.
    # processes were dealt with in phase 1


def down(directory: str | Path, progress: Progress | None = None) -> DownReport:
    """Tear down the testbed recorded in DIR. Idempotent: no testbed, nothing to do."""
    d = Path(directory).resolve()
    sf = StateFile.load(d)
    if sf is None:
        _emit(progress, f"no testbed in {d}: nothing to do")
        return DownReport(found=False)
    if os.geteuid() != 0:
        raise TestbedError(
            [problem("testbed-not-root", "madeus testbed down needs root: run it as root")]
        )
    _emit(progress, f"testbed {sf.state.id}: tearing down {len(sf.state.hosts)} hosts")
    stopped = stop_processes(sf, progress)
    for r in [r for r in sf.state.resources if r.kind == "process"]:
        sf.drop(r)
    errors: list[Diagnostic] = []
    removed: list[str] = []
    own_dir = False
    for r in reversed(sf.state.resources):
        if r.kind == "dir" and Path(r.name) == d:
            own_dir = True
            continue
        try:
            _remove(r, d)
        except (TestbedError, OSError) as e:
            message = e.diagnostics[0].message if isinstance(e, TestbedError) else str(e)
            errors.append(problem("testbed-down", message))
            continue
        if r.kind != "file" and r.kind != "dir":
            _emit(progress, f"removed {r.kind} {r.name}")
        removed.append(r.kind)
        sf.drop(r)
    if errors:
        raise TestbedError(errors)
    (d / STATE_FILE).unlink(missing_ok=True)
    if own_dir:
        # Only when empty: the operator may have put files of their own in it.
        with contextlib.suppress(OSError):
            d.rmdir()
    _emit(progress, f"down: {stopped} processes stopped, {len(removed)} resources removed")
    return DownReport(True, stopped, tuple(removed))
