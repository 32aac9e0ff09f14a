"""Where the RCPT lookup's query runs: on the event loop's thread when that is safe, else its own thread.

A lookup is a few primary-key probes: ~15 µs on the loop's thread, against
~50-70 µs of CPU for a hand-off to a thread under load. But a lock held from
outside on the WAL index (its read marks) makes SQLite retry for ~10 s inside
one statement, with no way to interrupt it (a progress handler is never
called there: measured, 0 calls in 9.99 s), and the loop must never wait for
that. So `InlineGuard` first asks the kernel (fcntl F_GETLK on SQLite's own
-shm descriptor: one syscall) whether another process holds those locks
exclusively; only when none does, and the thread has nothing queued (the
reader is never used by two threads at once), does the query run inline,
under a progress-handler deadline. Otherwise it goes to `LookupThread`: one
queue put, one future, one `call_soon_threadsafe`, and a single watchdog
timer for every lookup in flight.

Stuck means one query inside SQLite for `LOOKUP_TIMEOUT`: every lookup
waiting then fails at once, and new ones fail without queueing until that
query returns. A lookup merely waiting for a busy machine is given up to
`LOOKUP_LIMIT`, so that load alone does not fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not on Unix: every lookup goes to the thread
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
LOOKUP_TIMEOUT = 0.25  # seconds inside SQLite; then the lookup fails closed (StoreError -> 451)
LOOKUP_LIMIT = 2.0  # seconds in all, waiting for the lookup thread included
_WATCH_EVERY = LOOKUP_TIMEOUT / 5
# SQLite's WAL-index locks are bytes of the -shm file from 120 (wal.c): write,
# checkpoint, recover, then the read marks 0-4. A reader waits on recover and
# the read marks; a writer's own lock never makes it wait.
_RECOVER_AND_READ_MARKS = (122, 6)
_FLOCK = "hhqqi4x"  # struct flock (Linux): l_type, l_whence, l_start, l_len, l_pid
_PROGRESS_EVERY = 1000  # SQLite VM steps between deadline checks (a lookup takes ~100)

Query = Callable[[sqlite3.Connection], Any]
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", sqlite3.Connection, Query]


class LookupStuck(Exception):
    """No answer within the deadline (see the module docstring)."""


class LookupThread:
    """One daemon thread running queries in order; started on first use."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None  # when the query running now began (monotonic)
        self._waiting: dict[asyncio.Future[Any], float] = {}  # lookups in flight -> queued at (loop time)
        self._watch: asyncio.TimerHandle | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._queued = 0  # jobs submitted and not settled yet

    @property
    def idle(self) -> bool:
        """Nothing queued nor running: the reader is free for the loop's thread."""
        return self._queued == 0

    def stuck(self) -> bool:
        since = self._busy_since
        return since is not None and time.monotonic() - since >= LOOKUP_TIMEOUT

    async def run(self, reader: sqlite3.Connection, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(reader)` in the thread; LookupStuck past the deadline, SQLite's errors as raised."""
        if self.stuck():
            raise LookupStuck
        loop = asyncio.get_running_loop()
        future = self._submit(loop, reader, query)
        self._waiting[future] = loop.time()
        if self._watch is None or self._watch_loop is not loop:
            self._watch, self._watch_loop = loop.call_later(_WATCH_EVERY, self._check, loop), loop
        try:
            result: T = await future
            return result
        finally:
            self._waiting.pop(future, None)

    async def finally_run(self, reader: sqlite3.Connection, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(reader)` after every lookup queued before it, however long that takes (closing)."""
        return await self._submit(asyncio.get_running_loop(), reader, query)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """The thread ends once the queries queued so far are done."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _submit(self, loop: asyncio.AbstractEventLoop, reader: sqlite3.Connection, query: Query) -> asyncio.Future[Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="smtpguard-lookup", daemon=True)
            self._thread.start()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, reader, query))
        self._queued += 1
        return future

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watchdog: fail what waited too long; again later while anything waits."""
        now, stuck = loop.time(), self.stuck()
        for future, since in list(self._waiting.items()):
            if future.done():
                del self._waiting[future]
            elif stuck or now - since >= LOOKUP_LIMIT:
                del self._waiting[future]
                future.set_exception(LookupStuck())
        self._watch = loop.call_later(_WATCH_EVERY, self._check, loop) if self._waiting else None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, reader, query = job
            error: BaseException | None = None
            result: Any = None
            if not future.cancelled():  # else its caller is gone (a client hung up): skip the query
                self._busy_since = time.monotonic()
                try:
                    result = query(reader)
                except BaseException as exc:  # handed to the caller, whatever it is
                    error = exc
                finally:
                    self._busy_since = None
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._settle, future, result, error)

    def _settle(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self._queued -= 1
        if future.done():  # given up on (deadline, cancelled) meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class InlineGuard:
    """Whether a query on `reader` may run on the loop's thread now; runs it there under the deadline."""

    def __init__(self, reader: sqlite3.Connection, shm: Path) -> None:
        self._reader = reader
        self._shm = shm
        self._fd: int | None = None  # SQLite's own descriptor of the -shm file, found once it is open
        self._searched = False
        self._deadline = math.inf
        self._probe = struct.pack(_FLOCK, fcntl.F_RDLCK, os.SEEK_SET, *_RECOVER_AND_READ_MARKS, 0) if fcntl else b""

    def clear(self) -> bool:
        """No other process holds the WAL index's recover or read-mark locks exclusively."""
        if self._fd is None:
            return False
        try:
            answer = fcntl.fcntl(self._fd, fcntl.F_GETLK, self._probe)
        except OSError:
            self._fd = None
            return False
        return bool(struct.unpack(_FLOCK, answer)[0] == fcntl.F_UNLCK)

    def run(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(reader)` here and now; LookupStuck when it outlives LOOKUP_TIMEOUT."""
        self._deadline = time.monotonic() + LOOKUP_TIMEOUT
        try:
            return query(self._reader)
        except sqlite3.OperationalError:
            if time.monotonic() >= self._deadline:
                raise LookupStuck from None
            raise
        finally:
            self._deadline = math.inf

    def search(self) -> None:
        """Find SQLite's descriptor of the -shm file, once, after a first query opened it (thread side)."""
        if self._searched or fcntl is None:
            return
        self._searched = True
        self._reader.set_progress_handler(self._overdue, _PROGRESS_EVERY)
        self._fd = _descriptor_of(self._shm)

    def _overdue(self) -> bool:
        return time.monotonic() >= self._deadline  # True: SQLite stops the statement ("interrupted")


def _descriptor_of(path: Path) -> int | None:
    """An open descriptor of this process on the file at `path` (/proc/self/fd), or None."""
    try:
        want = os.stat(path)
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        with contextlib.suppress(OSError):
            st = os.fstat(int(name))
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return int(name)
    return None
