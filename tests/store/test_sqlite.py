"""SQLite-only behaviour: the file, migrations, WAL, the mmap reader, other processes, damage."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpguard.suppression.store import SQLiteStore, StoreError, open_store
from smtpguard.suppression.store.schema import MIGRATIONS

from .test_contract import RULES, T0, assert_writes_fail, blocked_by, row


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    s = await open_store(db, RULES)
    yield s
    await s.close()


def pragma(db: Path, name: str) -> object:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


# --- the file ------------------------------------------------------------------


async def test_fresh_file_is_migrated_and_in_wal_mode(store: SQLiteStore, db: Path) -> None:
    assert db.exists()
    assert pragma(db, "user_version") == len(MIGRATIONS)
    assert pragma(db, "journal_mode") == "wal"
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"entries", "events", "users", "meta"} <= tables


async def test_reopening_keeps_the_data(db: Path) -> None:
    store = await open_store(db, RULES)
    await store.add_entries([row("jane@example.com")])
    await store.close()
    store = await open_store(db, RULES, create=False)
    try:
        assert await blocked_by(store, "Jane@Example.com") == "jane@example.com"
        assert pragma(db, "user_version") == len(MIGRATIONS)
    finally:
        await store.close()


async def test_a_version_1_file_gains_sender_addresses_and_keeps_its_users(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO users VALUES ('alice', 'hash-a', '2026-01-01T00:00:00Z')")
        conn.execute("PRAGMA user_version=1")
    store = await open_store(db, RULES)
    try:
        assert await store.user_hash("alice") == "hash-a"
        assert await store.user_addresses("alice") == []
        assert await store.set_user_addresses("alice", ["alice@corp.example"])
        assert await store.user_addresses("alice") == ["alice@corp.example"]
    finally:
        await store.close()
    assert pragma(db, "user_version") == len(MIGRATIONS) >= 3  # the addresses came with migration 3


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "var" / "lib" / "s.db", RULES)
    await store.close()
    assert (tmp_path / "var" / "lib" / "s.db").exists()


async def test_a_file_from_a_newer_version_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match=r"newer.*upgrade smtpguard") as info:
        await open_store(db, RULES)
    assert str(db) in str(info.value)
    assert pragma(db, "user_version") == len(MIGRATIONS) + 1  # left alone


async def test_a_file_that_is_not_a_database_is_refused(db: Path) -> None:
    db.write_bytes(b"email\njane@example.com\n" * 200)
    with pytest.raises(StoreError, match="not a database") as info:
        await open_store(db, RULES)
    assert str(db) in str(info.value)


async def test_missing_file_without_create(db: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        await open_store(db, RULES, create=False)
    assert not db.exists()


async def test_users_survive_reopening(db: Path) -> None:
    store = await open_store(db, RULES)
    await store.set_user("alice", "hash-1")
    await store.close()
    store = await open_store(db, RULES)
    try:
        assert await store.user_hash("alice") == "hash-1"
    finally:
        await store.close()


# --- concurrency: imports take effect at the next RCPT ----------------------------------------------


async def test_an_import_by_another_connection_is_seen_at_the_next_match(store: SQLiteStore, db: Path) -> None:
    assert await blocked_by(store, "jane@example.com") is None
    other = await open_store(db, RULES)
    try:
        await other.add_entries([row("jane@example.com")])
    finally:
        await other.close()
    assert await blocked_by(store, "jane@example.com") == "jane@example.com"


_IMPORTER = """
import asyncio, sys
from smtpguard.suppression.addresses import MatchRules, parse_entry
from smtpguard.suppression.store import EntryRow, open_store

async def main():
    store = await open_store(sys.argv[1], MatchRules())
    texts = (f"user{i}@example.com" for i in range(20000))
    rows = (EntryRow(parse_entry(t).key, "address", t, "other-process", "unsubscribed",
                     "2024-01-01T00:00:00+00:00", None) for t in texts)
    print((await store.add_entries(rows)).added)
    await store.close()

asyncio.run(main())
"""


async def test_an_import_by_another_process_is_seen_at_the_next_match(store: SQLiteStore, db: Path) -> None:
    assert await blocked_by(store, "user19999@example.com") is None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IMPORTER, str(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # the reader keeps answering while the other process writes
    while proc.returncode is None:
        await blocked_by(store, "user0@example.com")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "20000"
    found = await store.match(["user19999@example.com"])
    assert found is not None and found.source == "other-process"


async def test_match_does_not_wait_for_an_import_in_progress(store: SQLiteStore, db: Path) -> None:
    await store.add_entries([row("jane@example.com")])
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO batches VALUES (99, 's', 'r', ?, NULL)", (T0,))
        writer.execute("INSERT INTO entries VALUES ('bob@example.com', 'address', NULL, 99)")
        start = time.perf_counter()
        assert await blocked_by(store, "jane@example.com") == "jane@example.com"
        assert await blocked_by(store, "bob@example.com") is None  # not committed yet
        assert time.perf_counter() - start < 0.1
        writer.execute("COMMIT")
        assert await blocked_by(store, "bob@example.com") == "bob@example.com"
    finally:
        writer.close()


# --- failures are StoreError, never sqlite3.Error (the relay answers 451 4.3.0) ---------------


async def test_match_on_a_broken_schema_raises_store_error(store: SQLiteStore, db: Path) -> None:
    await store.add_entries([row("jane@example.com")])
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE entries")
    with pytest.raises(StoreError, match=str(db)) as info:
        await blocked_by(store, "jane@example.com")
    assert not isinstance(info.value, sqlite3.Error)


async def test_match_on_a_corrupted_file_raises_store_error(store: SQLiteStore, db: Path) -> None:
    await store.add_entries([row(f"user{i}@example.com") for i in range(2000)])
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.write(b"\xde\xad\xbe\xef" * (size // 4))
    with pytest.raises(StoreError, match=str(db)):
        await blocked_by(store, "user1@example.com")


async def test_writes_on_a_broken_store_raise_store_error(store: SQLiteStore, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE entries")
        conn.execute("DROP TABLE events")
    await assert_writes_fail(store)
