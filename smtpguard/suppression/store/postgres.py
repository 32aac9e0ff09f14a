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
import itertools
import os
import socket
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from smtpguard.suppression.addresses import AddressError, MatchRules, rekey

from .base import AddResult, EntryRow, Event, Stats, StoredEntry, StoreError, most_specific, utc_now, utc_today
from .postgres_schema import SchemaError, migrate

_ENTRY_SELECT = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch"
)
_MATCH_SQL = _ENTRY_SELECT + " WHERE e.key = ANY($1::text[])"
_EVENT_COLUMNS = ["time", "action", "sender", "recipient", "entry", "source", "client", "user", "message_id"]
_EVENT_SELECT = 'SELECT time, action, sender, recipient, entry, source, client, "user", message_id FROM events'

# Rows staged per COPY: big enough that round trips do not count, small enough
# that pulling one chunk from the caller's generator never blocks for long.
_CHUNK = 20_000
_STAGING = (
    "CREATE TEMP TABLE smtpguard_staging"
    ' (seq bigint, key text COLLATE "C", kind text, original text, batch bigint) ON COMMIT DROP'
)
# One set-based merge: the first row offered for a key wins (as in SQLite), existing keys are kept.
_MERGE = (
    "INSERT INTO entries (key, kind, original, batch)"
    " SELECT DISTINCT ON (key) key, kind, original, {batch} FROM smtpguard_staging ORDER BY key, seq"
    " ON CONFLICT (key) DO NOTHING"
)
_RULES_LOCK = "SELECT pg_advisory_xact_lock(hashtext('smtpguard rules'))"

# What a server or network failure looks like from asyncpg: all become StoreError.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
# A pooled connection the server dropped (restart, failover): a lookup is retried once on a fresh one.
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, ConnectionResetError)


def describe_server(dsn: str | None) -> str:
    """Where the store is, for messages: host, port and database, never the user's password."""
    parts = urlsplit(dsn or "")
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2] or ",".join(query.get("host", [])) or os.environ.get("PGHOST", "")
    if hosts and ":" not in hosts.split(",")[0] and not hosts.startswith("/"):
        hosts += f":{os.environ.get('PGPORT', '5432')}"
    database = parts.path.lstrip("/") or os.environ.get("PGDATABASE", "")
    return f"postgresql://{hosts or 'localhost'}/{database}"


class _RowsFailed(Exception):
    """The caller's rows raised: re-raised as it was once the transaction is rolled back."""


class PostgresStore:
    """The suppression list in a PostgreSQL database (see module docstring)."""

    def __init__(self, pool: Any, server: str, secrets: Sequence[str], relay: str, lookup_timeout: float) -> None:
        self._pool = pool
        self.server = server
        self._secrets = [s for s in secrets if s]
        self.relay = relay
        self._lookup_timeout = lookup_timeout

    @classmethod
    async def open(
        cls,
        dsn: str | None = None,
        *,
        create: bool = True,
        relay: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        lookup_timeout: float = 1.0,
    ) -> PostgresStore:
        """Connect (and create or migrate the schema); `relay` names this relay in the audit log."""
        server = describe_server(dsn)
        secrets = [urlsplit(dsn or "").password or "", os.environ.get("PGPASSWORD", "")]
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout, reset=_keep_session
            )
        except (*_DB_ERRORS, ValueError) as exc:
            raise _describe(server, secrets, exc) from None
        store = cls(pool, server, secrets, relay or socket.gethostname(), lookup_timeout)
        try:
            async with store._connection() as conn:
                await migrate(conn, create=create)
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
            raise _describe(self.server, self._secrets, exc) from None

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

    async def ensure_rules(self, rules: MatchRules) -> int:
        tag = rules.tag()
        async with self._connection() as conn:
            if await conn.fetchval("SELECT value FROM meta WHERE name = 'rules'") == tag:
                return 0
        async with self._transaction() as conn:
            await conn.execute(_RULES_LOCK)  # another relay may be re-keying right now
            current = await conn.fetchval("SELECT value FROM meta WHERE name = 'rules'")
            if current == tag:
                return 0
            changed = 0 if current is None else await self._rekey(conn, rules)
            await conn.execute(
                "INSERT INTO meta (name, value) VALUES ('rules', $1) ON CONFLICT (name) DO UPDATE SET value = $1", tag
            )
            return changed

    @staticmethod
    async def _rekey(conn: Any, rules: MatchRules) -> int:
        # Rebuild under the new rules; when two entries now share a key the older one is kept.
        rows = await conn.fetch(
            "SELECT e.key, e.kind, coalesce(e.original, e.key), e.batch"
            " FROM entries e JOIN batches b ON b.id = e.batch ORDER BY b.added, e.key"
        )

        def fresh() -> tuple[list[tuple[int, str, str, str | None, int]], int]:
            out, changed = [], 0
            for seq, (old_key, kind, original, batch) in enumerate(rows):
                try:
                    key = rekey(original, kind, rules)
                except AddressError:
                    key = old_key
                changed += key != old_key
                out.append((seq, key, kind, None if original == key else original, batch))
            return out, changed

        records, changed = await asyncio.to_thread(fresh)
        await conn.execute("DELETE FROM entries")
        await conn.execute(_STAGING)
        await conn.copy_records_to_table("smtpguard_staging", records=records)
        await conn.execute(_MERGE.format(batch="batch"))
        return changed

    async def add_entries(self, rows: Iterable[EntryRow], *, commit: bool = True) -> AddResult:
        try:
            return await self._add_entries(rows, commit=commit)
        except _RowsFailed as failed:
            assert failed.__cause__ is not None
            raise failed.__cause__ from None

    async def _add_entries(self, rows: Iterable[EntryRow], *, commit: bool) -> AddResult:
        offered = 0
        batches: dict[tuple[str, str, str, str | None], int] = {}  # shared fields -> index from 1
        source = iter(rows)

        def chunk() -> list[tuple[int, str, str, str | None, int]]:
            # Runs in a worker thread: `rows` may parse a file as it goes.
            nonlocal offered
            out: list[tuple[int, str, str, str | None, int]] = []
            for key, kind, original, src, reason, added, expires in itertools.islice(source, _CHUNK):
                offered += 1
                meta = (src, reason, added, expires)
                batch = batches.get(meta)
                if batch is None:
                    batch = batches[meta] = len(batches) + 1
                out.append((offered, key, kind, None if original == key else original, batch))
            return out

        async with self._transaction(commit=commit) as conn:
            await conn.execute(_STAGING)
            while True:
                try:
                    records = await asyncio.to_thread(chunk)
                except Exception as exc:
                    raise _RowsFailed from exc
                if not records:
                    break
                await conn.copy_records_to_table("smtpguard_staging", records=records)
            if not batches:
                return AddResult(rows=0, added=0)
            ids = await conn.fetchval(
                "SELECT array_agg(nextval('batches_id_seq')) FROM generate_series(1, $1::int)", len(batches)
            )
            await conn.copy_records_to_table(
                "batches",
                records=[(batch_id, *meta) for meta, batch_id in zip(batches, ids, strict=True)],
                columns=["id", "source", "reason", "added", "expires"],
            )
            status = await conn.execute(_MERGE.format(batch="($1::bigint[])[batch]"), ids)
        return AddResult(rows=offered, added=int(status.split()[-1]))

    async def remove(self, keys: Sequence[str]) -> list[str]:
        async with self._transaction() as conn:
            gone = {
                r[0] for r in await conn.fetch("DELETE FROM entries WHERE key = ANY($1::text[]) RETURNING key", keys)
            }
        return [key for key in dict.fromkeys(keys) if key in gone]

    async def match(self, keys: Sequence[str], today: str | None = None) -> StoredEntry | None:
        with self._errors():
            # Bounded: while the server is down the relay must answer 451 now, not after TCP gives up.
            async with asyncio.timeout(self._lookup_timeout):
                try:
                    found = await self._lookup(keys)
                except _LOST:
                    found = await self._lookup(keys)
        if not found:
            return None
        return most_specific((StoredEntry(*r) for r in found), keys, today or utc_today())

    async def _lookup(self, keys: Sequence[str]) -> list[Any]:
        conn = await self._pool.acquire()
        try:
            return list(await conn.fetch(_MATCH_SQL, list(keys)))
        except BaseException:
            # Cut short (timeout, server gone): drop the connection at once. Handing it back
            # would wait for the server to confirm the cancel, forever if it no longer answers.
            conn.terminate()
            raise
        finally:
            await self._pool.release(conn)

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[StoredEntry]:
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
                yield StoredEntry(*row)

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
                records=[(*astuple(e), self.relay) for e in events],  # Event's fields are in _EVENT_COLUMNS order
                columns=[*_EVENT_COLUMNS, "relay"],
            )

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None
    ) -> list[Event]:
        where: list[str] = []
        args: list[str | int] = []
        if since:
            args.append(since)
            where.append(f"time >= ${len(args)}")
        if sender:
            args.append(sender)
            where.append(f"lower(sender) = lower(${len(args)})")
        sql = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [Event(*r) for r in reversed(rows)]

    # -- local users -------------------------------------------------------------

    async def set_user(self, name: str, password_hash: str) -> bool:
        async with self._connection() as conn:
            # xmax = 0: the row was inserted, not updated (one statement, no race between relays).
            return bool(
                await conn.fetchval(
                    "INSERT INTO users (name, hash, created) VALUES ($1, $2, $3)"
                    " ON CONFLICT (name) DO UPDATE SET hash = excluded.hash RETURNING xmax = 0",
                    name,
                    password_hash,
                    utc_now(),
                )
            )

    async def remove_user(self, name: str) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval("DELETE FROM users WHERE name = $1 RETURNING name", name) is not None

    async def user_hash(self, name: str) -> str | None:
        async with self._connection() as conn:
            found = await conn.fetchval("SELECT hash FROM users WHERE name = $1", name)
        return None if found is None else str(found)

    async def users(self) -> list[tuple[str, str]]:
        async with self._connection() as conn:
            rows = await conn.fetch('SELECT name, created FROM users ORDER BY name COLLATE "C"')
        return [(str(r[0]), str(r[1])) for r in rows]


async def _keep_session(conn: Any) -> None:
    """Pool release without asyncpg's RESET ALL/UNLISTEN query: a second round trip per lookup.

    Safe because this store never changes session state (no SET, LISTEN or
    session advisory locks; its temporary table is ON COMMIT DROP). asyncpg
    still rolls back a transaction left open before calling this.
    """


def _describe(server: str, secrets: Sequence[str], exc: BaseException) -> StoreError:
    text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return StoreError(f"store {server}: {text}")
