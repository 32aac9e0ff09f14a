"""PostgreSQL store: one list for several relays (asyncpg, a connection pool).

Every relay reads the same tables, so an entry added through one is refused by
all at their next RCPT. A lookup is one round trip: `key = ANY($1)` on the
primary key, a statement asyncpg prepares once per pooled connection. Imports
are COPYed into a temporary staging table and merged with one set-based
INSERT, all in one transaction. When the server is unreachable every call
raises StoreError (the relay answers 451 4.3.0) within a bounded time, and
the pool reconnects by itself once the server is back.

Connection settings are PostgreSQL's own: a `postgresql://` URL (with
`sslmode`, `passfile`, ...) and/or the libpq environment variables (PGHOST,
PGPORT, PGUSER, PGPASSWORD, PGPASSFILE, PGSSLMODE, ...), which asyncpg honours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from smtpguard.suppression.addresses import DEFAULT_RULES, MatchRules

from .base import AddResult, EntryRow, Event, Rows, Stats, most_specific, utc_today
from .postgres_connect import describe_error, describe_server
from .postgres_copy import MERGE, STAGING, RowsFailed, Staging, staged
from .postgres_more import SourceAndLogTables
from .postgres_schema import SchemaError, migrate
from .postgres_users import UserTables

_ENTRY_SELECT = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch"
)
_MATCH_SQL = _ENTRY_SELECT + " WHERE e.key = ANY($1::text[])"
_EVENT_COLUMNS = ["time", "action", "sender", "recipient", "entry", "source", "client", "user", "message_id"]
_EVENT_SELECT = 'SELECT time, action, sender, recipient, entry, source, client, "user", message_id, relay FROM events'

_RULES_LOCK = "SELECT pg_advisory_xact_lock(hashtext('smtpguard rules'))"
_RULES_SQL = "SELECT value FROM meta WHERE name = 'rules'"
RULES_RECHECK = 1.0  # seconds: how soon a rules change made elsewhere is seen

T = TypeVar("T")

# What a server or network failure looks like from asyncpg: all become StoreError.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
# A pooled connection the server dropped (restart, failover): a lookup is retried once on a fresh one.
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, ConnectionResetError)


class PostgresStore(UserTables, SourceAndLogTables):
    """The suppression list in a PostgreSQL database (see module docstring)."""

    rows_in_thread = False  # ingest hands over chunks parsed in a worker thread

    def __init__(self, pool: Any, server: str, secrets: Sequence[str], relay: str, lookup_timeout: float) -> None:
        self._pool = pool
        self.server = server
        self._secrets = [s for s in secrets if s]
        self.relay = relay
        self._lookup_timeout = lookup_timeout
        self._rules = DEFAULT_RULES
        self._rules_checked = -RULES_RECHECK
        self.stale_keys = False  # keys made by an older smtpguard: re-key before use

    @classmethod
    async def open(
        cls,
        dsn: str | None = None,
        *,
        create: bool = True,
        rules: MatchRules = DEFAULT_RULES,
        relay: str | None = None,
        password: str | None = None,
        min_size: int = 0,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        lookup_timeout: float = 1.0,
    ) -> PostgresStore:
        """Connect (and create or migrate the schema); a new list keeps `rules`.

        `relay` names this relay in the audit log (default: the machine's name).
        """
        server = describe_server(dsn)
        secrets = [urlsplit(dsn or "").password or "", os.environ.get("PGPASSWORD", ""), password or ""]
        try:
            pool = await asyncpg.create_pool(
                dsn,
                password=password,
                # No floor and no idle expiry: a connection once made is kept, and
                # asyncpg's floor keeper (which logs a traceback every time it
                # fails to reconnect) never runs while the database is down.
                min_size=min_size,
                max_size=max_size,
                max_inactive_connection_lifetime=0,
                timeout=connect_timeout,
                reset=_keep_session,
            )
        except (*_DB_ERRORS, ValueError) as exc:
            raise describe_error(server, secrets, exc) from None
        store = cls(pool, server, secrets, relay or socket.gethostname(), lookup_timeout)
        try:
            async with store._connection() as conn:
                await migrate(conn, create=create)
            await store._init_rules(rules)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # Callers (CLI, relay) catch StoreError only: a bare asyncpg error would be
        # a traceback in the CLI and an unanswered RCPT in the relay.
        try:
            yield
        except (*_DB_ERRORS, SchemaError) as exc:
            raise describe_error(self.server, self._secrets, exc) from None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        with self._errors():
            async with self._pool.acquire() as conn:
                yield conn

    @asynccontextmanager
    async def _transaction(self, *, commit: bool = True) -> AsyncIterator[Any]:
        """BEGIN .. COMMIT on one pooled connection (ROLLBACK on error or when not `commit`)."""
        async with self._connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(*_DB_ERRORS):  # keep the first error
                    await tx.rollback()
                raise
            await (tx.commit() if commit else tx.rollback())

    # -- the list ----------------------------------------------------------------

    async def rules(self) -> MatchRules:
        # Asked at every RCPT: read from the database at most once a second, so that a
        # change made through another relay is noticed within a second, for one round
        # trip a second at most.
        now = time.monotonic()
        if now - self._rules_checked >= RULES_RECHECK:
            with self._errors():
                async with asyncio.timeout(self._lookup_timeout):
                    tag = await self._fetchval(_RULES_SQL)
            if tag is not None:
                self._rules, current = MatchRules.from_tag(str(tag))
                self.stale_keys = not current
            self._rules_checked = now
        return self._rules

    async def _init_rules(self, initial: MatchRules) -> None:
        """The rules stored with the list; `initial` written when it has none (a new list)."""
        async with self._transaction() as conn:
            await conn.execute(_RULES_LOCK)  # several relays may open a new database at once
            await conn.execute(
                "INSERT INTO meta (name, value) VALUES ('rules', $1) ON CONFLICT (name) DO NOTHING", initial.tag()
            )
        self._rules_checked = -RULES_RECHECK
        await self.rules()

    async def set_rules(self, rules: MatchRules, moves: Mapping[str, str | None]) -> None:
        async with self._transaction() as conn:
            await conn.execute(_RULES_LOCK)  # another relay may be re-keying right now
            await conn.execute(
                'CREATE TEMP TABLE smtpguard_moves (old text COLLATE "C" PRIMARY KEY, new text COLLATE "C")'
                " ON COMMIT DROP"
            )
            await conn.copy_records_to_table("smtpguard_moves", records=list(moves.items()))
            await conn.execute(
                "CREATE TEMP TABLE smtpguard_moved ON COMMIT DROP AS SELECT m.new AS key, e.kind,"
                " coalesce(e.original, e.key) AS original, e.batch"
                " FROM entries e JOIN smtpguard_moves m ON m.old = e.key WHERE m.new IS NOT NULL"
            )
            await conn.execute("DELETE FROM entries WHERE key IN (SELECT old FROM smtpguard_moves)")
            await conn.execute(
                "INSERT INTO entries (key, kind, original, batch) SELECT key, kind,"
                " CASE WHEN original = key THEN NULL ELSE original END, batch FROM smtpguard_moved"
            )
            await conn.execute(
                "INSERT INTO meta (name, value) VALUES ('rules', $1) ON CONFLICT (name) DO UPDATE SET value = $1",
                rules.tag(),
            )
        self._rules = rules
        self._rules_checked = time.monotonic()
        self.stale_keys = False

    async def add_entries(self, rows: Rows, *, commit: bool = True) -> AddResult:
        try:
            return await self._add_entries(rows, commit=commit)
        except RowsFailed as failed:
            assert failed.__cause__ is not None
            raise failed.__cause__ from None

    async def _add_entries(self, rows: Rows, *, commit: bool) -> AddResult:
        staging = Staging()
        async with self._transaction(commit=commit) as conn:
            await conn.execute(STAGING)
            async for records in staged(rows, staging):
                await conn.copy_records_to_table("smtpguard_staging", records=records)
            if not staging.batches:
                return AddResult(rows=0, added=0)
            ids = await conn.fetchval(
                "SELECT array_agg(nextval('batches_id_seq')) FROM generate_series(1, $1::int)", len(staging.batches)
            )
            await conn.copy_records_to_table(
                "batches",
                records=[(batch_id, *meta) for meta, batch_id in zip(staging.batches, ids, strict=True)],
                columns=["id", "source", "reason", "added", "expires"],
            )
            status = await conn.execute(MERGE.format(batch="($1::bigint[])[batch]"), ids)
        return AddResult(rows=staging.offered, added=int(status.split()[-1]))

    async def remove(self, keys: Sequence[str]) -> list[str]:
        async with self._transaction() as conn:
            gone = {
                r[0] for r in await conn.fetch("DELETE FROM entries WHERE key = ANY($1::text[]) RETURNING key", keys)
            }
        return [key for key in dict.fromkeys(keys) if key in gone]

    async def match(self, keys: Sequence[str], today: str | None = None) -> EntryRow | None:
        with self._errors():
            # Bounded: while the server is down the relay must answer 451 now, not after TCP gives up.
            async with asyncio.timeout(self._lookup_timeout):
                try:
                    found = await self._lookup(keys)
                except _LOST:
                    found = await self._lookup(keys)
        if not found:
            return None
        return most_specific((EntryRow._make(r) for r in found), keys, today or utc_today())

    async def _lookup(self, keys: Sequence[str]) -> list[Any]:
        return list(await self._hot(lambda conn: conn.fetch(_MATCH_SQL, list(keys))))

    async def _fetchval(self, sql: str) -> Any:
        try:
            return await self._hot(lambda conn: conn.fetchval(sql))
        except _LOST:
            return await self._hot(lambda conn: conn.fetchval(sql))

    async def _hot(self, query: Callable[[Any], Awaitable[T]]) -> T:
        """`query` on a pooled connection, for the relay's hot path (the caller bounds the time)."""
        conn = await self._pool.acquire()
        try:
            return await query(conn)
        except BaseException:
            # Cut short (timeout, server gone): drop the connection at once. Handing it back
            # would wait for the server to confirm the cancel, forever if it no longer answers.
            conn.terminate()
            raise
        finally:
            await self._pool.release(conn)

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[EntryRow]:
        where: list[str] = []
        args: list[str] = []
        if source is not None:
            args.append(source)
            where.append(f"b.source = ${len(args)}")
        if search:
            args.append("%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
            n = len(args)
            where.append(f"(e.key ILIKE ${n} ESCAPE '\\' OR e.original ILIKE ${n} ESCAPE '\\')")
        sql = _ENTRY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.key"
        async with self._connection() as conn, conn.transaction():
            async for row in conn.cursor(sql, *args, prefetch=2000):
                yield EntryRow._make(row)

    async def count(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM entries"))

    async def stats(self, since: str) -> Stats:
        async with self._connection() as conn:
            by_source = await conn.fetch(
                "SELECT b.source, e.kind, count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " GROUP BY b.source, e.kind ORDER BY b.source, e.kind"
            )
            expired = await conn.fetchval(
                "SELECT count(*) FROM entries e JOIN batches b ON b.id = e.batch"
                " WHERE b.expires IS NOT NULL AND b.expires <= $1",
                utc_today(),
            )
            actions = await conn.fetch("SELECT action, count(*) FROM events WHERE time >= $1 GROUP BY action", since)
        return Stats(
            [(str(r[0]), str(r[1]), int(r[2])) for r in by_source],
            int(expired),
            {str(r[0]): int(r[1]) for r in actions},
        )

    # -- audit log ---------------------------------------------------------------

    async def record_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._transaction() as conn:
            await conn.copy_records_to_table(
                "events",
                # Event's fields are in _EVENT_COLUMNS order, then the relay (this one unless given)
                records=[(*astuple(e)[:-1], e.relay or self.relay) for e in events],
                columns=[*_EVENT_COLUMNS, "relay"],
            )

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None, user: str | None = None
    ) -> list[Event]:
        where: list[str] = []
        args: list[str | int] = []
        if since:
            args.append(since)
            where.append(f"time >= ${len(args)}")
        if sender:
            args.append(sender)
            where.append(f"lower(sender) = lower(${len(args)})")
        if user:
            args.append(user)
            where.append(f'"user" = ${len(args)}')
        sql = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [Event(*r) for r in reversed(rows)]

    # -- local users -------------------------------------------------------------


async def _keep_session(conn: Any) -> None:
    """Pool release without asyncpg's RESET ALL/UNLISTEN query: a second round trip per lookup.

    Safe because this store never changes session state (no SET, LISTEN or
    session advisory locks; its temporary table is ON COMMIT DROP). asyncpg
    still rolls back a transaction left open before calling this.
    """
