"""Import, lookup and relay speed of the PostgreSQL store beside the SQLite store.

    .venv/bin/python bench/pg_bench.py [--rows 1000000] [--lookups 20000] [--dsn postgresql://...]
        [--file-import] [--relay] [--messages 2000]

Without --dsn it starts a private PostgreSQL cluster (tests/postgres/cluster.py:
its own directory, 127.0.0.1, a free port) with PostgreSQL's default
durability (fsync on), then for each backend:

- store: the same pre-parsed rows through `Store.add_entries` into a fresh
  SQLite file and a fresh PostgreSQL database, then `Store.match` one
  recipient at a time (the RCPT path: address, then its domains), half
  listed, half not;
- replica (PostgreSQL only): the alternative design, every key held in a
  local set kept in step by LISTEN/NOTIFY: the time and memory to load it,
  and a lookup in it;
- --file-import: bench/import_bench.py's 1M-row French export through the
  real `smtpguard import` command (CLI start-up included), `--db FILE`
  against `[store] url`;
- --relay: bench/relay_bench.py's load (smtp-source -> smtpguard serve ->
  smtp-sink, 1M-entry list) with the list in SQLite, then in PostgreSQL.

Prints one line per measure and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from smtpguard.suppression.addresses import MatchRules, lookup_keys
from smtpguard.suppression.store import EntryRow, Store, open_store
from smtpguard.suppression.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.postgres.cluster
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


async def store_figures(count: int, lookups: int, dsn: str, work: Path) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    sqlite = await open_store(work / "bench.db", MatchRules())
    try:
        results["sqlite"] = await measure(sqlite, count, lookups)
    finally:
        await sqlite.close()
    store = await PostgresStore.open(dsn, relay="bench")
    try:
        results["postgresql"] = await measure(store, count, lookups)
    finally:
        await store.close()
    results["replica"] = await replica_figures(dsn, count, lookups)
    return results


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def replica_figures(dsn: str, count: int, lookups: int) -> dict[str, float]:
    """The design not taken: every key in a local set (kept in step by LISTEN/NOTIFY)."""
    before = rss_mb()
    start = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        keys = {r[0] for r in await conn.fetch("SELECT key FROM entries")}
    finally:
        await conn.close()
    load = time.perf_counter() - start
    grown = rss_mb() - before
    rng = random.Random(2)
    probes = [lookup_keys(f"nobody{n}@d{n % 5000}.example") for n in (rng.randrange(count) for _ in range(lookups))]
    start = time.perf_counter()
    found = sum(any(k in keys for k in probe) for probe in probes)
    per_lookup = (time.perf_counter() - start) / lookups
    assert found == 0
    return {"load_s": round(load, 2), "rss_mb": round(grown), "lookup_us": per_lookup * 1e6}


def file_import_figures(rows: int, dsn: str, work: Path) -> dict[str, float]:
    """`smtpguard import` of import_bench's export: --db FILE, then [store] url."""
    import import_bench

    export = work / "export.csv"
    import_bench.generate(export, rows)
    config = work / "pg.toml"
    config.write_text(f'[store]\nurl = "{dsn}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPGUARD_")}
    figures: dict[str, float] = {}
    for name, where in (("sqlite", ["--db", str(work / "import.db")]), ("postgresql", ["--config", str(config)])):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "smtpguard", "import", str(export), *where, "--json"],
            check=True,
            capture_output=True,
            env=env,
            cwd=ROOT,
        )
        figures[name] = round(time.perf_counter() - start, 2)
    return figures


def relay_figures(entries: int, messages: int, dsn: str, work: Path) -> dict[str, float]:
    """relay_bench's load through `smtpguard serve`, the list in SQLite then in PostgreSQL (msg/s)."""
    import relay_bench as rb

    from tests.interop.mta import free_port

    if rb.which("smtp-source") is None or rb.which("smtp-sink") is None:
        raise SystemExit("--relay needs smtp-source and smtp-sink: bash scripts/install-interop.sh")
    args = argparse.Namespace(entries=entries, messages=messages, recipients=5, sessions=10, size=4096)
    sqlite_list = work / "relay-list.db"
    rb.build_sqlite_list(sqlite_list, entries)

    async def fill() -> None:
        store = await PostgresStore.open(dsn, relay="bench")
        try:
            rows = (
                EntryRow(f"{n}{rb.RCPT_BASE}", "address", f"{n}{rb.RCPT_BASE}", "bench", "unsubscribed", ADDED, None)
                for n in rb.listed_numbers(entries)
            )
            assert (await store.add_entries(rows)).added == entries
        finally:
            await store.close()

    asyncio.run(fill())
    shm = Path("/dev/shm")
    sink = rb.Sink(Path(tempfile.mkdtemp(prefix="sgpb-sink-", dir=shm if shm.is_dir() else work)))
    sink.start()
    figures: dict[str, float] = {}
    try:
        for name in ("sqlite", "postgresql"):
            config = work / f"relay-{name}.toml"
            port = free_port()
            rb.write_config(config, port, sink.port, sqlite_list)
            if name == "postgresql":
                with config.open("a") as fh:
                    fh.write(f'url = "{dsn}"\nrelay_name = "bench"\n')  # [store] is the last section
            figures[name] = relay_run(name, config, port, sink, args, work)
    finally:
        sink.stop()
    return figures


def relay_run(name: str, config: Path, port: int, sink: Any, args: argparse.Namespace, work: Path) -> float:
    """One `smtpguard serve`: a warm-up, then the best of two runs (msg/s)."""
    import relay_bench as rb

    with (work / f"relay-{name}.log").open("ab") as log:
        relay = subprocess.Popen(
            [*rb.smtpguard_command(), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        rb.wait_port(port, lambda: relay.poll() is None, "smtpguard serve")
        target = rb.Target(name, port, lambda: rb.process_cpu(relay.pid), filtered=True)
        rb.measure(args, target, sink, min(200, args.messages), work)  # warm-up
        best = 0.0
        for _ in range(2):
            run = rb.measure(args, target, sink, args.messages, work)
            if run.problems:
                raise SystemExit(f"{name}: {run.problems}")
            best = max(best, run.rate)
        return round(best)
    finally:
        rb.stop_process(relay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--dsn", help="an existing PostgreSQL server's URL, no database (default: a private cluster)")
    parser.add_argument("--file-import", action="store_true", help="also time `smtpguard import` of a 1M-row export")
    parser.add_argument("--relay", action="store_true", help="also run relay_bench's load against both stores")
    parser.add_argument("--messages", type=int, default=2000, help="--relay: messages per run")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))  # import_bench, relay_bench
    work = Path(tempfile.mkdtemp(prefix="smtpguard-pg-bench-"))
    work.chmod(0o755)
    cluster = None
    base = args.dsn
    results: dict[str, Any] = {"rows": args.rows, "lookups": args.lookups}
    try:
        if base is None:
            from tests.postgres.cluster import Cluster, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise SystemExit("PostgreSQL server binaries not found: run scripts/install-postgres.sh, or give --dsn")
            cluster = Cluster(bin_dir)
            cluster.init(durable=True)
            cluster.start()
            base = cluster.dsn_base
        dsn = asyncio.run(fresh_database(base, "bench"))
        results |= asyncio.run(store_figures(args.rows, args.lookups, dsn, work))
        for backend in ("sqlite", "postgresql"):
            f = results[backend]
            print(
                f"{backend:<11} add_entries {args.rows:,} rows (+1% duplicates): {f['import_s']:6.2f} s"
                f" ({f['rows_per_s']:,.0f} rows/s); match: {f['lookup_us']:6.1f} µs per recipient"
            )
        r = results["replica"]
        print(
            f"replica     all keys in a local set: load {r['load_s']:.2f} s, +{r['rss_mb']:.0f} MB;"
            f" lookup {r['lookup_us']:.2f} µs"
        )
        if args.file_import:
            dsn = asyncio.run(fresh_database(base, "fileimport"))
            results["file_import_s"] = f = file_import_figures(args.rows, dsn, work)
            print(f"smtpguard import, {args.rows:,} rows: sqlite {f['sqlite']} s, postgresql {f['postgresql']} s")
        if args.relay:
            dsn = asyncio.run(fresh_database(base, "relay"))
            results["relay_msg_s"] = f = relay_figures(args.rows, args.messages, dsn, work)
            print(f"relay, {args.rows:,} entries: sqlite {f['sqlite']:,.0f}, postgresql {f['postgresql']:,.0f} msg/s")
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
