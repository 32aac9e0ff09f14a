"""PostgresStore on a real private PostgreSQL cluster: what only PostgreSQL has.

The behaviours every backend shares are in the contract suite
(tests/store/test_contract.py, which runs over PostgreSQL too).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import asyncpg
import pytest

from smtpguard.config import Settings, StoreSettings
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.ingest import import_file, in_thread
from smtpguard.suppression.rules import change_rules
from smtpguard.suppression.store import EntryRow, SQLiteStore, StoreError, connect
from smtpguard.suppression.store.base import RowTuple
from smtpguard.suppression.store.postgres import PostgresStore
from smtpguard.suppression.store.postgres_schema import MIGRATIONS

from ..store.test_contract import NO_DOTS, RULES, assert_writes_fail, blocked_by, event, row


async def open_store(dsn: str, rules: MatchRules = RULES, **kwargs: object) -> PostgresStore:
    return await PostgresStore.open(dsn, rules=rules, **kwargs)  # type: ignore[arg-type]


async def sql(dsn: str, statement: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


# --- the schema ----------------------------------------------------------------------------


async def test_fresh_database_is_migrated(pg_store: PostgresStore, pg_dsn: str) -> None:
    assert await sql(pg_dsn, "SELECT max(version) FROM schema_version") == len(MIGRATIONS)
    tables = await sql(pg_dsn, "SELECT array_agg(tablename::text) FROM pg_tables WHERE schemaname = 'public'")
    assert isinstance(tables, list)
    assert {"batches", "entries", "events", "users", "meta", "schema_version"} <= set(tables)


async def test_reopening_keeps_the_data(pg_dsn: str) -> None:
    store = await open_store(pg_dsn)
    await store.add_entries([row("jane@example.com")])
    await store.close()
    store = await open_store(pg_dsn, create=False)
    try:
        assert await blocked_by(store, "Jane@Example.com") == "jane@example.com"
        assert await sql(pg_dsn, "SELECT count(*) FROM schema_version") == 1
    finally:
        await store.close()


async def test_a_database_from_a_newer_version_is_refused(pg_store: PostgresStore, pg_dsn: str) -> None:
    await sql(pg_dsn, f"UPDATE schema_version SET version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match=r"newer.*upgrade smtpguard") as info:
        await PostgresStore.open(pg_dsn)
    assert "127.0.0.1:" in str(info.value)
    assert await sql(pg_dsn, "SELECT version FROM schema_version") == len(MIGRATIONS) + 1  # left alone


async def test_an_empty_database_without_create_is_refused(pg_dsn: str) -> None:
    with pytest.raises(StoreError, match="no smtpguard schema"):
        await PostgresStore.open(pg_dsn, create=False)
    assert await sql(pg_dsn, "SELECT to_regclass('entries')") is None


# --- adding and removing -----------------------------------------------------------------------


async def test_inside_one_import_the_first_row_for_a_key_wins(pg_store: PostgresStore) -> None:
    # the staged rows are merged with DISTINCT ON: the order offered must decide, as in SQLite
    result = await pg_store.add_entries([row("bob@example.com", "a"), row("BOB@example.com", "b")])
    assert (result.rows, result.added) == (2, 1)
    bob = await pg_store.match(["bob@example.com"])
    assert bob is not None and (bob.original, bob.source) == ("bob@example.com", "a")


async def test_a_large_generator_is_streamed_off_the_event_loop(pg_store: PostgresStore) -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def rows() -> Iterator[EntryRow]:
        for i in range(50_000):  # several COPY chunks
            threads.add(threading.get_ident())
            yield row(f"user{i}@example.com", "big" if i % 2 else "small")
        yield row("user7@example.com")  # a duplicate after the first chunks

    result = await pg_store.add_entries(rows())
    assert (result.rows, result.added) == (50_001, 50_000)
    assert await pg_store.count() == 50_000
    assert loop_thread not in threads  # parsing never ran on the event loop
    found = await pg_store.match(["user49999@example.com"])
    assert found is not None and found.source == "big"


async def test_an_interrupted_import_leaves_the_list_as_it_was(pg_store: PostgresStore, pg_dsn: str) -> None:
    await pg_store.add_entries([row("jane@example.com")])

    class Broken(OSError):  # an OSError from a file is the caller's, not a database error
        pass

    def rows() -> Iterator[EntryRow]:
        for i in range(30_000):
            yield row(f"user{i}@example.com")
        raise Broken("the file went away")

    with pytest.raises(Broken, match="the file went away"):
        await pg_store.add_entries(rows())
    assert await pg_store.count() == 1
    assert await pg_store.match(["user0@example.com"]) is None
    assert await pg_store.match(["jane@example.com"]) is not None
    assert (await pg_store.add_entries([row("bob@example.com")])).added == 1
    assert await sql(pg_dsn, "SELECT count(*) FROM entries") == 2
    assert await sql(pg_dsn, "SELECT count(*) FROM batches") == 2


# --- audit log and users -------------------------------------------------------------------------


async def test_events_carry_the_relay_that_wrote_them(pg_store: PostgresStore, pg_dsn: str) -> None:
    await pg_store.record_events([event(1), event(2)])
    assert await sql(pg_dsn, "SELECT array_agg(DISTINCT relay) FROM events") == ["relay-a"]


async def test_a_rules_change_through_another_relay_is_seen_within_a_second(pg_dsn: str) -> None:
    a = await open_store(pg_dsn)
    b = await open_store(pg_dsn, NO_DOTS)  # the list keeps the rules it was created with
    try:
        assert await b.rules() == RULES
        await a.add_entries([row("j.ohn@gmail.com")])
        await change_rules(a, NO_DOTS)
        start = time.monotonic()
        while await b.rules() != NO_DOTS:
            assert time.monotonic() - start < 1.5
            await asyncio.sleep(0.05)
        assert await b.match(["j.ohn@gmail.com"]) is not None
        assert await b.match(["john@gmail.com"]) is None
    finally:
        await a.close()
        await b.close()


async def test_a_list_with_old_keys_is_rekeyed_when_opened(pg_dsn: str) -> None:
    store = await open_store(pg_dsn)
    await store.add_entries([row("jane@example.com")])
    await store.close()
    await sql(pg_dsn, "UPDATE meta SET value = 'subaddress=1;gmail_dots=1' WHERE name = 'rules'")  # no keys=
    settings = Settings(store=StoreSettings(url=pg_dsn))
    reopened = await connect(settings, create=False)
    try:
        assert await sql(pg_dsn, "SELECT value FROM meta WHERE name = 'rules'") == RULES.tag()
        assert await reopened.match(["jane@example.com"]) is not None
    finally:
        await reopened.close()


# --- failures are StoreError, never an asyncpg error (the relay answers 451 4.3.0) -------------


async def test_match_on_a_broken_schema_raises_store_error(pg_store: PostgresStore, pg_dsn: str) -> None:
    await pg_store.add_entries([row("jane@example.com")])
    await sql(pg_dsn, "DROP TABLE entries")
    with pytest.raises(StoreError, match=r"store postgresql://127\.0\.0\.1:\d+/t\d+: .*entries") as info:
        await blocked_by(pg_store, "jane@example.com")
    assert not isinstance(info.value, asyncpg.PostgresError)
    await sql(pg_dsn, "DROP TABLE events")
    await assert_writes_fail(pg_store, added="bob@example.com")


async def test_a_file_import_gives_the_same_counts_rejects_and_entries_as_sqlite(
    pg_store: PostgresStore, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    lines = ["Email;Name"] + [f"user{i}@example.com;U{i}" for i in range(10_000)]  # several ingest chunks
    lines += ["not an address;X", "USER7@Example.com;dup", "@example.org;domain"]
    export.write_text("\n".join(lines) + "\n")
    sqlite = await SQLiteStore.open(tmp_path / "list.db", rules=RULES)
    try:
        on_sqlite = await import_file(sqlite, export, source="crm")
        on_pg = await import_file(pg_store, export, source="crm")
        assert (on_pg.result, on_pg.stats, on_pg.rejects) == (on_sqlite.result, on_sqlite.stats, on_sqlite.rejects)
        assert on_pg.result.added == 10_001 and len(on_pg.rejects) == 1  # "@example.org" is a domain entry
        # the same entries, but for the import time (the second may have turned in between)
        assert [e._replace(added="") async for e in pg_store.entries()] == [
            e._replace(added="") async for e in sqlite.entries()
        ]
    finally:
        await sqlite.close()


def plain(entry: EntryRow) -> RowTuple:
    return cast(RowTuple, tuple(entry))


async def test_chunks_that_break_mid_import_leave_the_list_as_it_was(pg_store: PostgresStore) -> None:
    # ingest's path for this store: chunks parsed in a worker thread (in_thread)
    await pg_store.add_entries([row("jane@example.com")])

    def rows() -> Iterator[RowTuple]:
        for i in range(30_000):
            yield plain(row(f"user{i}@example.com"))
        raise OSError("the file went away")

    with pytest.raises(OSError, match="the file went away"):
        await pg_store.add_entries(in_thread(rows()))
    assert await pg_store.count() == 1
    assert (await pg_store.add_entries(in_thread(iter([plain(row("bob@example.com"))])))).added == 1
