"""`smtpguard store migrate --to postgresql://...`: a SQLite list, its log and users, into PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from smtpguard.passwords import verify_password
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import Event, SQLiteStore
from smtpguard.suppression.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
NO_DOTS = MatchRules(gmail_dots=False)


def smtpguard(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTPGUARD_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "smtpguard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=env,
    )


def event(n: int) -> Event:
    return Event(f"2024-03-{n:02d}T10:00:00+00:00", "rejected", "s@corp.example", f"r{n}@x.example", "@x.example",
                 "domains", "127.0.0.1", "sales", f"<{n}@corp.example>")  # fmt: skip


async def sqlite_list(path: Path) -> None:
    store = await SQLiteStore.open(path, rules=NO_DOTS)  # rules other than the default: they must travel too
    await store.record_events([event(1), event(2), event(3)])
    await store.close()
    (path.parent / "list.txt").write_text("j.ohn@gmail.com\nJane@Example.com\n@x.example\n")
    assert (
        smtpguard("import", str(path.parent / "list.txt"), "--expires", "2999-01-01", "--db", str(path)).returncode == 0
    )
    assert smtpguard("add", "bob@example.org", "--reason", "asked", "--db", str(path)).returncode == 0
    assert smtpguard("user", "add", "sales", "--password-stdin", "--db", str(path), stdin="pw\n").returncode == 0


async def test_migrate_copies_the_list_its_log_and_users(tmp_path: Path, pg_dsn: str) -> None:
    db = tmp_path / "list.db"
    await sqlite_list(db)
    done = smtpguard("store", "migrate", "--to", pg_dsn, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "4 entries in 2 batches, 3 audit events, 1 users" in done.stdout

    store = await PostgresStore.open(pg_dsn, create=False)
    try:
        assert await store.rules() == NO_DOTS
        john = await store.match(["j.ohn@gmail.com"])
        assert john is not None and (john.source, john.expires) == ("list", "2999-01-01")
        bob = await store.match(["bob@example.org"])
        assert bob is not None and (bob.source, bob.reason) == ("manual", "asked")
        assert await store.match(["john@gmail.com"]) is None  # keyed the list's way (no dot folding)
        assert [e.recipient for e in await store.events()] == ["r1@x.example", "r2@x.example", "r3@x.example"]
        assert [name for name, _ in await store.users()] == ["sales"]
        assert verify_password("pw", await store.user_hash("sales") or "")
        # the batch sequence goes on after the copied ids
        assert (await store.add_entries([john._replace(key="new@example.com", original="new@example.com")])).added
        assert await store.count() == 5
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(DISTINCT batch) FROM entries") == 3
    finally:
        await conn.close()


async def test_a_target_that_holds_a_list_is_refused_unless_forced(tmp_path: Path, pg_dsn: str) -> None:
    db = tmp_path / "list.db"
    await sqlite_list(db)
    assert smtpguard("store", "migrate", "--to", pg_dsn, "--db", str(db)).returncode == 0
    assert smtpguard("remove", "bob@example.org", "--db", str(db)).returncode == 0

    again = smtpguard("store", "migrate", "--to", pg_dsn, "--db", str(db))
    assert again.returncode == 2
    assert again.stderr.startswith("smtpguard: store postgresql://127.0.0.1:") and "--force" in again.stderr
    assert len(again.stderr.splitlines()) == 1
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM entries") == 4  # untouched

        forced = smtpguard("store", "migrate", "--to", pg_dsn, "--db", str(db), "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["entries"] == 3
        assert await conn.fetchval("SELECT count(*) FROM entries") == 3
        assert await conn.fetchval("SELECT count(*) FROM events") == 3  # replaced, not doubled
    finally:
        await conn.close()


def test_a_missing_sqlite_file_or_a_bad_url_is_one_line(tmp_path: Path) -> None:
    missing = smtpguard("store", "migrate", "--to", "mysql://x", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "postgresql://" in missing.stderr
