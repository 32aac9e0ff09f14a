"""Fixtures for the PostgreSQL-only tests (see fixtures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smtpguard.suppression.store.postgres import PostgresStore

from .fixtures import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn", "pg_store"]


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_dsn, relay="relay-a")
    yield store
    await store.close()
