"""The SQLite store's bulk operations on one source and on the audit log.

Plain functions over the writer connection, run inside the store's own
transaction (`SQLiteStore._transaction`); kept apart so sqlite.py stays the
connection and lookup machinery.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from . import base
from .base import EntryRow, EventGroup, SourceDiff, SourceGuard, plan_replace, utc_today

_SOURCE_ENTRIES = (
    "SELECT e.key, e.kind, coalesce(e.original, e.key), b.source, b.reason, b.added, b.expires"
    " FROM entries e JOIN batches b ON b.id = e.batch WHERE b.source = ?"
)


async def replace_source(
    db: aiosqlite.Connection, source: str, rows: Sequence[EntryRow], guard: SourceGuard | None
) -> SourceDiff:
    async with db.execute(_SOURCE_ENTRIES, (source,)) as cur:
        current = [EntryRow._make(r) for r in await cur.fetchall()]
    await db.execute("CREATE TEMP TABLE wanted (key TEXT PRIMARY KEY) WITHOUT ROWID")
    try:
        await db.executemany("INSERT OR IGNORE INTO temp.wanted VALUES (?)", ((r.key,) for r in rows))
        async with db.execute(
            "SELECT e.key FROM entries e JOIN batches b ON b.id = e.batch"
            " WHERE b.source != ? AND e.key IN (SELECT key FROM temp.wanted)",
            (source,),
        ) as cur:
            others = {str(r[0]) for r in await cur.fetchall()}
    finally:
        await db.execute("DROP TABLE temp.wanted")
    add, remove, unchanged, elsewhere = plan_replace(source, current, rows, others, utc_today())
    fresh = {r.key for r in add}
    gone = tuple(e.original for e in remove if e.key not in fresh)
    if guard is not None:
        guard(len(current), len(gone), unchanged + len(add))
    await db.executemany("DELETE FROM entries WHERE key = ?", ((e.key,) for e in remove))
    batches: dict[base.BatchMeta, int] = {}
    for meta in base.batch_metas(add):
        async with db.execute(
            "INSERT INTO batches (source, reason, added, expires) VALUES (?,?,?,?) RETURNING id", meta
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        batches[meta] = int(row[0])
    await db.executemany(
        "INSERT INTO entries (key, kind, original, batch) VALUES (?,?,?,?)", base.entry_params(add, batches)
    )
    return SourceDiff(tuple(r.original for r in add), gone, unchanged, elsewhere)


async def remove_source(db: aiosqlite.Connection, source: str) -> int:
    async with db.execute(
        "DELETE FROM entries WHERE batch IN (SELECT id FROM batches WHERE source = ?) RETURNING key", (source,)
    ) as cur:
        gone = len(list(await cur.fetchall()))
    await db.execute("DELETE FROM batches WHERE source = ?", (source,))
    return gone


async def event_counts(db: aiosqlite.Connection, since: str, by: EventGroup, limit: int) -> list[tuple[str, int]]:
    column = "user" if by == "user" else "lower(sender)"
    async with db.execute(
        f"SELECT {column} AS name, count(*) AS n FROM events WHERE time >= ?"
        " GROUP BY name ORDER BY n DESC, name LIMIT ?",
        (since, limit),
    ) as cur:
        return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def prune_events(db: aiosqlite.Connection, before: str) -> int:
    async with db.execute("DELETE FROM events WHERE time < ? RETURNING id", (before,)) as cur:
        return len(list(await cur.fetchall()))
