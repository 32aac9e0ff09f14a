"""The service layer: what the CLI and the HTTP API both do with the list.

Pure orchestration over the `Store` protocol: validation of user input,
then the store call, then a typed result. No printing and no typer here;
the front ends render the results. Bad input raises `InvalidInput` with one
line naming what is wrong, before anything is written.

Store access stays in `open_service` and in the `Service` methods, so a
change of the store's types touches this file only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smtpguard.inputs import InvalidInput, check_sender_address, check_user_name, parse_date, parse_since, recoded
from smtpguard.suppression.addresses import AddressError, Entry, Kind, MatchRules, parse_entry
from smtpguard.suppression.formats import Reject
from smtpguard.suppression.store import EntryRow, Event, Store, connect, utc_now
from smtpguard.suppression.store.base import WEB_ROLES, EventGroup, WebRole
from smtpguard.suppression.verdict import match_address

if TYPE_CHECKING:
    from smtpguard.suppression.allow import AllowResult

if TYPE_CHECKING:
    from smtpguard.config import Settings

STATS_DAYS = 30


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One address checked: blocked or not, and by which entry."""

    address: str
    blocked: bool
    entry: str | None = None
    key: str | None = None
    kind: Kind | None = None
    source: str | None = None
    reason: str | None = None
    added: str | None = None
    expires: str | None = None
    allowed_by_exception: bool = False  # the entry is an allow entry that lets it through


@dataclass(frozen=True, slots=True)
class AddResult:
    entry: str
    key: str
    kind: Kind
    added: bool  # False: it was listed already


@dataclass(frozen=True, slots=True)
class RemoveResult:
    entry: str
    key: str
    removed: bool  # False: it was not listed


@dataclass(frozen=True, slots=True)
class ImportResult:
    """One file imported (or counted, on a dry run)."""

    file: str
    source: str
    rows: int
    added: int
    duplicates: int
    invalid: int
    rejects: tuple[Reject, ...]


@dataclass(frozen=True, slots=True)
class ReplaceResult:
    """One file made the whole of its source (or the diff, on a dry run)."""

    file: str
    source: str
    rows: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int
    elsewhere: int  # in the file but listed by another source: left as it is
    invalid: int
    rejects: tuple[Reject, ...]

    @property
    def added_count(self) -> int:
        return len(self.added)

    @property
    def removed_count(self) -> int:
        return len(self.removed)


@dataclass(frozen=True, slots=True)
class SourceCount:
    source: str
    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class StatsResult:
    entries: tuple[SourceCount, ...]
    total: int
    expired: int
    events_last_30_days: dict[str, int]


@dataclass(frozen=True, slots=True)
class PersonCount:
    name: str  # a user name ("" for unauthenticated sessions) or a sender address
    events: int


@dataclass(frozen=True, slots=True)
class User:
    name: str
    created: str
    addresses: tuple[str, ...] = ()  # the senders this user may use; () = any


class Service:
    """The list operations over one open store and the matching rules."""

    def __init__(self, store: Store, rules: MatchRules) -> None:
        self.store = store
        self.rules = rules

    def parse_entries(self, texts: Sequence[str]) -> list[Entry]:
        """Entries as typed by a user; the first bad one stops everything."""
        out = []
        for text in texts:
            try:
                out.append(parse_entry(text, self.rules))
            except AddressError as exc:
                raise InvalidInput(f"{text!r} is not an address or domain: {exc}") from None
        return out

    async def check(self, addresses: Sequence[str]) -> list[CheckResult]:
        out = []
        for a in addresses:
            try:
                hit = await match_address(self.store, a)
            except AddressError as exc:
                raise InvalidInput(f"{a!r} is not a valid address: {exc}") from None
            if hit is None:
                out.append(CheckResult(a, False))
            else:
                allowed = hit.kind == "allow"
                out.append(
                    CheckResult(
                        a, not allowed, hit.original, hit.key, hit.kind, hit.source, hit.reason, hit.added,
                        hit.expires, allowed_by_exception=allowed,
                    )
                )  # fmt: skip
        return out

    async def allow(
        self, texts: Sequence[str], *, remove: bool = False, reason: str = "allowed by hand", expires: str | None = None
    ) -> list[AllowResult]:
        """Add (or `remove`) allow entries: exceptions inside blocked domains."""
        from smtpguard.suppression.allow import allow, disallow

        expiry = parse_date(expires, "--expires")
        entries = self.parse_entries(texts)
        if remove:
            return await disallow(self.store, entries)
        return await allow(self.store, entries, reason=reason, expires=expiry)

    async def add(
        self, texts: Sequence[str], *, source: str, reason: str, expires: str | None = None
    ) -> list[AddResult]:
        expiry = parse_date(expires, "--expires")
        entries = self.parse_entries(texts)
        now = utc_now()
        out = []
        for e in entries:
            r = await self.store.add_entries([EntryRow(e.key, e.kind, e.original, source, reason, now, expiry)])
            out.append(AddResult(e.original, e.key, e.kind, bool(r.added)))
        return out

    async def remove(self, texts: Sequence[str]) -> list[RemoveResult]:
        keys = [(e.original, e.key) for e in self.parse_entries(texts)]
        removed = set(await self.store.remove([k for _, k in keys]))
        return [RemoveResult(t, k, k in removed) for t, k in keys]

    async def import_file(
        self,
        path: Path,
        *,
        source: str | None = None,
        reason: str = "unsubscribed",
        expires: str | None = None,
        column: str | None = None,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
    ) -> ImportResult:
        """Import one file in one transaction (ImportFormatError, OSError: nothing written).

        `encoding` and `delimiter` override detection (CSV and text files only).
        """
        from smtpguard.suppression.ingest import import_file

        expiry = parse_date(expires, "--expires")
        with recoded(path, encoding, delimiter) as readable:
            done = await import_file(
                self.store, readable, source=source or path.stem, reason=reason,
                expires=expiry, column=column, commit=not dry_run, progress=progress,
            )  # fmt: skip
        return ImportResult(
            str(path),
            done.source,
            done.stats.rows,
            done.result.added,
            done.result.duplicates,
            done.stats.invalid,
            tuple(done.rejects),
        )

    async def replace_source(
        self,
        path: Path,
        *,
        source: str,
        reason: str = "unsubscribed",
        expires: str | None = None,
        column: str | None = None,
        dry_run: bool = False,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
    ) -> ReplaceResult:
        """`import --replace`: the entries of `source` become exactly the file's (one transaction).

        Emptying a source, or removing more than half of a large one, is
        refused (InvalidInput, nothing changed) unless `force`: the sync's guard.
        """
        from smtpguard.suppression.ingest import replace_from_file
        from smtpguard.sync.sync import DropGuard, SyncRefused

        expiry = parse_date(expires, "--expires")

        try:
            with recoded(path, encoding, delimiter) as readable:
                done = await replace_from_file(
                    self.store, readable, source=source, reason=reason, expires=expiry, column=column,
                    commit=not dry_run, guard=None if force else DropGuard().for_source(source), progress=progress,
                )  # fmt: skip
        except SyncRefused as exc:
            text = str(exc).replace("the fetch would", "the file would").replace("Force the sync", "Add --force")
            raise InvalidInput(text.replace("to accept it.", "to accept it")) from None
        d = done.diff
        return ReplaceResult(
            str(path), source, done.stats.rows, d.added, d.removed, d.unchanged, d.elsewhere, done.stats.invalid,
            tuple(done.rejects),
        )  # fmt: skip

    async def remove_source(self, source: str) -> int:
        return await self.store.remove_source(source)

    async def source_count(self, source: str) -> int:
        return sum([1 async for _ in self.store.entries(source=source)])

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncGenerator[EntryRow]:
        """The list's entries, streamed (list, export).

        Close it (`contextlib.aclosing`) when stopping early: the store's own
        cursor is then closed before the store is.
        """
        found = self.store.entries(source=source, search=search)
        try:
            async for e in found:
                yield e
        finally:
            aclose = getattr(found, "aclose", None)
            if aclose is not None:
                await aclose()

    async def log(
        self, since: str | None = None, sender: str | None = None, limit: int | None = 100, user: str | None = None
    ) -> list[Event]:
        return await self.store.events(since=parse_since(since), sender=sender, limit=limit, user=user)

    async def prune_log(self, days: int) -> int:
        """Delete audit events older than `days` ([audit] retention_days); how many went."""
        from smtpguard.runtime.retention import prune

        if days <= 0:
            raise InvalidInput("[audit] retention_days is 0 (keep forever): nothing to prune; pass --days N")
        return await prune(self.store, days)

    async def top(self, by: EventGroup, limit: int = 10, days: int = STATS_DAYS) -> list[PersonCount]:
        """Who (user or sender) had the most recipients refused, stripped or monitored lately."""
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat(timespec="seconds")
        return [PersonCount(name, n) for name, n in await self.store.event_counts(since, by, limit)]

    async def stats(self, days: int = STATS_DAYS) -> StatsResult:
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat(timespec="seconds")
        s = await self.store.stats(since)
        rows = tuple(SourceCount(src, k, c) for src, k, c in s.entries_by_source_kind)
        return StatsResult(rows, sum(r.count for r in rows), s.expired, dict(s.events_by_action))

    async def users(self) -> list[User]:
        return [User(n, c, tuple(await self.store.user_addresses(n))) for n, c in await self.store.users()]

    async def has_user(self, name: str) -> bool:
        return await self.store.user_hash(name) is not None

    async def set_user_addresses(self, name: str, addresses: Sequence[str]) -> None:
        """Bind `name` to these sender addresses (MAIL FROM); [] lets it use any."""
        cleaned = list(dict.fromkeys(check_sender_address(a) for a in addresses))
        if not await self.store.set_user_addresses(name, cleaned):
            raise InvalidInput(f"no user {name!r}")

    async def set_user(self, name: str, password: str) -> bool:
        """Create an account or change its password; True when it is new."""
        from smtpguard.passwords import hash_password

        check_user_name(name)
        if not password:
            raise InvalidInput("the password is empty")
        return await self.store.set_user(name, hash_password(password))

    async def remove_user(self, name: str) -> bool:
        return await self.store.remove_user(name)

    async def set_web_role(self, name: str, role: str | None) -> None:
        """Let an existing account sign in to the web page with `role` (None: no longer)."""
        if role is not None and role not in WEB_ROLES:
            raise InvalidInput(f"--role must be one of {', '.join(WEB_ROLES)}, got {role!r}")
        if not await self.store.set_web_role(name, role):
            raise InvalidInput(f"no user {name!r}")

    async def sign_in(self, name: str, password: str) -> WebRole | None:
        """The role of a web account whose password matches, else None (same cost either way)."""
        import asyncio

        from smtpguard.passwords import unknown_user_hash, verify_password

        stored = await self.store.user_hash(name) if name else None
        role = await self.store.web_role(name) if stored else None
        # scrypt takes ~50 ms of CPU: off the relay's event loop.
        ok = await asyncio.to_thread(lambda: verify_password(password, stored or unknown_user_hash()))
        return role if ok and stored else None


@asynccontextmanager
async def open_service(settings: Settings, *, create: bool = True) -> AsyncIterator[Service]:
    """The configured store behind a `Service`, closed on the way out whatever happens."""
    store = await connect(settings, create=create)
    try:
        yield Service(store, await store.rules())  # the list keys its own way
    finally:
        await store.close()
