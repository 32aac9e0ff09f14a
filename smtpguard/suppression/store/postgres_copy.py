"""Imports into PostgreSQL: rows to COPY records, staged, then one set-based merge.

The caller's rows (plain, or chunks parsed in a worker thread by ingest) are
turned into compact records off the event loop: the shared fields of a
batch (source, reason, date, expiry) once per batch, an index on each row.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from .base import Rows, RowTuple

# Rows staged per COPY: big enough that round trips do not count, small enough
# that pulling one chunk from the caller's generator never blocks for long.
_CHUNK = 20_000
STAGING = (
    "CREATE TEMP TABLE smtpguard_staging"
    ' (seq bigint, key text COLLATE "C", kind text, original text, batch bigint) ON COMMIT DROP'
)
# One set-based merge: the first row offered for a key wins (as in SQLite), existing keys are kept.
MERGE = (
    "INSERT INTO entries (key, kind, original, batch)"
    " SELECT DISTINCT ON (key) key, kind, original, {batch} FROM smtpguard_staging ORDER BY key, seq"
    " ON CONFLICT (key) DO NOTHING"
)


class RowsFailed(Exception):
    """The caller's rows raised: re-raised as it was once the transaction is rolled back."""


StagedRecord = tuple[int, str, str, str | None, int]  # seq, key, kind, original (None: the key), batch index


class Staging:
    """An import's running count and its batches (shared fields -> index from 1)."""

    def __init__(self) -> None:
        self.offered = 0
        self.batches: dict[tuple[str, str, str, str | None], int] = {}

    def records(self, rows: Iterable[RowTuple]) -> list[StagedRecord]:
        # Runs in a worker thread: `rows` may be a file being parsed.
        out: list[StagedRecord] = []
        batches = self.batches
        for key, kind, original, src, reason, added, expires in rows:
            self.offered += 1
            meta = (src, reason, added, expires)
            batch = batches.get(meta)
            if batch is None:
                batch = batches[meta] = len(batches) + 1
            out.append((self.offered, key, kind, None if original == key else original, batch))
        return out


async def staged(rows: Rows, staging: Staging) -> AsyncIterator[list[StagedRecord]]:
    """`rows` as COPY records, _CHUNK at a time, converted off the event loop.

    Whatever the rows raise comes out as RowsFailed: a file's OSError is the
    caller's, not a database error.
    """
    pending: list[StagedRecord] = []
    if isinstance(rows, AsyncIterable):
        chunks = aiter(rows)
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise RowsFailed from exc
            pending += await asyncio.to_thread(staging.records, chunk)
            if len(pending) >= _CHUNK:
                yield pending
                pending = []
    else:
        source = iter(rows)
        while True:
            try:
                records = await asyncio.to_thread(staging.records, itertools.islice(source, _CHUNK))
            except Exception as exc:
                raise RowsFailed from exc
            if not records:
                break
            yield records
    if pending:
        yield pending
