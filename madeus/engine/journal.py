"""The journal: what a deployment did, durable at every start and end (docs/reliability.md).

One directory per assembly file and inventory, `.madeus/state/<key>/` beside the assembly file
(or under `--state DIR` / `$MADEUS_STATE`: `base_dir`), 0700:

    journal.jsonl   one JSON object per line, appended; written and fdatasync'd by the
                    engine's journal thread, everything buffered meanwhile at once (group
                    commit); a non-idempotent action runs once its start record is on disk
    lock            flock'd by the run that owns the journal; holds who that is (JSON)
    history/        the journals of earlier deployments (the HISTORY_KEEP latest)
    state.json      the state of record the last run left (`madeus.state`)

Records (`k` is the kind; `at` is seconds from the start of the run, monotonic clock):

    {"k":"journal","version":1,"key":KEY,"file":MAD,"inventory":INV|null}     first line
    {"k":"run","run":ID,"started_at":ISO,"resume":BOOL,"run_dir":DIR|null,"pid":N,
     "host":NAME,"user":NAME,"command":[...]}
    {"k":"start","t":TRANSITION,"h":HOST,"at":S}
    {"k":"end","t":TRANSITION,"h":HOST,"s":"ok"|"failed"|"timeout"|"cancelled"|"lost","at":S
     [,"out":OUTPUT][,"assumed":true]}
    {"k":"unstart","t":TRANSITION,"h":HOST}      its start is withdrawn: the run stopped
                                                 before the action was launched
    {"k":"data","p":"INSTANCE.PORT","v":VALUE}
    {"k":"marking","i":INSTANCE,"places":[...][,"batches":[[...],...]]}  each batch's places: a
                                                 rolling change left them apart
    {"k":"instances","v":{INSTANCE: TYPE, ...}}
    {"k":"stop","s":"ok"|"failed"|"interrupted","at":S}

A record belongs to the last `run` record before it. A torn last line (a crash in the middle
of a write) is ignored when reading, and cut off before the journal is appended to again.
Values derived from secret parameters are never written (the engine recomputes them).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from madeus.engine.errors import JournalError, JournalLocked
from madeus.engine.runlog import DIR_MODE, FILE_MODE, make_private_dir

__all__ = [
    "DEFAULT_STATE",
    "HISTORY_KEEP",
    "JOURNAL_FILE",
    "STATE_ENV",
    "JobRecord",
    "Journal",
    "JournalError",
    "JournalLocked",
    "JournalState",
    "LockHolder",
    "RunRecord",
    "base_dir",
    "open_journal",
    "read_journal",
    "read_lock_holder",
    "read_state",
    "state_dir",
    "state_key",
]

DEFAULT_STATE = Path(".madeus") / "state"  # beside the assembly file (`base_dir`)
STATE_ENV = "MADEUS_STATE"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "lock"
HISTORY_DIR = "history"
HISTORY_KEEP = 10
FORMAT_VERSION = 1

# "lost": the connection to the host was lost while the action ran; like "cancelled", whether
# it did its work is unknown.
JobStatus = Literal["running", "ok", "failed", "timeout", "cancelled", "lost"]
EndStatus = Literal["ok", "failed", "timeout", "cancelled", "lost"]
_END_STATUSES = frozenset({"ok", "failed", "timeout", "cancelled", "lost"})
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


InventoryKey = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def inventory_identity(inventory: InventoryKey) -> str | None:
    """The inventory a journal belongs to, as one string: its sources (files and directories
    by real path, host lists as written), in order; None for the local machine."""
    if inventory is None:
        return None
    sources = [inventory] if isinstance(inventory, str | os.PathLike) else list(inventory)
    if not sources:
        return None
    real = [
        os.path.realpath(os.fspath(s)) if os.path.exists(os.fspath(s)) else os.fspath(s)
        for s in sources
    ]
    return "\n".join(real)


def state_key(
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey,
    *,
    simulate: bool = False,
) -> str:
    """`<file stem>-<12 hex digits>`: the hash of the real paths of the assembly file and of
    the inventory's sources (none: the local machine). Simulated runs keep a journal of their
    own (`-simulate` appended): a rehearsal never stands for, nor replaces, a real
    deployment."""
    mad = os.path.realpath(os.fspath(mad_path))
    inv = inventory_identity(inventory) or ""
    digest = hashlib.sha256(f"{mad}\0{inv}".encode()).hexdigest()[:12]
    stem = _KEY_CHARS.sub("_", Path(mad).stem)[:40] or "assembly"
    return f"{stem}-{digest}" + ("-simulate" if simulate else "")


def base_dir(
    mad_path: str | os.PathLike[str], override: str | os.PathLike[str] | None = None
) -> Path:
    """Where the states of this assembly's deployments are kept: `override` (`--state`),
    else `$MADEUS_STATE`, else `.madeus/state` in the assembly file's directory: never the
    working directory, so that a deployment has one state wherever madeus runs from."""
    chosen = override if override is not None else os.environ.get(STATE_ENV) or None
    if chosen is not None:
        return Path(chosen)
    return Path(os.path.dirname(os.path.abspath(os.fspath(mad_path)))) / DEFAULT_STATE


def state_dir(
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey = None,
    *,
    base: str | os.PathLike[str] | None = None,
    simulate: bool = False,
) -> Path:
    root = base_dir(mad_path) if base is None else Path(base)
    return root / state_key(mad_path, inventory, simulate=simulate)


# --- what the journal says ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockHolder:
    pid: int
    host: str
    user: str
    started_at: str
    command: tuple[str, ...]

    def describe(self) -> str:
        command = " ".join(self.command) or "?"
        return (
            f"pid {self.pid} on host {self.host}, user {self.user}, since {self.started_at}: "
            f"{command}"
        )


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    started_at: str  # UTC ISO 8601, Z
    resume: bool
    run_dir: str | None
    pid: int
    host: str
    user: str
    command: tuple[str, ...]
    status: str | None = None  # "ok", "failed", "interrupted"; None: no stop record (crash)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """The last thing the journal says about one transition on one host."""

    status: JobStatus  # "running": started, no end record
    run: str  # the run of that record
    at: float  # its time, seconds from the start of that run
    output: str | None = None  # standard output (redacted), when a data port needs it
    assumed: bool = False  # ended by --assume-done, not by running


@dataclass(frozen=True, slots=True)
class JournalState:
    """What the journal says, frozen.

    - `ended`: (transition id, host) pairs whose last record is a successful end;
    - `running`: started and not ended, including those cancelled when the run was stopped
      and those whose host connection was lost while they ran (their action may have been
      cut off half-way, or have completed unseen: see `madeus deploy --resume`);
    - `failed`: ended with `failed` or `timeout` (re-run by a resume);
    - `data`: data port values by `instance.port` (never those derived from secrets);
    - `markings`: instance -> places holding tokens, as last recorded by a reconfiguration;
    - `batch_markings`: for an instance whose batches (a rolling change) were left in
      different places, each batch's places, in batch order;
    - `instances`: instance -> component type, as last recorded by a reconfiguration (None
      when none was recorded).
    """

    ended: frozenset[tuple[str, str]] = frozenset()
    running: frozenset[tuple[str, str]] = frozenset()
    data: Mapping[str, str] = field(default_factory=dict)
    markings: Mapping[str, frozenset[str]] = field(default_factory=dict)
    instances: Mapping[str, str] | None = None
    failed: frozenset[tuple[str, str]] = frozenset()
    jobs: Mapping[tuple[str, str], JobRecord] = field(default_factory=dict)
    runs: tuple[RunRecord, ...] = ()
    torn: bool = False  # a torn last record was ignored
    batch_markings: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)

    @property
    def last_run(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    def run(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs if r.id == run_id), None)


def read_state(path: str | os.PathLike[str]) -> JournalState:
    """Read a journal file (a missing file is an empty journal). Raises JournalError when a
    record other than the last one is not valid."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return JournalState()
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror}") from None
    records, _, torn = _parse(data, os.fspath(path))
    return _fold(records, torn)


def _parse(data: bytes, where: str) -> tuple[list[dict[str, Any]], int, bool]:
    """The records, the length of the valid prefix, and whether a torn tail was dropped."""
    # The whole lines at once, in one call of json's C decoder (100,000 records: 0.1 s rather
    # than 0.5 s); any doubt (a line that is not one object) and the lines are read one by one.
    end = data.rfind(b"\n") + 1
    lines = [line for line in data[:end].split(b"\n") if line.strip()]
    try:
        found = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        found = None
    if (
        isinstance(found, list)
        and len(found) == len(lines)
        and all(isinstance(record, dict) for record in found)
    ):
        return found, end, end < len(data)
    return _parse_lines(data, where)


def _parse_lines(data: bytes, where: str) -> tuple[list[dict[str, Any]], int, bool]:
    records: list[dict[str, Any]] = []
    valid = 0
    bad_line = 0
    position = 0
    number = 0
    size = len(data)
    loads = json.loads
    while position < size:
        newline = data.find(b"\n", position)
        number += 1
        if newline < 0:  # no newline: the write was cut short
            return records, valid, True
        line = data[position:newline]
        position = newline + 1
        if not line.strip():
            if not bad_line:
                valid = position
            continue
        try:
            record = loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            bad_line = bad_line or number
            continue
        if bad_line:
            raise JournalError(
                f"the journal {where} is damaged at line {bad_line} (a valid record follows)"
            )
        records.append(record)
        valid = position
    return records, valid, bool(bad_line)


def _fold(records: Iterable[dict[str, Any]], torn: bool) -> JournalState:
    jobs: dict[tuple[str, str], JobRecord] = {}
    before_start: dict[tuple[str, str], JobRecord | None] = {}
    data: dict[str, str] = {}
    markings: dict[str, frozenset[str]] = {}
    batch_markings: dict[str, tuple[frozenset[str], ...]] = {}
    instances: dict[str, str] | None = None
    runs: list[RunRecord] = []
    run = ""
    for r in records:
        kind = r.get("k")
        try:
            if kind == "end":
                status = r["s"]
                if status not in _END_STATUSES:
                    continue
                out = r.get("out")
                jobs[(str(r["t"]), str(r["h"]))] = JobRecord(
                    status,
                    run,
                    float(r.get("at", 0.0)),
                    out if isinstance(out, str) else None,
                    bool(r.get("assumed", False)),
                )
            elif kind == "start":
                key = (str(r["t"]), str(r["h"]))
                before_start[key] = jobs.get(key)
                jobs[key] = JobRecord("running", run, float(r.get("at", 0.0)))
            elif kind == "unstart":
                key = (str(r["t"]), str(r["h"]))
                if key in jobs and jobs[key].status == "running":
                    previous = before_start.get(key)
                    if previous is None:
                        del jobs[key]
                    else:
                        jobs[key] = previous
            elif kind == "data":
                data[str(r["p"])] = str(r["v"])
            elif kind == "run":
                run = str(r["run"])
                runs.append(
                    RunRecord(
                        run,
                        str(r.get("started_at", "")),
                        bool(r.get("resume", False)),
                        r.get("run_dir"),
                        int(r.get("pid", 0)),
                        str(r.get("host", "")),
                        str(r.get("user", "")),
                        tuple(str(a) for a in r.get("command", ())),
                    )
                )
            elif kind == "stop":
                if runs:
                    last = runs[-1]
                    runs[-1] = RunRecord(
                        last.id,
                        last.started_at,
                        last.resume,
                        last.run_dir,
                        last.pid,
                        last.host,
                        last.user,
                        last.command,
                        str(r.get("s", "")),
                    )
            elif kind == "marking":
                name = str(r["i"])
                markings[name] = frozenset(str(p) for p in r["places"])
                batch_markings.pop(name, None)
                if "batches" in r:
                    batch_markings[name] = tuple(
                        frozenset(str(p) for p in places) for places in r["batches"]
                    )
            elif kind == "instances":
                instances = {str(k): str(v) for k, v in dict(r["v"]).items()}
        except (KeyError, TypeError, ValueError):
            continue  # a record this version does not understand: ignored
    ended = frozenset(k for k, j in jobs.items() if j.status == "ok")
    running = frozenset(k for k, j in jobs.items() if j.status in ("running", "cancelled", "lost"))
    failed = frozenset(k for k, j in jobs.items() if j.status in ("failed", "timeout"))
    return JournalState(
        ended,
        running,
        data,
        markings,
        instances,
        failed,
        jobs,
        tuple(runs),
        torn,
        batch_markings,
    )


# --- the lock -------------------------------------------------------------------------------


def read_lock_holder(directory: str | os.PathLike[str]) -> LockHolder | None:
    """Who holds the lock of a journal directory, or None when nobody does."""
    import fcntl

    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_of(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_of(fd: int) -> LockHolder:
    try:
        raw = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    return LockHolder(
        int(raw.get("pid", 0) or 0),
        str(raw.get("host", "?")),
        str(raw.get("user", "?")),
        str(raw.get("started_at", "?")),
        tuple(str(a) for a in raw.get("command", ())),
    )


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the journal ----------------------------------------------------------------------------


class Journal:
    """An open journal, holding its lock. Build it with `open_journal`; use it as a context
    manager (or call `close`). Not thread-safe: use it from the event loop's thread."""

    def __init__(
        self,
        directory: Path,
        lock_fd: int,
        *,
        key: str,
        file: str | None,
        inventory: str | None,
        command: tuple[str, ...],
    ) -> None:
        self.directory = directory
        self.path = directory / JOURNAL_FILE
        self.key = key
        self.file = file
        self.inventory = inventory
        self.command = command
        self.run_id: str | None = None
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None
        self._buffer: list[str] = []
        self._t0 = time.monotonic()

    # context manager

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(JournalError):  # do not hide the error in flight
            self.close()

    def close(self) -> None:
        """Write what is buffered, then release the lock."""
        try:
            if self._buffer and self._fd is not None:
                self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                import fcntl

                with contextlib.suppress(OSError):
                    os.ftruncate(self._lock_fd, 0)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    # reading

    def state(self) -> JournalState:
        """What the journal holds now (what is buffered included)."""
        if self._buffer:
            self.flush()
        return read_state(self.path)

    def last_stop(self) -> str | None:
        """How the last recorded run ended, read from the journal's tail (cheap): its stop
        status (`ok`, `failed`, `interrupted`), `unfinished` when it has no stop record (the
        process died), None when the journal holds no run."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - 65536))
                tail = handle.read()
        except OSError:
            return None
        for line in reversed(tail.split(b"\n")[1 if size > 65536 else 0 :]):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            kind = record.get("k")
            if kind == "journal":
                return None
            return str(record.get("s", "")) if kind == "stop" else "unfinished"
        return None

    # runs

    def begin_run(
        self,
        run_id: str,
        *,
        resume: bool,
        run_dir: str | os.PathLike[str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """Start recording a run. `resume=False` starts a fresh journal (the previous one goes
        to `history/`); `resume=True` appends to it. Durable on return."""
        self._check_open()
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None
        try:
            if resume and self.path.exists() and self.path.stat().st_size > 0:
                self._cut_torn_tail()
                self._fd = self._open_file()
            else:
                self._start_fresh()
        except OSError as exc:
            raise JournalError(self._cannot(exc)) from None
        self.run_id = run_id
        self._t0 = time.monotonic()
        record = {
            "k": "run",
            "run": run_id,
            "started_at": _utc_now(),
            "resume": resume,
            "run_dir": None if run_dir is None else os.fspath(run_dir),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": _whoami(),
            "command": list(command if command is not None else self.command),
        }
        self._append_record(record)
        self.flush()

    def end_run(self, status: str, *, at: float | None = None) -> None:
        """The run stopped: `ok`, `failed` or `interrupted`. Durable on return."""
        self._append_record({"k": "stop", "s": status, "at": self._at(at)})
        self.flush()

    # records (durable on return unless flush=False)

    def record_start(
        self, transition: str, host: str, *, at: float | None = None, flush: bool = True
    ) -> None:
        self._append_record({"k": "start", "t": transition, "h": host, "at": self._at(at)})
        if flush:
            self.flush()

    def record_end(
        self,
        transition: str,
        host: str,
        status: EndStatus,
        *,
        output: str | None = None,
        assumed: bool = False,
        at: float | None = None,
        flush: bool = True,
    ) -> None:
        if status not in _END_STATUSES:
            raise ValueError(f"unknown end status {status!r}")
        record: dict[str, Any] = {
            "k": "end",
            "t": transition,
            "h": host,
            "s": status,
            "at": self._at(at),
        }
        if output is not None:
            record["out"] = output
        if assumed:
            record["assumed"] = True
        self._append_record(record)
        if flush:
            self.flush()

    def record_data(self, port: str, value: str, *, flush: bool = True) -> None:
        """A data port's value (`instance.port`). Never pass a value derived from a secret."""
        self._append_record({"k": "data", "p": port, "v": value})
        if flush:
            self.flush()

    def record_marking(
        self,
        instance: str,
        places: Iterable[str],
        *,
        batches: Iterable[Iterable[str]] = (),
        flush: bool = True,
    ) -> None:
        """The places of `instance` that hold tokens (reconfigurations); `batches`: each
        batch's, when a rolling change left them in different places."""
        record: dict[str, Any] = {"k": "marking", "i": instance, "places": sorted(places)}
        split = [sorted(b) for b in batches]
        if split:
            record["batches"] = split
        self._append_record(record)
        if flush:
            self.flush()

    def record_instances(self, instances: Mapping[str, str], *, flush: bool = True) -> None:
        """Every instance and its component type, after a reconfiguration added or removed
        some (the whole mapping: it replaces the previous one)."""
        self._append_record({"k": "instances", "v": dict(sorted(instances.items()))})
        if flush:
            self.flush()

    # the engine's fast path

    def append(self, line: str) -> None:
        """Buffer one record, already a JSON line ending with a newline (see the module
        docstring); `flush` writes it."""
        self._buffer.append(line)

    def flush(self) -> None:
        """Write the buffered records in one write and fdatasync them."""
        if self._buffer:
            self._check_open()
            self.write(self.take())

    def take(self) -> bytes:
        """The buffered records, to `write` elsewhere (the engine's journal thread); the
        buffer is empty after."""
        data = "".join(self._buffer).encode("utf-8")
        self._buffer.clear()
        return data

    def write(self, data: bytes) -> None:
        """Append `data` (whole records) and fdatasync it: durable on return. One writer at a
        time: the records are appended in the order they were taken."""
        if not data:
            return
        try:
            if self._fd is None:
                self._fd = self._open_file()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            raise JournalError(self._cannot(exc)) from None

    # internals

    def _at(self, at: float | None) -> float:
        return round(time.monotonic() - self._t0 if at is None else at, 6)

    def _append_record(self, record: Mapping[str, Any]) -> None:
        self._buffer.append(json.dumps(record, separators=(",", ":")) + "\n")

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise JournalError(f"the journal {self.path} is closed")

    def _cannot(self, exc: OSError) -> str:
        where = exc.filename or self.path
        return f"cannot write the journal {where}: {exc.strerror or exc}"

    def _open_file(self) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if created:
            _fsync_dir(self.directory)
        return fd

    def _start_fresh(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            history = make_private_dir(self.directory / HISTORY_DIR)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
            os.replace(self.path, history / f"{stamp}.jsonl")
            kept = sorted(history.glob("*.jsonl"))
            for old in kept[:-HISTORY_KEEP]:
                old.unlink()
            _fsync_dir(history)
        tmp = self.directory / f".{JOURNAL_FILE}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            header = {
                "k": "journal",
                "version": FORMAT_VERSION,
                "key": self.key,
                "file": self.file,
                "inventory": self.inventory,
            }
            os.write(fd, (json.dumps(header, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.directory)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, FILE_MODE)

    def _cut_torn_tail(self) -> None:
        """Drop a torn last record, so that appended records start on a line of their own."""
        with open(self.path, "rb") as handle:
            data = handle.read()
        _, valid, torn = _parse(data, str(self.path))
        if torn or valid < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(valid)
                handle.flush()
                os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_journal(
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey = None,
    *,
    base: str | os.PathLike[str] | None = None,
    command: Sequence[str] | None = None,
    simulate: bool = False,
) -> Journal:
    """Open the journal of this assembly file and inventory (`simulate`: the journal of its
    simulated runs), taking its lock.

    Raises JournalLocked (naming the holder) when another run holds it, JournalError when the
    directory cannot be created or written. Nothing is written to the journal itself until
    `begin_run` (or a `record_*`)."""
    import fcntl

    directory = state_dir(mad_path, inventory, base=base, simulate=simulate)
    argv = tuple(command) if command is not None else tuple(sys.argv)
    try:
        make_private_dir(directory)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        where = exc.filename or directory
        raise JournalError(
            f"cannot use the journal directory {where}: {exc.strerror or exc}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_of(fd)
        os.close(fd)
        raise JournalLocked(directory, holder) from None
    holder_info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _whoami(),
        "started_at": _utc_now(),
        "command": list(argv),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info).encode() + b"\n", 0)
        os.fsync(fd)
        # Fail now, before anything runs, if the journal itself cannot be written.
        journal_path = directory / JOURNAL_FILE
        probe = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.close(probe)
        os.chmod(directory, DIR_MODE)
    except OSError as exc:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        where = exc.filename or directory
        raise JournalError(f"cannot write the journal in {where}: {exc.strerror or exc}") from None
    return Journal(
        directory,
        fd,
        key=directory.name,
        file=os.path.realpath(os.fspath(mad_path)),
        inventory=inventory_identity(inventory),
        command=argv,
    )


def read_journal(
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey = None,
    *,
    base: str | os.PathLike[str] | None = None,
    simulate: bool = False,
) -> tuple[JournalState, LockHolder | None, Path]:
    """The journal of this assembly and inventory, without taking the lock (for `madeus
    status`): its state, who holds the lock now (None: nobody), and its directory."""
    directory = state_dir(mad_path, inventory, base=base, simulate=simulate)
    return read_state(directory / JOURNAL_FILE), read_lock_holder(directory), directory
