from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules, parse_entry
from smtpguard.suppression.store import EntryRow, open_store

from .smtp_fixtures import Certs, StartedRelays, Upstream, relay_settings, start_upstream


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """SMTPGUARD_TEST_LOOP=uvloop runs every in-process test on uvloop, as `serve` does where installed."""
    if os.environ.get("SMTPGUARD_TEST_LOOP") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A command run in-process (CliRunner) points logging at its own, soon closed, stderr: undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def upstream(certs: Certs) -> AsyncIterator[Upstream]:
    up = await start_upstream(Upstream(), certs)
    yield up
    assert up.server is not None
    up.server.close()


async def add_entries(
    db: Path, *entries: str, source: str = "lemlist", added: str = "2026-10-03T09:00:00+00:00"
) -> None:
    store = await open_store(db, MatchRules())
    try:
        rows = []
        for text in entries:
            e = parse_entry(text)
            rows.append(EntryRow(e.key, e.kind, e.original, source, "unsubscribed", added, None))
        await store.add_entries(rows)
    finally:
        await store.close()


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(tmp_path: Path, upstream: Upstream, certs: Certs) -> AsyncIterator[RelayFactory]:
    """Start a relay in front of the fixture upstream; `make_relay(policy={"mode": "strip"})`."""
    relays = StartedRelays()

    async def make(blocked: tuple[str, ...] = ("jane.doe@example.com", "@blocked.example"), **sections: Any) -> Relay:
        settings = relay_settings(tmp_path, upstream, certs, **sections)
        await add_entries(settings.store.path, *blocked)
        return await relays.start(settings)

    yield make
    await relays.stop_all()
