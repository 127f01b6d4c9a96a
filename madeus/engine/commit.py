"""Journal records written off the event loop, many at a time (group commit).

Records are buffered in the journal; the first one schedules, `COMMIT_INTERVAL` later, the
hand-over of everything buffered to one thread of the journal's own, which writes what it was
handed meanwhile in one write and one fdatasync. The loop never waits for the disk, and a
chain of short jobs pays one hand-over per interval, not one per job. A job whose action is
not safe to run again awaits `until_durable(seq)` (its start record's number) before the
action runs: that hands over at once. A crash loses at most the records of the last interval:
starts and ends of jobs that are safe to run again (a resume runs them again), and ends of
jobs that are not (a resume asks about them, as about any job cut off).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from queue import SimpleQueue

from madeus.engine.errors import JournalError
from madeus.engine.journal import Journal

COMMIT_INTERVAL = 0.005  # seconds between hand-overs, unless a job waits for durability


class GroupCommit:
    """Counts the records buffered (`jotted`) and those on disk (`durable`). `on_error` is
    called once, on the loop, when a write fails: nothing may be appended after the records
    it lost."""

    def __init__(self, journal: Journal, on_error: Callable[[JournalError], None]) -> None:
        self.journal = journal
        self.error: JournalError | None = None
        self.jotted = 0  # records buffered so far, in order
        self.durable = 0  # of them, how many are on disk
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _JournalThread | None = None
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._handed = 0  # records handed to the thread
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def start(self) -> None:
        """On the loop, before the run: from now on, records are written by the thread."""
        self._loop = asyncio.get_running_loop()
        self._writer = _JournalThread(self.journal, self._loop, self._on_durable)

    def jot(self, line: str) -> None:
        """Buffer a record (a JSON line ending with a newline)."""
        if self.error is not None:
            return
        self.journal.append(line)
        self.buffered(1)

    def buffered(self, count: int) -> None:
        """`count` records were appended to the journal's buffer (`Journal.record_*` with
        `flush=False`): the first one of a loop turn schedules their write."""
        if self.error is not None:
            return
        self.jotted += count
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._timer = self._loop.call_later(COMMIT_INTERVAL, self._on_interval)

    def _on_interval(self) -> None:
        self._scheduled = False
        self._hand_over()

    def _hand_over(self) -> None:
        if self.error is not None or self._handed == self.jotted:
            return
        if self._writer is None:  # not running: write here
            self.drain()
            return
        data = self.journal.take()
        self._handed = self.jotted
        if data:
            self._writer.hand(data, self.jotted)

    async def until_durable(self, seq: int) -> None:
        """Return once record number `seq` is on disk (CancelledError if a write failed)."""
        if self.durable >= seq:
            return
        assert self._loop is not None and self._writer is not None
        if self._handed < seq:
            self._hand_over()
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((seq, future))
        self._writer.wanted = True  # the thread wakes the loop when its write ends
        self._on_durable()  # it may have ended meanwhile
        await future

    def _on_durable(self, error: JournalError | None = None) -> None:
        """On the loop, when the journal thread wrote (or failed to) and a job waits."""
        if error is not None:
            self._failed(error)
            return
        durable = self._writer.durable if self._writer is not None else self.jotted
        self.durable = max(self.durable, durable)
        waiting = []
        for seq, future in self._waiters:
            if seq <= self.durable:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((seq, future))
        self._waiters = waiting
        if self._writer is not None:
            self._writer.wanted = bool(waiting)

    def drain(self) -> None:
        """At the end of a run: let the thread finish, then write the rest here."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._scheduled = False
        writer, self._writer = self._writer, None
        if writer is not None:
            error = writer.close()
            if error is not None:
                self._failed(error)
        if self.error is not None:
            return
        try:
            self.journal.flush()
            self.durable = self.jotted
        except JournalError as exc:
            self._failed(exc)

    def _failed(self, exc: JournalError) -> None:
        if self.error is not None:
            return
        self.error = exc
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters = []
        self._on_error(exc)


class _JournalThread:
    """Writes what the loop hands it, in order, everything handed meanwhile in one write and
    one fdatasync. It wakes the loop only when a job waits for durability (`wanted`): a wakeup
    in the middle of a job's sleep would cost it a millisecond of asyncio's timer rounding."""

    def __init__(
        self,
        journal: Journal,
        loop: asyncio.AbstractEventLoop,
        on_durable: Callable[[JournalError | None], None],
    ) -> None:
        self._journal = journal
        self._loop = loop
        self._on_durable = on_durable
        self._queue: SimpleQueue[tuple[bytes, int] | None] = SimpleQueue()
        self.durable = 0  # records on disk (a plain int: set here, read on the loop)
        self.wanted = False
        self.error: JournalError | None = None
        self._thread = threading.Thread(target=self._run, name="madeus-journal", daemon=True)
        self._thread.start()

    def hand(self, data: bytes, upto: int) -> None:
        self._queue.put((data, upto))

    def close(self) -> JournalError | None:
        """Write what was handed, stop; the error that stopped the writes, if one did."""
        self._queue.put(None)
        self._thread.join()
        return self.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            handed = [item for item in batch if item is not None]
            if handed and self.error is None:
                try:
                    self._journal.write(b"".join(data for data, _ in handed))
                except JournalError as exc:
                    self.error = exc
                    self._wake(exc)
                else:
                    self.durable = handed[-1][1]
                    if self.wanted:
                        self._wake(None)
            if None in batch:  # closed: everything handed before is written
                return

    def _wake(self, error: JournalError | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(self._on_durable, error)
