"""The audit writer batches: events arriving one by one are written in a few transactions, not one each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from smtpguard.smtp.audit import AuditWriter
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import Event, SQLiteStore, open_store, utc_now


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the writer's transactions."""

    writes = 0

    async def record_events(self, events: Sequence[Event]) -> None:
        self.writes += 1
        await super().record_events(events)


def event(i: int) -> Event:
    return Event(utc_now(), "rejected", "alice@corp.example", f"r{i}@x.example", "r@x.example", "t", "::1", "", "")


async def test_events_one_by_one_are_written_in_batches(tmp_path: Path) -> None:
    opened = await open_store(tmp_path / "list.db", MatchRules())
    assert isinstance(opened, SQLiteStore)
    await opened.close()
    store = await CountingStore.open(tmp_path / "list.db")
    assert isinstance(store, CountingStore)
    writer = AuditWriter(store, delay=0.2)
    writer.start()
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        for i in range(60):  # one every 5 ms for 0.3 s: what a busy relay's refusals look like
            writer.add(event(i))
            await asyncio.sleep(0.005)
        elapsed = loop.time() - start
        await asyncio.sleep(0.5)
        assert len(await store.events()) == 60
        # One write per 0.2 s delay, and one more for what came during it (before: one per
        # event once the first had waited, ~22).
        assert store.writes <= 2 * (elapsed / 0.2 + 1), (store.writes, elapsed)
    finally:
        await writer.close()
        await store.close()
