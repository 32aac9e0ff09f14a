"""Copying a SQLite list into PostgreSQL: `smtpguard store migrate --to postgresql://...`.

Table by table, as stored (batches with their ids, entries, the audit log,
users, the list's matching rules), streamed in chunks and written with COPY
in ONE transaction: the target has all of it or, on any error, none.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpguard.suppression.store.base import StoreError
from smtpguard.suppression.store.sqlite import SQLiteStore
from smtpguard.suppression.store.sqlite_files import describe, missing, store_errors

if TYPE_CHECKING:
    from smtpguard.suppression.store.postgres import PostgresStore

_CHUNK = 20_000
# (table, SQLite select, PostgreSQL columns), in an order that needs no deferred checks.
_TABLES: list[tuple[str, str, list[str]]] = [
    (
        "batches",
        "SELECT id, source, reason, added, expires FROM batches",
        ["id", "source", "reason", "added", "expires"],
    ),
    ("entries", "SELECT key, kind, original, batch FROM entries", ["key", "kind", "original", "batch"]),
    (
        "events",
        "SELECT time, action, sender, recipient, entry, source, client, user, message_id FROM events ORDER BY id",
        ["time", "action", "sender", "recipient", "entry", "source", "client", "user", "message_id", "relay"],
    ),
    ("users", "SELECT name, hash, created, addresses FROM users", ["name", "hash", "created", "addresses"]),
    ("web_roles", "SELECT name, role FROM web_roles", ["name", "role"]),
    ("tokens", "SELECT name, scope, hash, created FROM tokens", ["name", "scope", "hash", "created"]),
]
_CLEARED = ["entries", "batches", "events", "web_roles", "users", "tokens"]


class TargetNotEmpty(StoreError):
    """The PostgreSQL database already holds a list: refused without --force."""


@dataclass(frozen=True, slots=True)
class Copied:
    entries: int
    batches: int
    events: int
    users: int
    rules: str


async def migrate_sqlite(source: Path, target: PostgresStore, *, relay: str, force: bool = False) -> Copied:
    """Copy the SQLite list at `source` into `target` (an open PostgresStore)."""
    if not source.exists():
        raise missing(source)
    # An older file gains the tables this smtpguard copies (its migrations only add).
    await (await SQLiteStore.open(source, create=False)).close()
    try:
        reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise describe(source, exc) from None
    try:
        with store_errors(source):
            row = reader.execute("SELECT value FROM meta WHERE name = 'rules'").fetchone()
        rules = str(row[0]) if row else ""
        counts: dict[str, int] = {}
        async with target._transaction() as conn:
            if not force:
                held = await conn.fetchval("SELECT (SELECT count(*) FROM entries) + (SELECT count(*) FROM users)")
                held += await conn.fetchval("SELECT count(*) FROM events")
                if held:
                    raise TargetNotEmpty(
                        f"store {target.server}: already holds a list, audit events or users;"
                        " use --force to replace them (nothing was changed)"
                    )
            await conn.execute("TRUNCATE " + ", ".join(_CLEARED))
            for table, select, columns in _TABLES:
                extra = (relay,) if table == "events" else ()
                counts[table] = await _copy_table(reader, source, select, extra, conn, table, columns)
            await conn.execute("SELECT setval('batches_id_seq', coalesce((SELECT max(id) FROM batches), 0) + 1, false)")
            if rules:
                await conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('rules', $1) ON CONFLICT (name) DO UPDATE SET value = $1",
                    rules,
                )
    finally:
        reader.close()
    return Copied(counts["entries"], counts["batches"], counts["events"], counts["users"], rules)


async def _copy_table(
    reader: sqlite3.Connection,
    source: Path,
    select: str,
    extra: tuple[str, ...],
    conn: Any,
    table: str,
    columns: list[str],
) -> int:
    """One SQLite table into its PostgreSQL twin, read _CHUNK rows at a time off the event loop."""
    with store_errors(source):
        cursor = reader.execute(select)

    def fetch() -> list[tuple[Any, ...]]:
        return [(*r, *extra) for r in cursor.fetchmany(_CHUNK)]

    total = 0
    while True:
        with store_errors(source):
            rows = await asyncio.to_thread(fetch)
        if not rows:
            return total
        await conn.copy_records_to_table(table, records=rows, columns=columns)
        total += len(rows)
