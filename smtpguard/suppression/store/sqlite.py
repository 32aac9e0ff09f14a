"""SQLite store: aiosqlite for writes and listings, WAL so readers never wait.

The RCPT lookup is the hot path: it uses its own plain `sqlite3` connection
on the event-loop thread, because one indexed point query (~10 µs) costs far
less than aiosqlite's hand-off to its worker thread (~100 µs). WAL mode means
it never waits for an import in progress, and each query sees the latest
committed list, so an import takes effect at the next RCPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple
from pathlib import Path
from typing import Any

import aiosqlite

from smtpguard.suppression.addresses import AddressError, MatchRules, rekey

from .base import (
    AddResult,
    EntryRow,
    Event,
    Stats,
    StoredEntry,
    StoreError,
    most_specific,
    utc_now,
    utc_today,
)

# Each item moves the schema from version i to i+1 (PRAGMA user_version).
# Statements are split on semicolons: keep them out of the SQL comments.
MIGRATIONS: list[str] = [
    """
    -- What one import (or one `add`) shares: kept once, not on every row, so a
    -- million-row list stays ~50 MB and its B-tree fits the page cache.
    CREATE TABLE batches (
        id      INTEGER PRIMARY KEY,
        source  TEXT NOT NULL,
        reason  TEXT NOT NULL,
        added   TEXT NOT NULL,
        expires TEXT             -- YYYY-MM-DD: no longer blocks from that day on
    );
    CREATE TABLE entries (
        key      TEXT PRIMARY KEY,   -- canonical key: the one unique index
        kind     TEXT NOT NULL CHECK (kind IN ('address', 'domain')),
        original TEXT,               -- as imported, or NULL when it is the key itself
        batch    INTEGER NOT NULL REFERENCES batches (id)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY,
        time       TEXT NOT NULL,
        action     TEXT NOT NULL,
        sender     TEXT NOT NULL,
        recipient  TEXT NOT NULL,
        entry      TEXT NOT NULL,
        source     TEXT NOT NULL,
        client     TEXT NOT NULL,
        user       TEXT NOT NULL,
        message_id TEXT NOT NULL
    );
    CREATE INDEX events_time ON events (time);
    CREATE TABLE users (
        name    TEXT PRIMARY KEY,
        hash    TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]

# An entry as StoredEntry wants it, from `entries e JOIN batches b`.
_ENTRY_SELECT = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch"
)
_EVENT_COLUMNS = "time, action, sender, recipient, entry, source, client, user, message_id"


def _entry(row: Sequence[Any]) -> StoredEntry:
    return StoredEntry(*row)


class _Cancelled(Exception):
    """Raised inside the row generator when the import's task was cancelled."""


def _describe(path: Path, exc: BaseException) -> StoreError:
    return StoreError(f"store {path}: {exc}")


@contextmanager
def _store_errors(path: Path) -> Iterator[None]:
    # Callers (CLI, relay) catch StoreError only: a bare sqlite3.Error would be
    # a traceback in the CLI and an unanswered RCPT in the relay.
    try:
        yield
    except sqlite3.Error as exc:
        raise _describe(path, exc) from None


class SQLiteStore:
    """The suppression list in one SQLite file (see module docstring)."""

    def __init__(self, path: Path, db: aiosqlite.Connection, reader: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._reader = reader
        self._match_sql: dict[int, str] = {}
        # One connection serves every writer (import, audit, users): without
        # this lock a second BEGIN would fail, or a lone statement would join
        # another caller's open transaction.
        self._tx = asyncio.Lock()

    @asynccontextmanager
    async def _transaction(self, *, commit: bool = True) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error or when not `commit`)."""
        async with self._tx:
            with _store_errors(self.path):
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):  # keep the first error
                        await self._db.execute("ROLLBACK")
                    raise
                await self._db.execute("COMMIT" if commit else "ROLLBACK")

    @classmethod
    async def open(cls, path: Path | str, *, create: bool = True) -> SQLiteStore:
        """Open (and create or migrate) the store at `path`."""
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(f"store {path}: no such file (import a list first, or check --db)")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            # Fail here first: a failed aiosqlite.connect leaves its worker thread to call
            # back into a closed event loop ("Event loop is closed" after the error line).
            sqlite3.connect(path).close()
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise _describe(path, exc) from None
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=10000")
            # 64 MiB page cache for the writer: a million random keys into a
            # ~140 MB B-tree thrash the 2 MB default (import 1M rows: 15 s -> 12 s).
            # Pages are only allocated when an import actually touches them.
            await db.execute("PRAGMA cache_size=-65536")
            await cls._migrate(db)
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=200")
            # Memory-mapped reads: a lookup touches 3-4 pages of a large list;
            # mapping them spares a read() syscall each (1M entries: 34 -> ~18 µs).
            reader.execute("PRAGMA mmap_size=1073741824")
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            await db.close()
            raise _describe(path, exc) from None
        return cls(path, db, reader)

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this smtpguard knows ({len(MIGRATIONS)}); upgrade smtpguard"
            )
        for target in range(version + 1, len(MIGRATIONS) + 1):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute(f"PRAGMA user_version={target}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        self._reader.close()
        await self._db.close()

    # -- the list ----------------------------------------------------------

    async def ensure_rules(self, rules: MatchRules) -> int:
        with _store_errors(self.path):
            return await self._ensure_rules(rules)

    async def _ensure_rules(self, rules: MatchRules) -> int:
        tag = rules.tag()
        async with self._db.execute("SELECT value FROM meta WHERE name = 'rules'") as cur:
            row = await cur.fetchone()
        if row is not None and row[0] == tag:
            return 0
        changed = 0
        async with self._transaction():
            if row is not None:
                changed = await self._rekey(rules)
            await self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('rules', ?)", (tag,))
        return changed

    async def _rekey(self, rules: MatchRules) -> int:
        # Rebuild under the new rules; when two entries now share a key the
        # older one is kept (INSERT OR IGNORE in order of `added`).
        async with self._db.execute(
            "SELECT e.key, e.kind, coalesce(e.original, e.key), e.batch"
            " FROM entries e JOIN batches b ON b.id = e.batch ORDER BY b.added"
        ) as cur:
            rows = await cur.fetchall()
        await self._db.execute("DELETE FROM entries")
        fresh = []
        changed = 0
        for old_key, kind, original, batch in rows:
            try:
                key = rekey(original, kind, rules)
            except AddressError:
                key = old_key
            changed += key != old_key
            fresh.append((key, kind, None if original == key else original, batch))
        await self._db.executemany("INSERT OR IGNORE INTO entries (key, kind, original, batch) VALUES (?,?,?,?)", fresh)
        return changed

    async def add_entries(self, rows: Iterable[EntryRow], *, commit: bool = True) -> AddResult:
        offered = 0
        batches: dict[tuple[str, str, str, str | None], int] = {}
        stop = threading.Event()

        def stored(first_id: int) -> Iterator[tuple[str, str, str | None, int]]:
            # Runs in aiosqlite's thread, inside executemany: the hot loop of an import.
            nonlocal offered
            get = batches.get
            for key, kind, original, source, reason, added, expires in rows:
                offered += 1
                if not offered & 1023 and stop.is_set():
                    raise _Cancelled
                meta = (source, reason, added, expires)
                batch = get(meta)
                if batch is None:
                    batch = batches[meta] = first_id + len(batches)
                yield key, kind, None if original == key else original, batch

        async with self._transaction(commit=commit):
            async with self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM batches") as cur:
                row = await cur.fetchone()
            before = self._db.total_changes
            try:
                await self._db.executemany(
                    "INSERT OR IGNORE INTO entries (key, kind, original, batch) VALUES (?,?,?,?)",
                    stored(int(row[0]) if row else 1),
                )
            except asyncio.CancelledError:
                # The rows are read in aiosqlite's thread, which goes on after we
                # stop waiting: tell it to stop too, or the ROLLBACK (queued
                # behind it) would wait for the rest of a million-row file.
                stop.set()
                raise
            added = self._db.total_changes - before
            await self._db.executemany(
                "INSERT INTO batches (id, source, reason, added, expires) VALUES (?,?,?,?,?)",
                [(batch, *meta) for meta, batch in batches.items()],
            )
        return AddResult(rows=offered, added=added)

    async def remove(self, keys: Sequence[str]) -> list[str]:
        removed: list[str] = []
        async with self._transaction():
            for key in keys:
                async with self._db.execute("DELETE FROM entries WHERE key = ? RETURNING key", (key,)) as cur:
                    if await cur.fetchone() is not None:
                        removed.append(key)
        return removed

    async def match(self, keys: Sequence[str], today: str | None = None) -> StoredEntry | None:
        # Deliberately synchronous inside: see the module docstring.
        sql = self._match_sql.get(len(keys))
        if sql is None:
            marks = ",".join("?" * len(keys))
            sql = f"{_ENTRY_SELECT} WHERE e.key IN ({marks})"
            self._match_sql[len(keys)] = sql
        try:
            found = self._reader.execute(sql, tuple(keys)).fetchall()
        except sqlite3.Error as exc:
            raise _describe(self.path, exc) from None
        if not found:
            return None
        return most_specific(map(_entry, found), keys, today or utc_today())

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[StoredEntry]:
        where, args = [], []
        if source is not None:
            where.append("b.source = ?")
            args.append(source)
        if search:
            where.append("(e.key LIKE ? ESCAPE '\\' OR e.original LIKE ? ESCAPE '\\')")
            pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        sql = _ENTRY_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.key"
        with _store_errors(self.path):
            async with self._db.execute(sql, args) as cur:
                while batch := await cur.fetchmany(2000):
                    for row in batch:
                        yield _entry(row)

    async def count(self) -> int:
        with _store_errors(self.path):
            async with self._db.execute("SELECT count(*) FROM entries") as cur:
                row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def stats(self, since: str) -> Stats:
        with _store_errors(self.path):
            today = utc_today()
            async with self._db.execute(
                "SELECT b.source, e.kind, count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " GROUP BY b.source, e.kind ORDER BY b.source, e.kind"
            ) as cur:
                by_source = [(str(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]
            async with self._db.execute(
                "SELECT count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " WHERE b.expires IS NOT NULL AND b.expires <= ?",
                (today,),
            ) as cur:
                row = await cur.fetchone()
                expired = int(row[0]) if row else 0
            async with self._db.execute(
                "SELECT action, count(*) FROM events WHERE time >= ? GROUP BY action", (since,)
            ) as cur:
                actions = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
            return Stats(by_source, expired, actions)

    # -- audit log ---------------------------------------------------------

    async def record_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._transaction():
            await self._db.executemany(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [astuple(e) for e in events],  # Event's fields are in _EVENT_COLUMNS order
            )

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None
    ) -> list[Event]:
        with _store_errors(self.path):
            where, args = [], []
            if since:
                where.append("time >= ?")
                args.append(since)
            if sender:
                where.append("lower(sender) = lower(?)")
                args.append(sender)
            sql = f"SELECT {_EVENT_COLUMNS} FROM events"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(str(limit))
            async with self._db.execute(sql, args) as cur:
                rows = await cur.fetchall()
            return [Event(*r) for r in reversed(list(rows))]

    # -- local users -------------------------------------------------------

    async def set_user(self, name: str, password_hash: str) -> bool:
        async with self._transaction():
            async with self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)) as cur:
                exists = await cur.fetchone() is not None
            await self._db.execute(
                "INSERT INTO users (name, hash, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
                (name, password_hash, utc_now()),
            )
            return not exists

    async def remove_user(self, name: str) -> bool:
        async with (
            self._transaction(),
            self._db.execute("DELETE FROM users WHERE name = ? RETURNING name", (name,)) as cur,
        ):
            return await cur.fetchone() is not None

    async def user_hash(self, name: str) -> str | None:
        with _store_errors(self.path):
            async with self._db.execute("SELECT hash FROM users WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            return str(row[0]) if row else None

    async def users(self) -> list[tuple[str, str]]:
        with _store_errors(self.path):
            async with self._db.execute("SELECT name, created FROM users ORDER BY name") as cur:
                return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
