"""SQLite store: aiosqlite for writes and listings, WAL so readers never wait.

The RCPT lookup is the hot path: it uses its own plain `sqlite3` connection,
on the event loop's thread while no other process holds the WAL index's
read locks, else on its own thread, with a deadline (sqlite_lookup.py): a
lock held from outside can make SQLite wait seconds (its WAL read-lock retry
loop ignores busy_timeout), and the relay must answer 451 in milliseconds
instead, never stall. WAL mode means it never waits for an import in
progress, and each query sees the latest committed list, so an import takes
effect at the next RCPT.

The file is the list: every call first checks (one `stat`) that the path
still names the file that is open. A list replaced on disk (`mv`, an atomic
copy, `rm`) is reopened; a missing one fails closed with StoreError rather
than answering from the deleted file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

import aiosqlite

from smtpguard.suppression.addresses import DEFAULT_RULES, MatchRules

from . import sqlite_more
from .base import (
    AddResult,
    EntryRow,
    Event,
    EventGroup,
    Rows,
    RowTuple,
    SourceDiff,
    SourceGuard,
    Stats,
    StoreError,
    most_specific,
    utc_today,
)
from .sqlite_accounts import AccountTables
from .sqlite_files import describe, identity, list_rules, missing, open_reader, open_writer, store_errors
from .sqlite_lookup import LOOKUP_TIMEOUT, InlineGuard, LookupStuck, LookupThread

log = logging.getLogger("smtpguard.store")
T = TypeVar("T")

# An entry as EntryRow wants it, from `entries e JOIN batches b`.
_ENTRY_SELECT = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch"
)
_EVENT_COLUMNS = "time, action, sender, recipient, entry, source, client, user, message_id"
_INSERT = "INSERT OR IGNORE INTO entries (key, kind, original, batch) VALUES (?,?,?,?)"
RULES_RECHECK = 1.0  # seconds between checks for a rules change by another process
# Rows of an import sorted at a time: a 10M-entry list outgrows the writer's
# page cache, and random keys then cost a page read/write each. 2^17 rows add
# ~50 MB to the importing process's peak RSS (2^18: 10M-row import CPU -13%,
# but +100 MB); no change at 1M, whose B-tree fits the cache.
SORT_ROWS = 1 << 17


def _shm(path: Path) -> Path:
    return path.with_name(path.name + "-shm")  # SQLite's WAL index


def _entry(row: Sequence[object]) -> EntryRow:
    return EntryRow._make(row)


class _Cancelled(Exception):
    """Raised inside the row generator when the import's task was cancelled."""


class SQLiteStore(AccountTables):
    """The suppression list in one SQLite file (see module docstring)."""

    # executemany pulls plain iterables in aiosqlite's thread, one row at a
    # time: parsing there, each row freed as soon as written, is ~15% faster
    # than chunks from another thread and keeps the event loop's pauses at
    # ~10 ms during a big import (chunks: ~200 ms, from GIL and GC pressure).
    rows_in_thread = True

    def __init__(self, path: Path, db: aiosqlite.Connection, reader: sqlite3.Connection, rules: MatchRules) -> None:
        self.path = path
        self._db = db
        self._reader = reader
        self._ident = identity(path)
        self._rules = rules
        self._data_version = -1
        self._rules_checked = 0.0
        self._lookups = LookupThread()
        self._inline = InlineGuard(reader, _shm(path))
        self._match_sql: dict[int, str] = {}
        # One connection serves every writer (import, audit, users): without
        # this lock a second BEGIN would fail, or a lone statement would join
        # another caller's open transaction. Reopening takes it too.
        self._tx = asyncio.Lock()
        self.stale_keys = False  # keys made by an older smtpguard: re-key before use

    @classmethod
    async def open(cls, path: Path | str, *, create: bool = True, rules: MatchRules = DEFAULT_RULES) -> SQLiteStore:
        """Open (and create or migrate) the store at `path`; a new list keeps `rules`."""
        path = Path(path)
        if not create and not path.exists():
            raise missing(path)
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise describe(path, exc) from None
        db = await open_writer(path)
        try:
            with store_errors(path):
                stored, current = await list_rules(db, rules)
            reader = open_reader(path)
        except BaseException:
            await db.close()
            raise
        store = cls(path, db, reader, stored)
        store.stale_keys = not current
        return store

    async def close(self) -> None:
        await self._close_reader()
        self._lookups.stop()
        await self._db.close()

    async def _close_reader(self) -> None:
        # In the lookup thread, after any lookup still running there.
        with contextlib.suppress(sqlite3.Error):
            await self._lookups.finally_run(self._reader, sqlite3.Connection.close)

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(reader)`, here or in the lookup thread (sqlite_lookup.py); StoreError when stuck."""
        reader = self._reader if self._current() else await self._reader_now()
        inline = self._inline
        try:
            if self._lookups.idle and inline.clear():
                return inline.run(query)
            result = await self._lookups.run(reader, query)
        except LookupStuck:
            raise self._stuck_error() from None
        except sqlite3.Error as exc:
            raise describe(self.path, exc) from None
        if self._lookups.idle:  # never touch the reader while the thread may use it
            inline.search()  # the reader has opened the WAL index by now
        return result

    def _stuck_error(self) -> StoreError:
        return StoreError(f"store {self.path}: no answer within {LOOKUP_TIMEOUT * 1000:.0f} ms (locked from outside?)")

    # -- the file behind the path --------------------------------------------

    def _current(self) -> bool:
        return self._ident is not None and identity(self.path) == self._ident

    async def _reopen(self) -> None:
        """Close the connections to a replaced or removed file; open the new one."""
        # The old file's -wal keeps its name (the path's) and SQLite does not
        # checkpoint nor delete it when closing a moved file: the new file
        # would be read through it. Checkpoint its frames into the old file
        # and empty it first, then close both connections before opening any.
        was = self._ident
        self._ident = None
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._close_reader()
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._db.close()
        if identity(self.path) is None:
            if was is not None:
                log.error("store %s: the list file is gone; lookups fail until it is back", self.path)
            raise StoreError(f"store {self.path}: the list file is gone (deleted or moved away)")
        self._db = await open_writer(self.path)
        try:
            with store_errors(self.path):
                self._rules, current = await list_rules(self._db, self._rules)
            self._reader = open_reader(self.path)
        except BaseException:
            await self._db.close()
            raise
        self._inline = InlineGuard(self._reader, _shm(self.path))
        self.stale_keys = not current
        self._data_version = -1
        self._rules_checked = 0.0
        self._ident = identity(self.path)
        log.warning("store %s: the list file was replaced; reopened it", self.path)

    async def _reader_now(self) -> sqlite3.Connection:
        if not self._current():
            async with self._tx:
                if not self._current():
                    await self._reopen()
        return self._reader

    async def _writer(self) -> aiosqlite.Connection:
        await self._reader_now()
        return self._db

    @asynccontextmanager
    async def _transaction(self, *, commit: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error or when not `commit`)."""
        async with self._tx:
            if not self._current():
                await self._reopen()
            db = self._db
            with store_errors(self.path):
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):  # keep the first error
                        await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT" if commit else "ROLLBACK")

    # -- matching rules ------------------------------------------------------

    async def rules(self) -> MatchRules:
        now = time.monotonic()
        if now - self._rules_checked >= RULES_RECHECK or not self._current():
            self._rules, self._data_version = await self._read(self._fresh_rules)
            self._rules_checked = now
        return self._rules

    def _fresh_rules(self, reader: sqlite3.Connection) -> tuple[MatchRules, int]:
        # data_version moves when another connection commits: only then
        # can the rules have changed (one cheap pragma, no table read).
        version = int(reader.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            row = reader.execute("SELECT value FROM meta WHERE name = 'rules'").fetchone()
            if row is not None:
                return MatchRules.from_tag(str(row[0]))[0], version
        return self._rules, version

    async def set_rules(self, rules: MatchRules, moves: Mapping[str, str | None]) -> None:
        async with self._transaction() as db:
            await db.execute("CREATE TEMP TABLE moves (old TEXT PRIMARY KEY, new TEXT) WITHOUT ROWID")
            try:
                await db.executemany("INSERT INTO temp.moves VALUES (?, ?)", moves.items())
                await db.execute(
                    "CREATE TEMP TABLE moved AS SELECT m.new AS key, e.kind, coalesce(e.original, e.key) AS original,"
                    " e.batch FROM entries e JOIN temp.moves m ON m.old = e.key WHERE m.new IS NOT NULL"
                )
                await db.execute("DELETE FROM entries WHERE key IN (SELECT old FROM temp.moves)")
                await db.execute(
                    "INSERT INTO entries (key, kind, original, batch) SELECT key, kind,"
                    " CASE WHEN original = key THEN NULL ELSE original END, batch FROM temp.moved"
                )
                await db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('rules', ?)", (rules.tag(),))
            finally:
                await db.execute("DROP TABLE IF EXISTS temp.moved")
                await db.execute("DROP TABLE temp.moves")
        self._rules = rules
        self._rules_checked = time.monotonic()
        self.stale_keys = False

    # -- the list ----------------------------------------------------------

    async def add_entries(self, rows: Rows, *, commit: bool = True) -> AddResult:
        offered = 0
        batches: dict[tuple[str, str, str, str | None], int] = {}
        stop = threading.Event()

        def stored(rows: Iterable[RowTuple], first_id: int) -> Iterator[tuple[str, str, str | None, int]]:
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

        def in_key_order(rows: Iterable[RowTuple], first_id: int) -> Iterator[tuple[str, str, str | None, int]]:
            # Runs of SORT_ROWS, each sorted by key (stably: the first of equal keys
            # is still the one kept): a run walks the B-tree's leaves in order, each
            # page read and written once, instead of one random page per row.
            written = stored(rows, first_id)
            while run := list(islice(written, SORT_ROWS)):
                run.sort(key=itemgetter(0))
                for start in range(0, len(run), 1024):
                    if stop.is_set():
                        raise _Cancelled
                    yield from run[start : start + 1024]

        async with self._transaction(commit=commit) as db:
            async with db.execute("SELECT coalesce(max(id), 0) + 1 FROM batches") as cur:
                row = await cur.fetchone()
            first = int(row[0]) if row else 1
            before = db.total_changes
            try:
                if isinstance(rows, AsyncIterable):
                    async for chunk in rows:
                        await db.executemany(_INSERT, stored(chunk, first))
                else:
                    await db.executemany(_INSERT, in_key_order(rows, first))
            except asyncio.CancelledError:
                # The rows are read in aiosqlite's thread, which goes on after we
                # stop waiting: tell it to stop too, or the ROLLBACK (queued
                # behind it) would wait for the rest of a million-row file.
                stop.set()
                raise
            added = db.total_changes - before
            await db.executemany(
                "INSERT INTO batches (id, source, reason, added, expires) VALUES (?,?,?,?,?)",
                [(batch, *meta) for meta, batch in batches.items()],
            )
        return AddResult(rows=offered, added=added)

    async def remove(self, keys: Sequence[str]) -> list[str]:
        removed: list[str] = []
        async with self._transaction() as db:
            for key in keys:
                async with db.execute("DELETE FROM entries WHERE key = ? RETURNING key", (key,)) as cur:
                    if await cur.fetchone() is not None:
                        removed.append(key)
        return removed

    async def match(self, keys: Sequence[str], today: str | None = None) -> EntryRow | None:
        sql = self._match_sql.get(len(keys))
        if sql is None:
            marks = ",".join("?" * len(keys))
            sql = f"{_ENTRY_SELECT} WHERE e.key IN ({marks})"
            self._match_sql[len(keys)] = sql
        args = tuple(keys)
        found = await self._read(lambda reader: reader.execute(sql, args).fetchall())
        if not found:
            return None
        return most_specific(map(_entry, found), keys, today or utc_today())

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[EntryRow]:
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
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute(sql, args) as cur:
                while batch := await cur.fetchmany(2000):
                    for row in batch:
                        yield _entry(row)

    async def count(self) -> int:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute("SELECT count(*) FROM entries") as cur:
                row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def stats(self, since: str) -> Stats:
        with store_errors(self.path):
            db = await self._writer()
            today = utc_today()
            async with db.execute(
                "SELECT b.source, e.kind, count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " GROUP BY b.source, e.kind ORDER BY b.source, e.kind"
            ) as cur:
                by_source = [(str(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]
            async with db.execute(
                "SELECT count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " WHERE b.expires IS NOT NULL AND b.expires <= ?",
                (today,),
            ) as cur:
                row = await cur.fetchone()
                expired = int(row[0]) if row else 0
            async with db.execute(
                "SELECT action, count(*) FROM events WHERE time >= ? GROUP BY action", (since,)
            ) as cur:
                actions = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
            return Stats(by_source, expired, actions)

    # -- audit log ---------------------------------------------------------

    async def record_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._transaction() as db:
            await db.executemany(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [astuple(e)[:9] for e in events],  # Event's fields are in _EVENT_COLUMNS order (relay: one)
            )

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None, user: str | None = None
    ) -> list[Event]:
        with store_errors(self.path):
            db = await self._writer()
            where, args = [], []
            if since:
                where.append("time >= ?")
                args.append(since)
            if sender:
                where.append("lower(sender) = lower(?)")
                args.append(sender)
            if user is not None:
                where.append("user = ?")
                args.append(user)
            sql = f"SELECT {_EVENT_COLUMNS} FROM events"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(str(limit))
            async with db.execute(sql, args) as cur:
                rows = await cur.fetchall()
            return [Event(*r) for r in reversed(list(rows))]

    async def event_counts(self, since: str, by: EventGroup, limit: int) -> list[tuple[str, int]]:
        with store_errors(self.path):
            return await sqlite_more.event_counts(await self._writer(), since, by, limit)

    async def prune_events(self, before: str) -> int:
        async with self._transaction() as db:
            return await sqlite_more.prune_events(db, before)

    # -- whole sources -----------------------------------------------------

    async def replace_source(
        self, source: str, rows: Sequence[EntryRow], *, commit: bool = True, guard: SourceGuard | None = None
    ) -> SourceDiff:
        async with self._transaction(commit=commit) as db:
            return await sqlite_more.replace_source(db, source, rows, guard)

    async def remove_source(self, source: str) -> int:
        async with self._transaction() as db:
            return await sqlite_more.remove_source(db, source)
