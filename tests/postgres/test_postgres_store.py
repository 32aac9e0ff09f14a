"""PostgresStore on a real private PostgreSQL cluster: the same behaviours tests/test_store.py
checks for SQLite, plus what several relays on one database need."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import asyncpg
import pytest

from smtpguard.suppression.addresses import MatchRules, address_key, lookup_keys, parse_entry
from smtpguard.suppression.store import EntryRow, Event, StoreError
from smtpguard.suppression.store.postgres import PostgresStore
from smtpguard.suppression.store.postgres_schema import MIGRATIONS

RULES = MatchRules()
NO_DOTS = MatchRules(gmail_dots=False)
T0 = "2024-01-01T00:00:00+00:00"


def row(
    text: str,
    source: str = "lemlist",
    *,
    reason: str = "unsubscribed",
    added: str = T0,
    expires: str | None = None,
    rules: MatchRules = RULES,
) -> EntryRow:
    entry = parse_entry(text, rules)
    return EntryRow(entry.key, entry.kind, entry.original, source, reason, added, expires)


def event(n: int, action: str = "rejected", sender: str = "Sales@Corp.example") -> Event:
    return Event(
        time=f"2024-03-{n:02d}T10:00:00+00:00",
        action=action,  # type: ignore[arg-type]
        sender=sender,
        recipient=f"r{n}@example.com",
        entry=f"r{n}@example.com",
        source="lemlist",
        client="127.0.0.1",
        user="sales",
        message_id=f"<{n}@corp.example>",
    )


async def blocked_by(
    store: PostgresStore, address: str, rules: MatchRules = RULES, today: str | None = None
) -> str | None:
    found = await store.match(lookup_keys(address_key(address, rules, strict=False)), today)
    return None if found is None else found.original


async def open_store(dsn: str, rules: MatchRules = RULES, **kwargs: object) -> PostgresStore:
    store = await PostgresStore.open(dsn, **kwargs)  # type: ignore[arg-type]
    await store.ensure_rules(rules)
    return store


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


async def test_add_entries_counts_added_and_duplicates(pg_store: PostgresStore) -> None:
    first = await pg_store.add_entries([row("jane@example.com"), row("@example.org")])
    assert (first.rows, first.added, first.duplicates) == (2, 2, 0)
    again = await pg_store.add_entries(
        [
            row("Jane+news@Example.com", "hubspot"),  # same key as jane@example.com
            row("bob@example.com", "hubspot"),
            row("BOB@example.com", "hubspot"),  # duplicate inside the batch
            row("example.org", "hubspot"),
        ]
    )
    assert (again.rows, again.added, again.duplicates) == (4, 1, 3)
    jane = await pg_store.match(["jane@example.com"])
    assert jane is not None and (jane.original, jane.source) == ("jane@example.com", "lemlist")
    # inside one batch the first row offered for a key wins, as in SQLite
    bob = await pg_store.match(["bob@example.com"])
    assert bob is not None and bob.original == "bob@example.com"
    assert await pg_store.count() == 3


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


async def test_dry_run_counts_but_writes_nothing(pg_store: PostgresStore) -> None:
    await pg_store.add_entries([row("jane@example.com")])
    result = await pg_store.add_entries([row("jane@example.com"), row("bob@example.com")], commit=False)
    assert (result.rows, result.added) == (2, 1)
    assert await pg_store.count() == 1
    assert await pg_store.match(["bob@example.com"]) is None


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


async def test_remove(pg_store: PostgresStore) -> None:
    await pg_store.add_entries([row("jane@example.com"), row("@example.org")])
    removed = await pg_store.remove(["jane@example.com", "nobody@example.com", "@example.org", "jane@example.com"])
    assert removed == ["jane@example.com", "@example.org"]
    assert await blocked_by(pg_store, "jane@example.com") is None
    assert await blocked_by(pg_store, "x@example.org") is None
    assert await pg_store.remove(["jane@example.com"]) == []


# --- matching ----------------------------------------------------------------------------------


async def test_match_picks_the_most_specific_entry(pg_store: PostgresStore) -> None:
    await pg_store.add_entries(
        [row("@example.com", "domains"), row("@eu.example.com", "eu"), row("jane@eu.example.com", "people")]
    )
    assert await blocked_by(pg_store, "Jane+x@EU.example.com") == "jane@eu.example.com"
    assert await blocked_by(pg_store, "bob@eu.example.com") == "@eu.example.com"
    assert await blocked_by(pg_store, "bob@mail.eu.example.com") == "@eu.example.com"
    assert await blocked_by(pg_store, "bob@us.example.com") == "@example.com"
    assert await blocked_by(pg_store, "bob@example.org") is None
    assert await blocked_by(pg_store, "bob@notexample.com") is None
    found = await pg_store.match(lookup_keys(address_key("jane@eu.example.com")))
    assert found is not None
    assert (found.key, found.kind, found.source, found.reason, found.added) == (
        "jane@eu.example.com",
        "address",
        "people",
        "unsubscribed",
        T0,
    )


async def test_match_follows_the_matching_rules(pg_store: PostgresStore) -> None:
    await pg_store.add_entries([row("John.Doe@googlemail.com"), row("user@bücher.example")])
    assert await blocked_by(pg_store, "johndoe+promo@GMAIL.com") == "John.Doe@googlemail.com"
    assert await blocked_by(pg_store, "USER@xn--bcher-kva.example.") == "user@bücher.example"


async def test_expired_entries_no_longer_block(pg_store: PostgresStore) -> None:
    await pg_store.add_entries(
        [
            row("jane@example.com", "people", expires="2024-06-01"),
            row("@example.com", "domains", expires="2024-07-01"),
            row("bob@example.org", expires="2999-01-01"),
        ]
    )
    assert await blocked_by(pg_store, "jane@example.com", today="2024-05-31") == "jane@example.com"
    assert await blocked_by(pg_store, "jane@example.com", today="2024-06-01") == "@example.com"
    assert await blocked_by(pg_store, "jane@example.com", today="2024-07-01") is None
    assert await blocked_by(pg_store, "jane@example.com") is None  # the real today
    assert await blocked_by(pg_store, "bob@example.org") == "bob@example.org"


# --- listing and stats --------------------------------------------------------------------------


async def test_entries_filters(pg_store: PostgresStore) -> None:
    await pg_store.add_entries(
        [
            row("zoe@example.com", "lemlist"),
            row("Anna_B@example.com", "hubspot"),
            row("annab@example.com", "hubspot"),
            row("@example.org", "lemlist"),
            row("100%real@example.com", "manual"),
        ]
    )
    everything = [e.key async for e in pg_store.entries()]
    assert everything == sorted(everything) and len(everything) == 5
    assert [e.original async for e in pg_store.entries(source="hubspot")] == ["Anna_B@example.com", "annab@example.com"]
    assert [e.original async for e in pg_store.entries(search="ANNA_")] == ["Anna_B@example.com"]
    assert [e.original async for e in pg_store.entries(search="0%r")] == ["100%real@example.com"]
    assert [e.original async for e in pg_store.entries(source="lemlist", search="example")] == [
        "@example.org",
        "zoe@example.com",
    ]
    assert [e async for e in pg_store.entries(source="nobody")] == []


async def test_stats(pg_store: PostgresStore) -> None:
    await pg_store.add_entries(
        [
            row("a@example.com", "lemlist"),
            row("b@example.com", "lemlist", expires="2000-01-01"),
            row("@example.org", "lemlist"),
            row("c@example.com", "hubspot"),
        ]
    )
    await pg_store.record_events(
        [event(1, "rejected"), event(2, "rejected"), event(3, "stripped"), event(20, "monitored")]
    )
    stats = await pg_store.stats(since="2024-03-02")
    assert stats.entries_by_source_kind == [
        ("hubspot", "address", 1),
        ("lemlist", "address", 2),
        ("lemlist", "domain", 1),
    ]
    assert stats.expired == 1
    assert stats.events_by_action == {"rejected": 1, "stripped": 1, "monitored": 1}


# --- audit log and users -------------------------------------------------------------------------


async def test_events_round_trip_and_filters(pg_store: PostgresStore, pg_dsn: str) -> None:
    await pg_store.record_events([])
    assert await pg_store.events() == []
    written = [event(n, sender="Sales@Corp.example" if n % 2 else "boss@corp.example") for n in range(1, 11)]
    await pg_store.record_events(written[:4])
    await pg_store.record_events(written[4:])
    assert await pg_store.events() == written
    assert await pg_store.events(since="2024-03-08") == written[7:]
    assert await pg_store.events(sender="sales@corp.EXAMPLE") == written[0::2]
    assert await pg_store.events(limit=3) == written[7:]
    assert await pg_store.events(since="2024-03-02", sender="boss@corp.example", limit=2) == [written[7], written[9]]
    assert await pg_store.events(limit=0) == []
    assert await sql(pg_dsn, "SELECT array_agg(DISTINCT relay) FROM events") == ["relay-a"]


async def test_users(pg_store: PostgresStore) -> None:
    assert await pg_store.users() == []
    assert await pg_store.user_hash("alice") is None
    assert await pg_store.set_user("bob", "hash-b") is True
    assert await pg_store.set_user("alice", "hash-1") is True
    created = dict(await pg_store.users())["alice"]
    assert [name for name, _ in await pg_store.users()] == ["alice", "bob"]
    assert await pg_store.set_user("alice", "hash-2") is False
    assert await pg_store.user_hash("alice") == "hash-2"
    assert dict(await pg_store.users())["alice"] == created
    assert await pg_store.remove_user("alice") is True
    assert await pg_store.remove_user("alice") is False
    assert [name for name, _ in await pg_store.users()] == ["bob"]


# --- matching rules change ------------------------------------------------------------------------


async def test_ensure_rules_rekeys_when_the_rules_change(pg_dsn: str) -> None:
    store = await open_store(pg_dsn)
    await store.add_entries([row("j.ohn@gmail.com"), row("jane+news@example.com"), row("@googlemail.com", "x")])
    assert await store.ensure_rules(RULES) == 0
    await store.close()
    store = await open_store(pg_dsn, NO_DOTS)
    try:
        assert await blocked_by(store, "john@gmail.com", NO_DOTS) is None
        assert await blocked_by(store, "j.ohn@gmail.com", NO_DOTS) == "j.ohn@gmail.com"
        assert await blocked_by(store, "x@gmail.com", NO_DOTS) is None
        assert await blocked_by(store, "jane+other@example.com", NO_DOTS) == "jane+news@example.com"
        assert await store.ensure_rules(RULES) == 2
        assert await blocked_by(store, "john@gmail.com") == "j.ohn@gmail.com"
        assert await blocked_by(store, "x@gmail.com") == "@googlemail.com"
    finally:
        await store.close()


async def test_rekeying_keeps_the_older_of_two_entries_that_merge(pg_dsn: str) -> None:
    store = await open_store(pg_dsn, NO_DOTS)
    await store.add_entries(
        [
            row("jo.hn@gmail.com", "new", added="2024-05-01T00:00:00+00:00", rules=NO_DOTS),
            row("j.ohn@gmail.com", "old", added="2024-01-01T00:00:00+00:00", rules=NO_DOTS),
        ]
    )
    await store.close()
    store = await open_store(pg_dsn, RULES)
    try:
        assert await store.count() == 1
        found = await store.match(["john@gmail.com"])
        assert found is not None and found.source == "old"
    finally:
        await store.close()


# --- failures are StoreError, never an asyncpg error (the relay answers 451 4.3.0) -------------


async def test_match_on_a_broken_schema_raises_store_error(pg_store: PostgresStore, pg_dsn: str) -> None:
    await pg_store.add_entries([row("jane@example.com")])
    await sql(pg_dsn, "DROP TABLE entries")
    with pytest.raises(StoreError, match=r"store postgresql://127\.0\.0\.1:\d+/t\d+: .*entries") as info:
        await blocked_by(pg_store, "jane@example.com")
    assert not isinstance(info.value, asyncpg.PostgresError)
    await sql(pg_dsn, "DROP TABLE events")
    with pytest.raises(StoreError):
        await pg_store.add_entries([row("bob@example.com")])
    with pytest.raises(StoreError):
        await pg_store.remove(["jane@example.com"])
    with pytest.raises(StoreError):
        await pg_store.record_events([event(1)])
