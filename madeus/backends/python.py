"""Run Python actions: `python "package.module:function"`, sync or async.

The function is called with one argument, an `ActionContext` (the values, the host, a `log`
function writing to the job's stdout log). A returned string becomes the job's output (what
`provide data ... = output of T` reads); an exception fails the job with its message.

Sync functions run in a thread of their own, started for the job, so they cannot stall the
engine, and never wait behind other jobs in a pool of threads (a pool's queue would be hidden
from the engine: the trace would show them running while they waited). A thread cannot be
interrupted: when such a job is cancelled (a timeout, a failure elsewhere) the engine stops
waiting at once and the function's thread finishes on its own, its result dropped. Async
functions are cancelled like any coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from madeus.backends.base import Job, Outcome
from madeus.errors import BackendError
from madeus.inventory import Host
from madeus.model import PythonAction

_T = TypeVar("_T")


class ActionContext:
    """What a Python action receives: read-only values, the host, and a log."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._lock = threading.Lock()  # sync actions log from a worker thread
        self._fd: int | None = None

    @property
    def values(self) -> Mapping[str, str]:
        return self.job.values

    @property
    def host(self) -> Host:
        return self.job.host

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def workdir(self) -> Path:
        return self.job.workdir

    def render(self, text: str) -> str:
        """`text` with its `{name}` placeholders substituted as they are (not for a shell)."""
        return self.job.render(text)

    def log(self, message: str) -> None:
        """Append a line to the job's stdout log (secrets redacted)."""
        path = self.job.stdout_path
        if path is None:
            return
        data = (self.job.redact(message).rstrip("\n") + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


ActionFunction = Callable[[ActionContext], object | Awaitable[object]]


def resolve_function(ref: str, workdir: Path | None = None) -> ActionFunction:
    """Import `module:function`; the `.mad` file's directory is searched too."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise BackendError(f'python action "{ref}" must read "module:function"')
    try:
        module = _import(module_name, workdir)
    except ImportError as exc:
        raise BackendError(f'python action "{ref}": cannot import {module_name}: {exc}') from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise BackendError(f'python action "{ref}": {module_name} has no {attr}')
    if not callable(target):
        raise BackendError(f'python action "{ref}" is not callable')
    function: ActionFunction = target
    return function


def _import(name: str, workdir: Path | None) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if workdir is None:
            raise
    # Import synchronously (no await in between), so the temporary path entry is seen by this
    # import only.
    entry = str(workdir.resolve())
    sys.path.insert(0, entry)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(entry)


class PythonBackend:
    async def run(self, job: Job) -> Outcome:
        action = job.action
        if not isinstance(action, PythonAction):
            raise BackendError(f"the python backend cannot run {type(action).__name__}")
        function = resolve_function(action.ref, job.workdir)
        context = ActionContext(job)
        try:
            if inspect.iscoroutinefunction(function):
                result = await function(context)
            else:
                result = await in_thread(lambda: function(context), f"madeus {job.id}")
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _write_traceback(job)
            message = job.redact(f"{type(exc).__name__}: {exc}")
            return Outcome(ok=False, stderr_tail=message, message=message)
        finally:
            context.close()
        output = "" if result is None else str(result)
        return Outcome(ok=True, output=job.redact(output.strip()))

    async def aclose(self) -> None:
        return None


def in_thread(work: Callable[[], _T], name: str) -> Awaitable[_T]:
    """Run `work` in a new daemon thread; its result or exception arrives in the returned
    future. Cancelling the future stops the waiting, not the thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def deliver(result: _T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # delivered to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=body, name=name, daemon=True).start()
    return done


def _write_traceback(job: Job) -> None:
    if job.stderr_path is None:
        return
    text = job.redact(traceback.format_exc())
    fd = os.open(job.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as err:
        err.write(text)
