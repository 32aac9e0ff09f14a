"""The store interface: the suppression list, the audit log and local users.

Every backend (SQLite today, PostgreSQL for several relays) implements
`Store` and passes the same contract tests (tests/store/test_contract.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from smtpguard.suppression.addresses import Kind, MatchRules

Action = Literal["rejected", "stripped", "monitored"]
WebRole = Literal["viewer", "editor", "admin"]
WEB_ROLES: tuple[WebRole, ...] = ("viewer", "editor", "admin")
# Writes made through the HTTP API are audited as events too (`user` = "token:NAME").
ApiAction = Literal["api-add", "api-remove", "api-import", "api-sync", "webhook"]
TokenScope = Literal["read", "write"]
EventGroup = Literal["user", "sender"]
# replace_source calls it with (entries of the source now, removing, left after) inside
# the transaction; raising there leaves the list as it was.
SourceGuard = Callable[[int, int, int], None]


class StoreError(RuntimeError):
    """The store cannot be read or written; the message says what and where."""


class EntryRow(NamedTuple):
    """One entry of the list, as written and as read: a tuple, so a million stay cheap."""

    key: str
    kind: Kind
    original: str
    source: str
    reason: str
    added: str  # ISO 8601 UTC, seconds
    expires: str | None  # YYYY-MM-DD: no longer blocks from that day on (UTC)

    def active(self, today: str) -> bool:
        return self.expires is None or self.expires > today


# An EntryRow's fields as a plain tuple. Chunks of a big import hold these:
# the GC stops tracking an exact tuple of strings, not a NamedTuple, and
# thousands of tracked rows alive at once would set off full collections
# (100-400 ms pauses of the relay in a large process).
RowTuple = tuple[str, Kind, str, str, str, str, str | None]

# What an import hands the store: rows (small lists, tests) or chunks read in
# a worker thread (suppression.ingest), so that no backend ever parses a
# file on the event loop.
Rows = Iterable[EntryRow] | AsyncIterable[Sequence[RowTuple]]


@dataclass(frozen=True, slots=True)
class AddResult:
    rows: int  # entries offered
    added: int  # new ones written

    @property
    def duplicates(self) -> int:
        return self.rows - self.added


@dataclass(frozen=True, slots=True)
class SourceDiff:
    """What `replace_source` did (or, not committed, would do) to one source."""

    added: tuple[str, ...]  # entries as written in the file
    removed: tuple[str, ...]  # entries as they were listed
    unchanged: int
    elsewhere: int  # in the file, but listed under another source (left as it is)


def plan_replace(
    source: str, current: Sequence[EntryRow], rows: Iterable[EntryRow], others: set[str], today: str
) -> tuple[list[EntryRow], list[EntryRow], int, int]:
    """(to add, to remove, unchanged, elsewhere): make `source`'s entries exactly `rows`.

    `others`: keys of `rows` held by other sources. An expired entry of the
    source that the file lists again is replaced (it blocks again).
    """
    mine = {e.key: e for e in current}
    wanted: dict[str, EntryRow] = {}
    elsewhere = 0
    for r in rows:
        if r.key in wanted:
            continue
        if r.key in others:
            elsewhere += 1
            continue
        wanted[r.key] = r
    add = [r for k, r in wanted.items() if k not in mine or not mine[k].active(today)]
    fresh = {r.key for r in add}
    remove = [e for k, e in mine.items() if k not in wanted or k in fresh]
    unchanged = len(wanted) - len(add)
    return add, remove, unchanged, elsewhere


BatchMeta = tuple[str, str, str, str | None]  # (source, reason, added, expires): one batches row


def batch_metas(add: Iterable[EntryRow]) -> list[BatchMeta]:
    """The distinct batches `add` needs, in first-seen order (each is inserted once)."""
    return list(dict.fromkeys((r.source, r.reason, r.added, r.expires) for r in add))


def entry_params(add: Iterable[EntryRow], batches: dict[BatchMeta, int]) -> list[tuple[str, str, str | None, int]]:
    """(key, kind, original, batch) rows for `entries`; the original is kept only where it differs from the key."""
    return [
        (r.key, r.kind, None if r.original == r.key else r.original, batches[r.source, r.reason, r.added, r.expires])
        for r in add
    ]


@dataclass(frozen=True, slots=True)
class Event:
    """One audit record: a recipient refused, stripped or only monitored."""

    time: str  # ISO 8601 UTC
    action: Action | ApiAction
    sender: str
    recipient: str
    entry: str
    source: str
    client: str
    user: str
    message_id: str
    # The relay that wrote it, where several share one log (PostgreSQL: its
    # [store] relay_name or [server] hostname); "" for a single relay's SQLite file.
    relay: str = ""


@dataclass(frozen=True, slots=True)
class Token:
    """An HTTP API token as stored: its name, scope and the SHA-256 of the secret."""

    name: str
    scope: TokenScope
    hash: str
    created: str


@dataclass(frozen=True, slots=True)
class Stats:
    entries_by_source_kind: list[tuple[str, str, int]]
    expired: int
    events_by_action: dict[str, int]


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def utc_today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def most_specific(found: Iterable[EntryRow], keys: Sequence[str], today: str) -> EntryRow | None:
    """The active entry whose key comes first in `keys` (address, then domains)."""
    by_key = {e.key: e for e in found if e.active(today)}
    for key in keys:
        if key in by_key:
            return by_key[key]
    return None


class Store(Protocol):
    """What the relay, the CLI and the watched folder may ask of a backend.

    The matching rules belong to the list: set when it is created, changed
    only through `set_rules` (see suppression.rules), and `rules()` always
    answers the list's current ones, also after another process changed them.
    """

    # True when add_entries reads a plain iterable of rows in a worker thread
    # of its own (SQLite: inside executemany, in aiosqlite's thread): ingest
    # then hands it the file's rows as they are parsed; otherwise ingest parses
    # in a thread and hands over chunks. Either way, never on the event loop.
    rows_in_thread: bool

    async def close(self) -> None: ...

    async def rules(self) -> MatchRules:
        """The list's own matching rules (fresh: a change by another process is seen)."""
        ...

    async def set_rules(self, rules: MatchRules, moves: Mapping[str, str | None]) -> None:
        """In one transaction: store `rules` and move each entry from key `old` to
        `moves[old]` (None: drop it). The new keys must not collide (the caller
        decides which of two merging entries stays)."""
        ...

    async def add_entries(self, rows: Rows, *, commit: bool = True) -> AddResult:
        """Write new entries in one transaction; existing keys are kept as they are.

        `rows` may raise while being read: then nothing is written.
        `commit=False` counts what would be added and rolls back (dry runs).
        """
        ...

    async def remove(self, keys: Sequence[str]) -> list[str]:
        """Remove entries by key; returns the keys that were there."""
        ...

    async def match(self, keys: Sequence[str], today: str | None = None) -> EntryRow | None:
        """The most specific active entry among `keys` (see addresses.lookup_keys)."""
        ...

    async def count(self) -> int:
        """How many entries the list holds (expired ones included)."""
        ...

    def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[EntryRow]:
        """Entries ordered by key; `search` is a case-insensitive substring of key or original."""
        ...

    async def stats(self, since: str) -> Stats: ...

    async def record_events(self, events: Sequence[Event]) -> None: ...

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None, user: str | None = None
    ) -> list[Event]:
        """Oldest first, the most recent `limit`; `sender` case-insensitive, `user` exact."""
        ...

    async def event_counts(self, since: str, by: EventGroup, limit: int) -> list[tuple[str, int]]:
        """Events since `since` counted by user or by sender (lower-cased), most first, then by name."""
        ...

    async def prune_events(self, before: str) -> int:
        """Delete audit events older than `before` (ISO 8601 UTC); how many went."""
        ...

    async def replace_source(
        self, source: str, rows: Sequence[EntryRow], *, commit: bool = True, guard: SourceGuard | None = None
    ) -> SourceDiff:
        """In one transaction: make the entries of `source` exactly `rows` (see plan_replace).

        `guard(current, removing, after)` may raise to refuse: nothing changes.
        `commit=False` computes the diff and rolls back (dry runs).
        """
        ...

    async def remove_source(self, source: str) -> int:
        """Remove every entry of `source`; how many there were."""
        ...

    async def set_user(self, name: str, password_hash: str) -> bool:
        """Create or replace an account; True when it is new."""
        ...

    async def remove_user(self, name: str) -> bool: ...

    async def user_hash(self, name: str) -> str | None: ...

    async def users(self) -> list[tuple[str, str]]:
        """(name, created) of every account."""
        ...

    async def set_web_role(self, name: str, role: WebRole | None) -> bool:
        """Give an existing account a role on the web page (None: no access); False when no such user."""
        ...

    async def web_role(self, name: str) -> WebRole | None:
        """The account's role on the web page, None when it may not sign in there."""
        ...

    async def set_user_addresses(self, name: str, addresses: Sequence[str]) -> bool:
        """Replace the sender addresses `name` may use (empty: any); False when there is no such user."""
        ...

    async def user_addresses(self, name: str) -> list[str]:
        """The sender addresses `name` may use, as set; [] for any sender or no such user."""
        ...

    async def add_token(self, name: str, scope: TokenScope, token_hash: str) -> bool:
        """Store a new API token; False (nothing written) when `name` is taken."""
        ...

    async def remove_token(self, name: str) -> bool: ...

    async def tokens(self) -> list[Token]:
        """Every API token, by name."""
        ...

    async def token_by_hash(self, token_hash: str) -> Token | None: ...
