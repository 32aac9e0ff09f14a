"""A source sync over a real SQLite store: exact set, counts, the drop guard."""

from __future__ import annotations

import pytest

from smtpguard.suppression.addresses import address_key
from smtpguard.suppression.store import SQLiteStore
from smtpguard.sync.connectors import ConnectorError, Http, LemlistUnsubscribes
from smtpguard.sync.sync import DropGuard, SyncRefused, next_delay, pull, sync_source

from .conftest import RULES, StubFactory, keys, seed
from .stub_http import StubRequest, StubResponse


def k(text: str) -> str:
    return address_key(text, RULES)


async def test_entries_of_a_source_become_exactly_the_fetched_set(store: SQLiteStore) -> None:
    await seed(store, "lemlist", "a@example.com", "b@example.com", "c@example.com")
    await seed(store, "manual", "boss@example.com", "x@example.com")

    fetched = ["a@example.com", "B@Example.com", "new@example.com", "x@example.com", "@rival.example", "junk"]
    result = await sync_source(store, "lemlist", fetched, rules=RULES)

    assert (result.added, result.removed, result.unchanged, result.elsewhere) == (2, 1, 2, 1)
    assert result.invalid == ["junk"]
    assert await keys(store, "lemlist") == {
        k("a@example.com"),
        k("b@example.com"),
        k("new@example.com"),
        "@rival.example",
    }
    # another source's entries are never touched, nor taken over
    assert await keys(store, "manual") == {k("boss@example.com"), k("x@example.com")}

    again = await sync_source(store, "lemlist", fetched, rules=RULES)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 4)


async def test_an_empty_fetch_never_empties_a_source(store: SQLiteStore) -> None:
    await seed(store, "hubspot", "a@example.com", "b@example.com")
    with pytest.raises(SyncRefused, match=r"source 'hubspot': the fetch would remove all 2 entries"):
        await sync_source(store, "hubspot", [], rules=RULES)
    with pytest.raises(SyncRefused):
        await sync_source(store, "hubspot", ["not an address"], rules=RULES)  # a broken export
    assert len(await keys(store, "hubspot")) == 2

    forced = await sync_source(store, "hubspot", [], rules=RULES, force=True)
    assert forced.removed == 2 and await keys(store, "hubspot") == set()


async def test_a_large_drop_is_refused_unless_forced(store: SQLiteStore) -> None:
    everyone = [f"p{i}@example.com" for i in range(100)]
    await seed(store, "mailchimp", *everyone)

    with pytest.raises(SyncRefused, match=r"remove 60 of 100 entries \(60%, more than 50%\)"):
        await sync_source(store, "mailchimp", everyone[:40], rules=RULES)
    assert len(await keys(store, "mailchimp")) == 100

    kept = await sync_source(store, "mailchimp", everyone[:55], rules=RULES)  # 45% drop: allowed
    assert (kept.removed, kept.unchanged) == (45, 55)

    strict = DropGuard(max_fraction=0.1, allowance=0)
    with pytest.raises(SyncRefused):
        await sync_source(store, "mailchimp", everyone[:45], rules=RULES, guard=strict)


async def test_a_small_source_can_lose_a_few_entries(store: SQLiteStore) -> None:
    await seed(store, "csv", "a@example.com", "b@example.com", "c@example.com")
    result = await sync_source(store, "csv", ["a@example.com"], rules=RULES)  # 67%, within the allowance
    assert result.removed == 2


async def test_an_expired_entry_that_is_wanted_again_blocks_again(store: SQLiteStore) -> None:
    await seed(store, "lemlist", "old@example.com", expires="2020-01-01")
    await seed(store, "lemlist", "kept@example.com")
    assert await store.match([k("old@example.com")]) is None

    result = await sync_source(store, "lemlist", ["old@example.com", "kept@example.com"], rules=RULES)
    assert (result.added, result.removed, result.unchanged) == (1, 0, 1)
    hit = await store.match([k("old@example.com")])
    assert hit is not None and hit.expires is None and hit.source == "lemlist"


async def test_a_connector_outage_leaves_the_list_as_it_was(store: SQLiteStore, stub: StubFactory, http: Http) -> None:
    await seed(store, "lemlist", "a@example.com", "b@example.com")
    up = [True]

    async def api(req: StubRequest) -> StubResponse:
        if not up[0]:
            return StubResponse(503)
        return StubResponse.of_json([{"_id": "uns_1", "value": "a@example.com", "source": "user"},
                                     {"_id": "uns_2", "value": "c@example.com", "source": "user"}])  # fmt: skip

    server = await stub(api)
    connector = LemlistUnsubscribes("key", base_url=server.url)
    result = await sync_source(store, "lemlist", await connector.fetch(http), rules=RULES)
    assert (result.added, result.removed, result.unchanged) == (1, 1, 1)

    up[0] = False
    with pytest.raises(ConnectorError):
        await sync_source(store, "lemlist", await connector.fetch(http), rules=RULES)
    assert await keys(store, "lemlist") == {k("a@example.com"), k("c@example.com")}


async def test_replacing_every_entry_of_a_small_source_is_not_emptying_it(store: SQLiteStore) -> None:
    await seed(store, "csv", "left@example.com")
    result = await sync_source(store, "csv", ["arrived@example.com"], rules=RULES, reason="in the weekly export")
    assert (result.added, result.removed) == (1, 1)
    hit = await store.match([k("arrived@example.com")])
    assert hit is not None and hit.reason == "in the weekly export"


async def test_pull_fetches_and_syncs_with_the_provider_as_reason(
    store: SQLiteStore, stub: StubFactory, http: Http
) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse.of_json([{"_id": "uns_1", "value": "a@example.com", "source": "user"}])

    server = await stub(api)
    result = await pull(store, "lemlist", LemlistUnsubscribes("key", base_url=server.url), http, rules=RULES)
    assert result.added == 1
    hit = await store.match([k("a@example.com")])
    assert hit is not None and hit.reason == "unsubscribed (lemlist)"


def test_failed_runs_are_retried_sooner_but_never_later_than_the_interval() -> None:
    assert [next_delay(3600, n) for n in range(8)] == [3600, 60, 120, 240, 480, 960, 1920, 3600]
    assert next_delay(300, 10**6) == 300
