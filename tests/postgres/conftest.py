"""Fixtures for the PostgreSQL store: one private cluster per session, a fresh database per test.

Skipped, with the reason, when the server binaries are missing;
.ci/run installs them (scripts/install-postgres.sh) so CI runs these tests.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store.postgres import PostgresStore

from .cluster import Cluster, find_bin_dir

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/install-postgres.sh")
    cluster = Cluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def pg_dsn(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A new, empty database on the private cluster: tests never see each other's data."""
    name = f"t{next(_databases)}"
    admin = await asyncpg.connect(f"{pg_cluster.dsn_base}/postgres")
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield f"{pg_cluster.dsn_base}/{name}"


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_dsn, relay="relay-a")
    await store.ensure_rules(MatchRules())
    yield store
    await store.close()
