"""PostgreSQL's bulk operations on one source and on the audit log (as sqlite_more.py)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from . import base
from .base import EntryRow, EventGroup, SourceDiff, SourceGuard, plan_replace, utc_today

_SOURCE_ENTRIES = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch WHERE b.source = $1"
)


class SourceAndLogTables:
    """`replace_source`, `remove_source`, `event_counts`, `prune_events`; the connections come from PostgresStore."""

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    def _transaction(self, *, commit: bool = True) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def replace_source(
        self, source: str, rows: Sequence[EntryRow], *, commit: bool = True, guard: SourceGuard | None = None
    ) -> SourceDiff:
        async with self._transaction(commit=commit) as conn:
            # Two relays replacing one source at once would each plan from a stale list.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('smtpguard source ' || $1))", source)
            current = [EntryRow._make(r) for r in await conn.fetch(_SOURCE_ENTRIES, source)]
            wanted = list({r.key for r in rows})
            others = {
                str(r[0])
                for r in await conn.fetch(
                    "SELECT e.key FROM entries e JOIN batches b ON b.id = e.batch"
                    " WHERE b.source != $1 AND e.key = ANY($2::text[])",
                    source,
                    wanted,
                )
            }
            add, remove, unchanged, elsewhere = plan_replace(source, current, rows, others, utc_today())
            fresh = {r.key for r in add}
            gone = tuple(e.original for e in remove if e.key not in fresh)
            if guard is not None:
                guard(len(current), len(gone), unchanged + len(add))
            await conn.execute("DELETE FROM entries WHERE key = ANY($1::text[])", [e.key for e in remove])
            batches: dict[base.BatchMeta, int] = {}
            for meta in base.batch_metas(add):
                batches[meta] = int(
                    await conn.fetchval(
                        "INSERT INTO batches (source, reason, added, expires) VALUES ($1, $2, $3, $4) RETURNING id",
                        *meta,
                    )
                )
            await conn.executemany(
                "INSERT INTO entries (key, kind, original, batch) VALUES ($1, $2, $3, $4)",
                base.entry_params(add, batches),
            )
        return SourceDiff(tuple(r.original for r in add), gone, unchanged, elsewhere)

    async def remove_source(self, source: str) -> int:
        async with self._transaction() as conn:
            gone = await conn.fetchval(
                "WITH gone AS (DELETE FROM entries WHERE batch IN (SELECT id FROM batches WHERE source = $1)"
                " RETURNING 1) SELECT count(*) FROM gone",
                source,
            )
            await conn.execute("DELETE FROM batches WHERE source = $1", source)
        return int(gone)

    async def event_counts(self, since: str, by: EventGroup, limit: int) -> list[tuple[str, int]]:
        column = '"user"' if by == "user" else "lower(sender)"
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT name, n FROM (SELECT {column} AS name, count(*) AS n FROM events WHERE time >= $1"
                ' GROUP BY 1) counted ORDER BY n DESC, name COLLATE "C" LIMIT $2',
                since,
                limit,
            )
        return [(str(r[0]), int(r[1])) for r in rows]

    async def prune_events(self, before: str) -> int:
        async with self._connection() as conn:
            gone = await conn.fetchval(
                "WITH gone AS (DELETE FROM events WHERE time < $1 RETURNING 1) SELECT count(*) FROM gone", before
            )
        return int(gone)
