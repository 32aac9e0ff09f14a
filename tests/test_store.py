"""SQLiteStore on real SQLite files: schema, the list, matching, the audit log, users."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smtpguard.suppression.addresses import MatchRules, address_key, lookup_keys, parse_entry
from smtpguard.suppression.store import EntryRow, Event, SQLiteStore, StoreError, open_store
from smtpguard.suppression.store.sqlite import MIGRATIONS

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


def event(n: int, action: str = "rejected", sender: str = "Sales@Corp.example", time: str = "") -> Event:
    return Event(
        time=time or f"2024-03-{n:02d}T10:00:00+00:00",
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
    store: SQLiteStore, address: str, rules: MatchRules = RULES, today: str | None = None
) -> str | None:
    found = await store.match(lookup_keys(address_key(address, rules, strict=False)), today)
    return None if found is None else found.original


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


# --- adding and removing ---------------------------------------------------------


async def test_add_entries_counts_added_and_duplicates(store: SQLiteStore) -> None:
    first = await store.add_entries([row("jane@example.com"), row("@example.org")])
    assert (first.rows, first.added, first.duplicates) == (2, 2, 0)
    again = await store.add_entries(
        [
            row("Jane+news@Example.com", "hubspot"),  # same key as jane@example.com
            row("bob@example.com", "hubspot"),
            row("BOB@example.com", "hubspot"),  # duplicate inside the batch
            row("example.org", "hubspot"),
        ]
    )
    assert (again.rows, again.added, again.duplicates) == (4, 1, 3)
    # existing entries are kept as they were
    jane = await store.match(["jane@example.com"])
    assert jane is not None and (jane.original, jane.source) == ("jane@example.com", "lemlist")
    assert await store.count() == 3


async def test_add_entries_accepts_a_generator(store: SQLiteStore) -> None:
    result = await store.add_entries(row(f"user{i}@example.com") for i in range(5000))
    assert (result.rows, result.added) == (5000, 5000)
    assert await store.count() == 5000


async def test_dry_run_counts_but_writes_nothing(store: SQLiteStore) -> None:
    await store.add_entries([row("jane@example.com")])
    result = await store.add_entries([row("jane@example.com"), row("bob@example.com")], commit=False)
    assert (result.rows, result.added) == (2, 1)
    assert await store.count() == 1
    assert await store.match(["bob@example.com"]) is None


async def test_an_interrupted_import_leaves_the_list_as_it_was(store: SQLiteStore) -> None:
    await store.add_entries([row("jane@example.com")])

    class Broken(Exception):
        pass

    def rows() -> Iterator[EntryRow]:
        for i in range(1000):
            yield row(f"user{i}@example.com")
        raise Broken("the file went away")

    with pytest.raises(Broken):
        await store.add_entries(rows())
    assert await store.count() == 1
    assert await store.match(["user0@example.com"]) is None
    assert await store.match(["jane@example.com"]) is not None
    # no transaction left open: the next import works and is durable
    assert (await store.add_entries([row("bob@example.com")])).added == 1
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 2


async def test_remove(store: SQLiteStore) -> None:
    await store.add_entries([row("jane@example.com"), row("@example.org")])
    removed = await store.remove(["jane@example.com", "nobody@example.com", "@example.org"])
    assert removed == ["jane@example.com", "@example.org"]
    assert await blocked_by(store, "jane@example.com") is None
    assert await blocked_by(store, "x@example.org") is None
    assert await store.remove(["jane@example.com"]) == []


# --- matching -------------------------------------------------------------------------


async def test_match_picks_the_most_specific_entry(store: SQLiteStore) -> None:
    await store.add_entries(
        [
            row("@example.com", "domains"),
            row("@eu.example.com", "eu"),
            row("jane@eu.example.com", "people"),
        ]
    )
    assert await blocked_by(store, "Jane+x@EU.example.com") == "jane@eu.example.com"
    assert await blocked_by(store, "bob@eu.example.com") == "@eu.example.com"
    assert await blocked_by(store, "bob@mail.eu.example.com") == "@eu.example.com"
    assert await blocked_by(store, "bob@us.example.com") == "@example.com"
    assert await blocked_by(store, "bob@example.com") == "@example.com"
    assert await blocked_by(store, "bob@example.org") is None
    assert await blocked_by(store, "bob@notexample.com") is None
    found = await store.match(lookup_keys(address_key("jane@eu.example.com")))
    assert found is not None
    assert (found.key, found.kind, found.source, found.reason, found.added) == (
        "jane@eu.example.com",
        "address",
        "people",
        "unsubscribed",
        T0,
    )


async def test_match_follows_the_matching_rules(store: SQLiteStore) -> None:
    await store.add_entries([row("John.Doe@googlemail.com"), row("user@bücher.example")])
    assert await blocked_by(store, "johndoe+promo@GMAIL.com") == "John.Doe@googlemail.com"
    assert await blocked_by(store, "USER@xn--bcher-kva.example.") == "user@bücher.example"


async def test_expired_entries_no_longer_block(store: SQLiteStore) -> None:
    await store.add_entries(
        [
            row("jane@example.com", "people", expires="2024-06-01"),
            row("@example.com", "domains", expires="2024-07-01"),
            row("bob@example.org", expires="2024-06-01"),
        ]
    )
    assert await blocked_by(store, "jane@example.com", today="2024-05-31") == "jane@example.com"
    # from the expiry day on, the next most specific entry applies
    assert await blocked_by(store, "jane@example.com", today="2024-06-01") == "@example.com"
    assert await blocked_by(store, "jane@example.com", today="2024-07-01") is None
    assert await blocked_by(store, "bob@example.org", today="2024-06-01") is None
    # default "today" is the real one: these dates are long gone
    assert await blocked_by(store, "jane@example.com") is None


async def test_entries_that_expire_in_the_future_block_today(store: SQLiteStore) -> None:
    await store.add_entries([row("jane@example.com", expires="2999-01-01")])
    assert await blocked_by(store, "jane@example.com") == "jane@example.com"


# --- listing and stats -----------------------------------------------------------------


async def test_entries_filters(store: SQLiteStore) -> None:
    await store.add_entries(
        [
            row("zoe@example.com", "lemlist"),
            row("Anna_B@example.com", "hubspot"),
            row("annab@example.com", "hubspot"),
            row("@example.org", "lemlist"),
            row("100%real@example.com", "manual"),
        ]
    )
    everything = [e.key async for e in store.entries()]
    assert everything == sorted(everything) and len(everything) == 5
    # ordered by key: "anna_b@..." sorts before "annab@..."
    assert [e.original async for e in store.entries(source="hubspot")] == [
        "Anna_B@example.com",
        "annab@example.com",
    ]
    # search is a case-insensitive substring of key or original; % and _ are literal
    assert [e.original async for e in store.entries(search="ANNA_")] == ["Anna_B@example.com"]
    assert [e.original async for e in store.entries(search="0%r")] == ["100%real@example.com"]
    assert [e.original async for e in store.entries(source="lemlist", search="example")] == [
        "@example.org",
        "zoe@example.com",
    ]
    assert [e async for e in store.entries(source="nobody")] == []


async def test_stats(store: SQLiteStore) -> None:
    await store.add_entries(
        [
            row("a@example.com", "lemlist"),
            row("b@example.com", "lemlist", expires="2000-01-01"),
            row("@example.org", "lemlist"),
            row("c@example.com", "hubspot"),
        ]
    )
    await store.record_events(
        [event(1, "rejected"), event(2, "rejected"), event(3, "stripped"), event(20, "monitored")]
    )
    stats = await store.stats(since="2024-03-02")
    assert stats.entries_by_source_kind == [
        ("hubspot", "address", 1),
        ("lemlist", "address", 2),
        ("lemlist", "domain", 1),
    ]
    assert stats.expired == 1
    assert stats.events_by_action == {"rejected": 1, "stripped": 1, "monitored": 1}


# --- audit log ------------------------------------------------------------------------------


async def test_events_round_trip_and_filters(store: SQLiteStore) -> None:
    await store.record_events([])
    assert await store.events() == []
    written = [event(n, sender="Sales@Corp.example" if n % 2 else "boss@corp.example") for n in range(1, 11)]
    await store.record_events(written[:4])
    await store.record_events(written[4:])
    assert await store.events() == written
    assert await store.events(since="2024-03-08") == written[7:]
    assert await store.events(sender="sales@corp.EXAMPLE") == written[0::2]
    # the most recent ones, oldest first
    assert await store.events(limit=3) == written[7:]
    assert await store.events(since="2024-03-02", sender="boss@corp.example", limit=2) == [
        written[7],
        written[9],
    ]
    assert await store.events(limit=0) == []


# --- users --------------------------------------------------------------------------------------


async def test_users(store: SQLiteStore) -> None:
    assert await store.users() == []
    assert await store.user_hash("alice") is None
    assert await store.set_user("bob", "hash-b") is True
    assert await store.set_user("alice", "hash-1") is True
    created = dict(await store.users())["alice"]
    assert [name for name, _ in await store.users()] == ["alice", "bob"]
    assert await store.set_user("alice", "hash-2") is False
    assert await store.user_hash("alice") == "hash-2"
    assert dict(await store.users())["alice"] == created  # replacing keeps the creation time
    assert await store.remove_user("alice") is True
    assert await store.remove_user("alice") is False
    assert await store.user_hash("alice") is None
    assert [name for name, _ in await store.users()] == ["bob"]


async def test_users_survive_reopening(db: Path) -> None:
    store = await open_store(db, RULES)
    await store.set_user("alice", "hash-1")
    await store.close()
    store = await open_store(db, RULES)
    try:
        assert await store.user_hash("alice") == "hash-1"
    finally:
        await store.close()


# --- matching rules change ------------------------------------------------------------------------


async def test_ensure_rules_rekeys_when_the_rules_change(db: Path) -> None:
    store = await open_store(db, RULES)
    await store.add_entries([row("j.ohn@gmail.com"), row("jane+news@example.com"), row("@googlemail.com", "x")])
    assert await blocked_by(store, "john@gmail.com") == "j.ohn@gmail.com"
    assert await store.ensure_rules(RULES) == 0  # same rules: nothing to do
    await store.close()

    store = await open_store(db, NO_DOTS)
    try:
        assert await blocked_by(store, "john@gmail.com", NO_DOTS) is None
        assert await blocked_by(store, "j.ohn@gmail.com", NO_DOTS) == "j.ohn@gmail.com"
        assert await blocked_by(store, "x@googlemail.com", NO_DOTS) == "@googlemail.com"
        assert await blocked_by(store, "x@gmail.com", NO_DOTS) is None
        # the other rule still applies
        assert await blocked_by(store, "jane+other@example.com", NO_DOTS) == "jane+news@example.com"
        assert await store.ensure_rules(RULES) == 2  # and back
        assert await blocked_by(store, "john@gmail.com") == "j.ohn@gmail.com"
        assert await blocked_by(store, "x@gmail.com") == "@googlemail.com"
    finally:
        await store.close()


async def test_rekeying_keeps_the_older_of_two_entries_that_merge(db: Path) -> None:
    store = await open_store(db, NO_DOTS)
    await store.add_entries(
        [
            row("jo.hn@gmail.com", "new", added="2024-05-01T00:00:00+00:00", rules=NO_DOTS),
            row("j.ohn@gmail.com", "old", added="2024-01-01T00:00:00+00:00", rules=NO_DOTS),
        ]
    )
    await store.close()
    store = await open_store(db, RULES)
    try:
        assert await store.count() == 1
        found = await store.match(["john@gmail.com"])
        assert found is not None and found.source == "old"
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
    with pytest.raises(StoreError):
        await store.add_entries([row("jane@example.com")])
    with pytest.raises(StoreError):
        await store.remove(["jane@example.com"])
    with pytest.raises(StoreError):
        await store.record_events([event(1)])
