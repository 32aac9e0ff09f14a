"""The audit trail writer: events are queued by the relay and written in batches.

Writing each event at RCPT time would make the client wait for a database
round trip; batching keeps the SMTP path free of it.  `close()` flushes,
so a graceful stop loses nothing.

When the store cannot take them (disk full, read-only file), events wait in
memory for the next try, but at most `max_pending` of them: beyond that the
oldest are dropped, counted, and logged at error, so a long outage cannot
exhaust the relay's memory.  Mail keeps flowing: lookups only read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from smtpguard.metrics import METRICS
from smtpguard.suppression.store import Event, Store, StoreError

log = logging.getLogger("smtpguard.audit")


MAX_PENDING = 50_000  # events kept for retry while the store fails (~10 MB)


class AuditWriter:
    def __init__(self, store: Store, *, batch: int = 200, delay: float = 0.2, max_pending: int = MAX_PENDING) -> None:
        self._store = store
        self._batch = batch
        self._delay = delay
        self._pending: deque[Event] = deque(maxlen=max_pending)
        self.dropped = 0  # events lost because the store failed too long
        self._dropped_logged = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the delayed wake-up, one at a time
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, event: Event) -> None:
        METRICS.inc("smtpguard_recipients_total", action=event.action, source=event.source)
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque lets go of the oldest
        self._pending.append(event)
        if len(self._pending) >= self._batch:
            self._wake.set()
        elif self._task is not None and self._timer is None and not self._wake.is_set():
            # One timer for the batch: one per event would wake the writer (a
            # transaction) for nearly every event once the first had waited.
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            events = list(self._pending)
            self._pending.clear()
            try:
                await self._store.record_events(events)
            except StoreError as exc:
                # Keep them for the next try rather than lose the trail, the newest first.
                kept = events + list(self._pending)
                limit = self._pending.maxlen or len(kept)
                self.dropped += max(0, len(kept) - limit)
                self._pending.clear()
                self._pending.extend(kept[-limit:])
                log.error("audit log not written (%d events kept for retry): %s", len(self._pending), exc)
                self._log_dropped()
                return
        self._log_dropped()

    def _log_dropped(self) -> None:
        if self.dropped > self._dropped_logged:
            log.error(
                "audit log: %d events dropped (%d in all), the oldest, because the store failed for too long",
                self.dropped - self._dropped_logged,
                self.dropped,
            )
            self._dropped_logged = self.dropped

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
