"""The RCPT lookup's own thread: queries on a plain `sqlite3` reader, under a deadline.

Why a thread at all: a lock held from outside on the WAL index (its read
marks) makes SQLite retry for ~10 s inside one statement, with no way to
interrupt it (a progress handler is never called there: measured, 0 calls in
9.99 s), and the event loop must never wait for that. Why not an executor:
`run_in_executor` plus a polling `asyncio.wait` cost ~100 µs of CPU per
lookup under load, five times the query; here a lookup is one queue put,
one future and one `call_soon_threadsafe`, and a single watchdog timer
serves every lookup in flight.

Stuck means one query inside SQLite for `LOOKUP_TIMEOUT`: every lookup
waiting then fails at once, and new ones fail without queueing until that
query returns. A lookup merely waiting for a busy machine is given up to
`LOOKUP_LIMIT`, so that load alone does not fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
LOOKUP_TIMEOUT = 0.25  # seconds inside SQLite; then the lookup fails closed (StoreError -> 451)
LOOKUP_LIMIT = 2.0  # seconds in all, waiting for the lookup thread included
_WATCH_EVERY = LOOKUP_TIMEOUT / 5

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
            if future.cancelled():  # its caller is gone (a client hung up): skip the query
                continue
            error: BaseException | None = None
            result: Any = None
            self._busy_since = time.monotonic()
            try:
                result = query(reader)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            finally:
                self._busy_since = None
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # given up on (deadline, cancelled) meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
