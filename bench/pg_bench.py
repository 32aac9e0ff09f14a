"""Import and lookup speed of the PostgreSQL store beside the SQLite store.

    .venv/bin/python bench/pg_bench.py [--rows 1000000] [--lookups 20000] [--dsn postgresql://...]

Without --dsn it starts a private PostgreSQL cluster (tests/postgres/cluster.py:
its own directory, 127.0.0.1, a free port) with PostgreSQL's default
durability (fsync on), imports the same pre-parsed rows through
`Store.add_entries` into a fresh SQLite file and a fresh PostgreSQL database,
then times `Store.match` one recipient at a time (the RCPT path: address,
then its domains). Prints one line per backend and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from smtpguard.suppression.addresses import MatchRules, lookup_keys
from smtpguard.suppression.store import EntryRow, Store, open_store
from smtpguard.suppression.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parent.parent
ADDED = "2024-01-01T00:00:00+00:00"


def rows(count: int) -> Iterator[EntryRow]:
    """`count` distinct addresses over 5,000 domains, then 1% repeated (duplicates to count)."""
    for i in range(count):
        key = f"user{i}@d{i % 5000}.example"
        yield EntryRow(key, "address", key, "bench", "unsubscribed", ADDED, None)
    for i in range(0, count, 100):
        key = f"user{i}@d{i % 5000}.example"
        yield EntryRow(key, "address", key, "bench", "unsubscribed", ADDED, None)


async def measure(store: Store, count: int, lookups: int) -> dict[str, float]:
    start = time.perf_counter()
    result = await store.add_entries(rows(count))
    imported = time.perf_counter() - start
    assert result.added == count, result
    rng = random.Random(1)
    # Half listed, half not: both paths of an RCPT.
    probes = [
        lookup_keys(f"user{n}@d{n % 5000}.example" if k % 2 else f"nobody{n}@d{n % 5000}.example")
        for k, n in enumerate(rng.randrange(count) for _ in range(lookups))
    ]
    for keys in probes[:200]:  # warm the caches and the prepared statement
        await store.match(keys)
    start = time.perf_counter()
    hits = 0
    for keys in probes:
        hits += await store.match(keys) is not None
    per_lookup = (time.perf_counter() - start) / lookups
    assert hits == lookups // 2, hits
    return {"import_s": round(imported, 2), "rows_per_s": round(result.rows / imported), "lookup_us": per_lookup * 1e6}


async def fresh_database(base: str, name: str) -> str:
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{base}/{name}"


async def run(count: int, lookups: int, dsn: str | None, work: Path) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    sqlite = await open_store(work / "bench.db", MatchRules())
    try:
        results["sqlite"] = await measure(sqlite, count, lookups)
    finally:
        await sqlite.close()
    cluster = None
    if dsn is None:
        sys.path.insert(0, str(ROOT))
        from tests.postgres.cluster import Cluster, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("PostgreSQL server binaries not found: run scripts/install-postgres.sh, or give --dsn")
        cluster = Cluster(bin_dir)
        cluster.init(durable=True)
        cluster.start()
        dsn = await fresh_database(cluster.dsn_base, "bench")
    try:
        store = await PostgresStore.open(dsn, relay="bench")
        try:
            results["postgresql"] = await measure(store, count, lookups)
        finally:
            await store.close()
    finally:
        if cluster is not None:
            cluster.destroy()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--dsn", help="an existing, empty PostgreSQL database (default: a private cluster)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smtpguard-pg-bench-"))
    try:
        results = asyncio.run(run(args.rows, args.lookups, args.dsn, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for backend, figures in results.items():
        print(
            f"{backend:<11} import {args.rows:,} rows (+1% duplicates): {figures['import_s']:6.2f} s"
            f" ({figures['rows_per_s']:,.0f} rows/s); match: {figures['lookup_us']:6.1f} µs per recipient"
        )
    print(json.dumps({"rows": args.rows, "lookups": args.lookups, **results}))


if __name__ == "__main__":
    main()
