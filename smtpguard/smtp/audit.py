"""The audit trail writer: events are queued by the relay and written in batches.

Writing each event at RCPT time would make the client wait for a database
round trip; batching keeps the SMTP path free of it.  `close()` flushes,
so a graceful stop loses nothing.
"""

from __future__ import annotations

import asyncio
import logging

from smtpguard.suppression.store import Event, Store, StoreError

log = logging.getLogger("smtpguard.audit")


class AuditWriter:
    def __init__(self, store: Store, *, batch: int = 200, delay: float = 0.2) -> None:
        self._store = store
        self._batch = batch
        self._delay = delay
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    def add(self, event: Event) -> None:
        self._pending.append(event)
        if len(self._pending) >= self._batch:
            self._wake.set()
        elif self._task is not None and not self._wake.is_set():
            asyncio.get_running_loop().call_later(self._delay, self._wake.set)

    async def flush(self) -> None:
        while self._pending:
            events, self._pending = self._pending, []
            try:
                await self._store.record_events(events)
            except StoreError as exc:
                # Keep them for the next try rather than lose the trail.
                log.error("audit log not written (%d events kept for retry): %s", len(events), exc)
                self._pending[:0] = events
                return

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
