from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from smtpguard.suppression.addresses import MatchRules, parse_entry
from smtpguard.suppression.store import EntryRow, SQLiteStore, open_store
from smtpguard.sync.connectors import Http, RetryPolicy

from .stub_http import Handler, StubServer

StubFactory = Callable[[Handler], Awaitable[StubServer]]
RULES = MatchRules()


@pytest.fixture
async def stub() -> AsyncIterator[StubFactory]:
    """`server = await stub(handler)`: a provider API stub on 127.0.0.1."""
    servers: list[StubServer] = []

    async def start(handler: Handler) -> StubServer:
        server = await StubServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


class Sleeps(list[float]):
    """Records the waits a connector asked for, without waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def http(sleeps: Sleeps) -> AsyncIterator[Http]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield Http(client, RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0), sleep=sleeps)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    db = await open_store(tmp_path / "list.db", RULES)
    yield db
    await db.close()


async def seed(store: SQLiteStore, source: str, *texts: str, expires: str | None = None) -> None:
    rows = []
    for text in texts:
        e = parse_entry(text, RULES)
        rows.append(EntryRow(e.key, e.kind, e.original, source, "unsubscribed", "2026-10-01T09:00:00+00:00", expires))
    await store.add_entries(rows)


async def keys(store: SQLiteStore, source: str | None = None) -> set[str]:
    return {e.key async for e in store.entries(source=source)}
