"""The Store contract: every backend (SQLite file, in memory, PostgreSQL) passes these.

The PostgreSQL case runs on a private cluster (tests/postgres/fixtures.py) and is
skipped, saying why, where the server binaries are not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smtpguard.suppression.addresses import MatchRules, address_key, lookup_keys, parse_entry
from smtpguard.suppression.rules import change_rules
from smtpguard.suppression.store import EntryRow, Event, MemoryStore, SQLiteStore, Store, StoreError

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


async def blocked_by(store: Store, address: str, rules: MatchRules = RULES, today: str | None = None) -> str | None:
    found = await store.match(lookup_keys(address_key(address, rules, strict=False)), today)
    return None if found is None else found.original


async def assert_writes_fail(store: Store, added: str = "jane@example.com") -> None:
    """On a store whose tables are gone, every kind of write raises StoreError."""
    with pytest.raises(StoreError):
        await store.add_entries([row(added)])
    with pytest.raises(StoreError):
        await store.remove(["jane@example.com"])
    with pytest.raises(StoreError):
        await store.record_events([event(1)])


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore(RULES)
    elif request.param == "postgres":
        from smtpguard.suppression.store.postgres import PostgresStore

        s = await PostgresStore.open(request.getfixturevalue("pg_dsn"), rules=RULES)
    else:
        s = await SQLiteStore.open(tmp_path / "s.db", rules=RULES)
    yield s
    await s.close()


# --- adding and removing ---------------------------------------------------------


async def test_add_entries_counts_added_and_duplicates(store: Store) -> None:
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


async def test_add_entries_accepts_a_generator(store: Store) -> None:
    result = await store.add_entries(row(f"user{i}@example.com") for i in range(5000))
    assert (result.rows, result.added) == (5000, 5000)
    assert await store.count() == 5000


async def test_dry_run_counts_but_writes_nothing(store: Store) -> None:
    await store.add_entries([row("jane@example.com")])
    result = await store.add_entries([row("jane@example.com"), row("bob@example.com")], commit=False)
    assert (result.rows, result.added) == (2, 1)
    assert await store.count() == 1
    assert await store.match(["bob@example.com"]) is None


async def test_an_interrupted_import_leaves_the_list_as_it_was(store: Store) -> None:
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
    # no transaction left open: the next import works
    assert (await store.add_entries([row("bob@example.com")])).added == 1
    assert await store.count() == 2


async def test_remove(store: Store) -> None:
    await store.add_entries([row("jane@example.com"), row("@example.org")])
    removed = await store.remove(["jane@example.com", "nobody@example.com", "@example.org"])
    assert removed == ["jane@example.com", "@example.org"]
    assert await blocked_by(store, "jane@example.com") is None
    assert await blocked_by(store, "x@example.org") is None
    assert await store.remove(["jane@example.com"]) == []


# --- matching -------------------------------------------------------------------------


async def test_match_picks_the_most_specific_entry(store: Store) -> None:
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


async def test_match_follows_the_matching_rules(store: Store) -> None:
    await store.add_entries([row("John.Doe@googlemail.com"), row("user@bücher.example")])
    assert await blocked_by(store, "johndoe+promo@GMAIL.com") == "John.Doe@googlemail.com"
    assert await blocked_by(store, "USER@xn--bcher-kva.example.") == "user@bücher.example"


async def test_expired_entries_no_longer_block(store: Store) -> None:
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


async def test_entries_that_expire_in_the_future_block_today(store: Store) -> None:
    await store.add_entries([row("jane@example.com", expires="2999-01-01")])
    assert await blocked_by(store, "jane@example.com") == "jane@example.com"


# --- listing and stats -----------------------------------------------------------------


async def test_entries_filters(store: Store) -> None:
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


async def test_stats(store: Store) -> None:
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


async def test_events_round_trip_and_filters(store: Store) -> None:
    await store.record_events([])
    assert await store.events() == []
    written = [event(n, sender="Sales@Corp.example" if n % 2 else "boss@corp.example") for n in range(1, 11)]
    await store.record_events(written[:4])
    await store.record_events(written[4:])

    async def events(**kwargs: Any) -> list[Event]:
        # A shared store (PostgreSQL) stamps each event with the relay that wrote it.
        return [replace(e, relay="") for e in await store.events(**kwargs)]

    assert await events() == written
    assert await events(since="2024-03-08") == written[7:]
    assert await events(sender="sales@corp.EXAMPLE") == written[0::2]
    # the most recent ones, oldest first
    assert await events(limit=3) == written[7:]
    assert await events(since="2024-03-02", sender="boss@corp.example", limit=2) == [
        written[7],
        written[9],
    ]
    assert await events(limit=0) == []


# --- users --------------------------------------------------------------------------------------


async def test_web_roles(store: Store) -> None:
    assert await store.set_web_role("carol", "editor") is False  # no such user
    assert await store.web_role("carol") is None
    await store.set_user("carol", "hash-c")
    assert await store.web_role("carol") is None  # a mail account is not a web account
    assert await store.set_web_role("carol", "editor") is True
    assert await store.web_role("carol") == "editor"
    assert await store.set_web_role("carol", "admin") is True
    assert await store.web_role("carol") == "admin"
    await store.set_user("carol", "hash-c2")  # a new password keeps the role
    assert await store.web_role("carol") == "admin"
    assert await store.set_web_role("carol", None) is True
    assert await store.web_role("carol") is None
    await store.set_web_role("carol", "viewer")
    assert await store.remove_user("carol") is True
    await store.set_user("carol", "hash-c3")  # a new account of the same name starts without a role
    assert await store.web_role("carol") is None


async def test_users(store: Store) -> None:
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


async def test_user_sender_addresses(store: Store) -> None:
    assert await store.set_user_addresses("nobody", ["x@example.com"]) is False
    await store.set_user("alice", "hash-1")
    assert await store.user_addresses("alice") == []  # any sender, as before
    assert await store.set_user_addresses("alice", ["alice@corp.example", "sales@corp.example"]) is True
    assert await store.user_addresses("alice") == ["alice@corp.example", "sales@corp.example"]
    await store.set_user("alice", "hash-2")  # a new password keeps the addresses
    assert await store.user_addresses("alice") == ["alice@corp.example", "sales@corp.example"]
    assert await store.set_user_addresses("alice", []) is True
    assert await store.user_addresses("alice") == []
    await store.set_user_addresses("alice", ["alice@corp.example"])
    await store.remove_user("alice")
    await store.set_user("alice", "hash-3")  # a new account with the old name starts unbound
    assert await store.user_addresses("alice") == []


async def test_api_tokens(store: Store) -> None:
    assert await store.tokens() == []
    assert await store.add_token("crm", "write", "h1") is True
    assert await store.add_token("grafana", "read", "h2") is True
    assert await store.add_token("crm", "read", "h3") is False  # a name is taken once
    assert [(t.name, t.scope) for t in await store.tokens()] == [("crm", "write"), ("grafana", "read")]
    found = await store.token_by_hash("h1")
    assert found is not None and (found.name, found.scope) == ("crm", "write")
    assert await store.token_by_hash("h3") is None
    assert await store.remove_token("crm") is True
    assert await store.remove_token("crm") is False
    assert await store.token_by_hash("h1") is None


# --- matching rules: the list's own, changed only by change_rules ----------------------


async def test_a_new_list_keeps_the_rules_it_was_created_with(store: Store) -> None:
    assert await store.rules() == RULES


async def test_change_rules_rekeys_and_keeps_the_new_rules(store: Store) -> None:
    await store.add_entries([row("j.ohn@gmail.com"), row("jane+news@example.com"), row("@googlemail.com", "x")])
    assert await blocked_by(store, "john@gmail.com") == "j.ohn@gmail.com"
    assert await change_rules(store, RULES) == 0  # same rules: nothing to do

    assert await change_rules(store, NO_DOTS) == 2
    assert await store.rules() == NO_DOTS
    assert await blocked_by(store, "john@gmail.com", NO_DOTS) is None
    assert await blocked_by(store, "j.ohn@gmail.com", NO_DOTS) == "j.ohn@gmail.com"
    assert await blocked_by(store, "x@googlemail.com", NO_DOTS) == "@googlemail.com"
    assert await blocked_by(store, "x@gmail.com", NO_DOTS) is None
    # the other rule still applies
    assert await blocked_by(store, "jane+other@example.com", NO_DOTS) == "jane+news@example.com"
    assert await change_rules(store, RULES) == 2  # and back
    assert await blocked_by(store, "john@gmail.com") == "j.ohn@gmail.com"
    assert await blocked_by(store, "x@gmail.com") == "@googlemail.com"


async def test_rekeying_keeps_the_older_of_two_entries_that_merge(store: Store) -> None:
    await change_rules(store, NO_DOTS)
    await store.add_entries(
        [
            row("jo.hn@gmail.com", "new", added="2024-05-01T00:00:00+00:00", rules=NO_DOTS),
            row("j.ohn@gmail.com", "old", added="2024-01-01T00:00:00+00:00", rules=NO_DOTS),
            row("john@gmail.com", "newest", added="2024-06-01T00:00:00+00:00", rules=NO_DOTS),
        ]
    )
    assert await change_rules(store, RULES) == 3
    assert await store.count() == 1
    found = await store.match(["john@gmail.com"])
    assert found is not None and found.source == "old"


# --- per person, retention ------------------------------------------------------------------------


async def test_events_by_user_and_counts_by_user_or_sender(store: Store) -> None:
    from dataclasses import replace

    written = [
        replace(event(n, sender="Sales@Corp.example" if n % 3 else "boss@corp.example"), user="ann" if n % 2 else "bob")
        for n in range(1, 8)
    ]
    await store.record_events(written)

    async def events(**kwargs: Any) -> list[Event]:
        return [replace(e, relay="") for e in await store.events(**kwargs)]  # PostgreSQL stamps the relay

    assert await events(user="bob") == [e for e in written if e.user == "bob"]
    assert await events(user="bob", limit=1) == [written[5]]
    assert await store.event_counts("2024-01-01", "user", 10) == [("ann", 4), ("bob", 3)]
    assert await store.event_counts("2024-01-01", "sender", 10) == [("sales@corp.example", 5), ("boss@corp.example", 2)]
    assert await store.event_counts("2024-03-06", "user", 1) == [("ann", 1)]  # ties: by name
    assert await store.event_counts("2025-01-01", "user", 5) == []


async def test_prune_events_deletes_only_older_ones(store: Store) -> None:
    written = [event(n) for n in range(1, 6)]
    await store.record_events(written)
    assert await store.prune_events("2024-03-03T10:00:00+00:00") == 2
    assert [replace(e, relay="") for e in await store.events()] == written[2:]  # PostgreSQL stamps the relay
    assert await store.prune_events("2024-03-03T10:00:00+00:00") == 0


# --- whole sources --------------------------------------------------------------------------------


async def test_replace_source_makes_it_exactly_the_rows(store: Store) -> None:
    await store.add_entries(
        [row("stays@x.com"), row("goes@x.com"), row("old@x.com", expires="2020-01-01"), row("other@x.com", "manual")]
    )
    wanted = [row("stays@x.com", added=utc()), row("new@x.com", added=utc()), row("old@x.com", added=utc())]
    wanted.append(row("other@x.com", added=utc()))  # listed by hand: left as it is
    dry = await store.replace_source("lemlist", wanted, commit=False)
    assert (sorted(dry.added), dry.removed, dry.unchanged, dry.elsewhere) == (
        ["new@x.com", "old@x.com"],
        ("goes@x.com",),
        1,
        1,
    )
    assert await store.count() == 4  # a dry run changes nothing
    done = await store.replace_source("lemlist", wanted)
    assert done == dry
    assert sorted(e.key for e in [e async for e in store.entries(source="lemlist")]) == [
        "new@x.com",
        "old@x.com",
        "stays@x.com",
    ]
    assert await blocked_by(store, "old@x.com") == "old@x.com"  # expired, listed again: blocks again
    assert await blocked_by(store, "goes@x.com") is None
    assert (await store.match(["other@x.com"])).source == "manual"  # type: ignore[union-attr]


async def test_replace_source_guard_refuses_and_nothing_changes(store: Store) -> None:
    await store.add_entries([row("a@x.com"), row("b@x.com")])
    seen: list[tuple[int, int, int]] = []

    def guard(current: int, removing: int, after: int) -> None:
        seen.append((current, removing, after))
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await store.replace_source("lemlist", [], guard=guard)
    assert seen == [(2, 2, 0)]
    assert await store.count() == 2


async def test_remove_source(store: Store) -> None:
    await store.add_entries([row("a@x.com"), row("b@x.com"), row("c@x.com", "manual")])
    assert await store.remove_source("lemlist") == 2
    assert [e.key async for e in store.entries()] == ["c@x.com"]
    assert await store.remove_source("lemlist") == 0


def utc() -> str:
    from smtpguard.suppression.store import utc_now

    return utc_now()


async def test_allow_entries_are_stored_and_the_most_specific_entry_wins(store: Store) -> None:
    from smtpguard.suppression.verdict import check_address, match_address

    allow = row("jane@x.com")._replace(kind="allow")
    sub = row("@sales.x.com")._replace(kind="allow")
    await store.add_entries([row("@x.com"), allow, sub, row("@eu.sales.x.com")])
    assert (await match_address(store, "jane@x.com")) == allow
    assert await check_address(store, "jane@x.com") is None
    assert await check_address(store, "a@sales.x.com") is None
    assert (await check_address(store, "bob@x.com")).key == "@x.com"  # type: ignore[union-attr]
    assert (await check_address(store, "a@eu.sales.x.com")).key == "@eu.sales.x.com"  # type: ignore[union-attr]
