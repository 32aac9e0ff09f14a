"""Writing what a provider says into the store: webhook events, and whole-source syncs.

Over the current `Store` protocol only (`entries(source=...)`, `add_entries`,
`remove`).  A source sync makes the entries of one source exactly a fetched
set; a guard refuses to drop a large part of a source (or to empty it)
because a fetch came back short or broken, unless forced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from smtpguard.suppression.addresses import AddressError, Entry, MatchRules, address_key, parse_entry
from smtpguard.suppression.store import EntryRow, Store, utc_now
from smtpguard.suppression.store.base import SourceGuard
from smtpguard.sync.connectors import Connector, Http
from smtpguard.sync.replay import ReplayCache
from smtpguard.sync.webhooks import WebhookEvent, WebhookRequest, WebhookSource, receive

SYNC_REASON = "unsubscribed"
Lookup = Callable[[str], Awaitable[str | None]]


class SyncRefused(RuntimeError):
    """The sync would drop too much of a source; nothing was changed."""


@dataclass(frozen=True, slots=True)
class DropGuard:
    """Refuse to empty a source, or to remove more than `max_fraction` of it.

    The first `allowance` removals never trip the fraction, so a small source
    can still lose a few entries.
    """

    max_fraction: float = 0.5
    allowance: int = 10

    def check(self, source: str, current: int, removing: int, after: int) -> None:
        """`current` entries now, `removing` of them going, `after` entries left once done."""
        if current and not after:
            raise SyncRefused(
                f"source {source!r}: the fetch would remove all {current} entries (an empty or broken "
                "export?); nothing changed. Force the sync to accept it."
            )
        if removing > self.allowance and removing > self.max_fraction * current:
            raise SyncRefused(
                f"source {source!r}: the fetch would remove {removing} of {current} entries "
                f"({removing / current:.0%}, more than {self.max_fraction:.0%}); nothing changed. "
                "Force the sync to accept it."
            )

    def for_source(self, source: str) -> SourceGuard:
        """This guard as the store's `replace_source` calls it."""
        return lambda current, removing, after: self.check(source, current, removing, after)


@dataclass(frozen=True, slots=True)
class SyncResult:
    source: str
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    elsewhere: int = 0  # wanted, but already on the list under another source (left as it is)
    invalid: list[str] = field(default_factory=list)  # fetched values that are not addresses


def _wanted(values: Iterable[str], rules: MatchRules) -> tuple[dict[str, Entry], list[str]]:
    wanted: dict[str, Entry] = {}
    invalid: list[str] = []
    for value in values:
        try:
            entry = parse_entry(value, rules)
        except AddressError:
            invalid.append(value)
            continue
        wanted.setdefault(entry.key, entry)
    return wanted, invalid


def wanted_rows(
    source: str, values: Iterable[str], rules: MatchRules, *, now: str, reason: str = SYNC_REASON
) -> tuple[list[EntryRow], list[str]]:
    """The entries `values` ask for (one per key), and the values that are not addresses."""
    wanted, invalid = _wanted(values, rules)
    return [EntryRow(k, e.kind, e.original, source, reason, now, None) for k, e in wanted.items()], invalid


async def sync_source(
    store: Store,
    source: str,
    values: Iterable[str],
    *,
    rules: MatchRules,
    force: bool = False,
    guard: DropGuard | None = None,
    reason: str = SYNC_REASON,
) -> SyncResult:
    """Make the entries of `source` exactly `values` (addresses or domains), in one transaction.

    Raises SyncRefused (nothing changed) when the drop guard trips and not
    `force`. An expired entry wanted again is replaced, so it blocks again.
    """
    rows, invalid = await asyncio.to_thread(wanted_rows, source, list(values), rules, now=utc_now(), reason=reason)
    diff = await store.replace_source(source, rows, guard=None if force else (guard or DropGuard()).for_source(source))
    return SyncResult(
        source,
        added=len(diff.added),
        removed=len(diff.removed),
        unchanged=diff.unchanged,
        elsewhere=diff.elsewhere,
        invalid=invalid,
    )


async def pull(
    store: Store,
    source: str,
    connector: Connector,
    http: Http,
    *,
    rules: MatchRules,
    force: bool = False,
    guard: DropGuard | None = None,
) -> SyncResult:
    """One pull run: fetch the source's full list, then sync it (ConnectorError: nothing changed)."""
    values = await connector.fetch(http)
    return await sync_source(store, source, values, rules=rules, force=force, guard=guard,
                             reason=f"unsubscribed ({connector.provider})")  # fmt: skip


def next_delay(interval: float, failures: int, *, first_retry: float = 60.0) -> float:
    """Seconds until the next run of a `[[sync]]` entry: its interval, or sooner after
    failures (1 min, 2, 4, ...), never later than the interval."""
    if failures <= 0:
        return interval
    return min(interval, first_retry * float(2 ** min(failures - 1, 30)))


# --- webhook events --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: list[str] = field(default_factory=list)  # addresses that are not addresses
    note: str = ""  # the delivery's note: validation request, duplicate, ...


async def _source_entry(store: Store, source: str, key: str) -> EntryRow | None:
    async for entry in store.entries(source=source, search=key):
        if entry.key == key:
            return entry
    return None


async def apply_events(store: Store, events: Iterable[WebhookEvent], *, rules: MatchRules) -> Applied:
    """Add (unsubscribed) or remove (re-subscribed: this source's entry only), in order."""
    added = removed = unchanged = 0
    invalid: list[str] = []
    for event in events:
        if event.address is None:
            continue  # a HubSpot contact that no longer exists
        try:
            key = address_key(event.address, rules)
        except AddressError:
            invalid.append(event.address)
            continue
        if event.action == "add":
            row = EntryRow(key, "address", event.address, event.source, event.reason, utc_now(), None)
            done = (await store.add_entries([row])).added
            added += done
        else:
            done = 0
            if await _source_entry(store, event.source, key) is not None:
                done = len(await store.remove([key]))
            removed += done
        unchanged += not done
    return Applied(added, removed, unchanged, invalid)


async def resolve_contacts(events: Iterable[WebhookEvent], lookup: Lookup) -> list[WebhookEvent]:
    """Fill in the address of events that carry a contact id (HubSpot); unknown contacts stay None."""
    out = []
    for event in events:
        if event.address is None and event.contact_id is not None:
            event = replace(event, address=await lookup(event.contact_id))
        out.append(event)
    return out


async def process_webhook(
    store: Store,
    source: WebhookSource,
    request: WebhookRequest,
    *,
    rules: MatchRules,
    replay: ReplayCache,
    lookup: Lookup | None = None,
    now: float | None = None,
) -> Applied:
    """One webhook request, end to end: authenticate, read, look up, apply, remember.

    WebhookRefused -> 401, WebhookInvalid -> 400; a StoreError or a failed
    lookup (ConnectorError) -> 5xx, and then the receipt of an unsigned
    delivery is not remembered, so the provider's retry is applied.
    """
    now = time.time() if now is None else now
    delivery = receive(source, request, now=now, replay=replay)
    events: Sequence[WebhookEvent] = delivery.events
    if any(e.contact_id for e in events):
        if lookup is None:
            raise ValueError(f"webhook source {source.name!r} needs a HubSpot access token to look contacts up")
        events = await resolve_contacts(events, lookup)
    applied = await apply_events(store, events, rules=rules)
    if delivery.receipt is not None:
        replay.remember(delivery.receipt, now)
    return replace(applied, note=delivery.note)
