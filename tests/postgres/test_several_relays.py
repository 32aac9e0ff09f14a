"""Several relays on one PostgreSQL database, and a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from smtpguard.config import ConfigError, Settings, StoreSettings, load
from smtpguard.suppression.addresses import parse_entry
from smtpguard.suppression.store import EntryRow, Event, StoreError, connect
from smtpguard.suppression.store.postgres import PostgresStore
from smtpguard.suppression.store.postgres_connect import describe_server

from .cluster import PASSWORD_USER, SUPERUSER, Cluster, free_port


def row(text: str) -> EntryRow:
    e = parse_entry(text)
    return EntryRow(e.key, e.kind, e.original, "manual", "unsubscribed", "2024-01-01T00:00:00+00:00", None)


def event(recipient: str) -> Event:
    return Event("2024-03-01T10:00:00+00:00", "rejected", "s@corp.example", recipient, recipient, "manual", "", "", "")


async def open_relay(dsn: str | None, name: str) -> PostgresStore:
    return await PostgresStore.open(dsn, relay=name)


@asynccontextmanager
async def relay_a_with_jane(dsn: str) -> AsyncIterator[PostgresStore]:
    """relay-a's store, holding jane@example.com (checked), closed on the way out."""
    store = await open_relay(dsn, "relay-a")
    try:
        await store.add_entries([row("jane@example.com")])
        assert await store.match(["jane@example.com"]) is not None
        yield store
    finally:
        await store.close()


async def finds_jane(store: PostgresStore) -> None:
    found = await store.match(["jane@example.com"])
    assert found is not None and found.original == "jane@example.com"


async def test_an_entry_added_through_one_relay_is_matched_by_the_other_at_once(pg_dsn: str) -> None:
    a = await open_relay(pg_dsn, "relay-a")
    b = await open_relay(pg_dsn, "relay-b")
    try:
        assert await b.match(["jane@example.com"]) is None  # b's pool has a warm connection
        await a.add_entries([row("jane@example.com")])
        found = await b.match(["jane@example.com"])
        assert found is not None and found.source == "manual"
        assert await b.remove(["jane@example.com"]) == ["jane@example.com"]
        assert await a.match(["jane@example.com"]) is None
        # one audit log, each event with the relay that wrote it
        await a.record_events([event("x@example.com")])
        await b.record_events([event("y@example.com")])
        assert [e.recipient for e in await a.events()] == ["x@example.com", "y@example.com"]
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert [tuple(r) for r in await conn.fetch("SELECT recipient, relay FROM events ORDER BY id")] == [
                ("x@example.com", "relay-a"),
                ("y@example.com", "relay-b"),
            ]
        finally:
            await conn.close()
    finally:
        await a.close()
        await b.close()


async def test_two_relays_opening_a_fresh_database_at_once(pg_dsn: str) -> None:
    stores = await asyncio.gather(*(open_relay(pg_dsn, f"r{i}") for i in range(4)))
    try:
        await stores[0].add_entries([row("jane@example.com")])
        assert all([await s.match(["jane@example.com"]) is not None for s in stores])
    finally:
        for s in stores:
            await s.close()


async def test_an_outage_raises_store_error_quickly_and_the_store_recovers(pg_cluster: Cluster, pg_dsn: str) -> None:
    async with relay_a_with_jane(pg_dsn) as store:
        pg_cluster.stop()
        try:
            for _ in range(3):  # the dropped connection, then refused reconnections
                start = time.monotonic()
                with pytest.raises(StoreError, match=r"store postgresql://127\.0\.0\.1:\d+/t\d+: "):
                    await store.match(["jane@example.com"])
                assert time.monotonic() - start < 2.0
            with pytest.raises(StoreError):
                await store.add_entries([row("bob@example.com")])
        finally:
            pg_cluster.start()
        await finds_jane(store)  # back without reopening the store
        assert (await store.add_entries([row("bob@example.com")])).added == 1


async def test_an_unreachable_server_is_named_without_the_password() -> None:
    dsn = f"postgresql://smtpguard:s3cret-pw@127.0.0.1:{free_port()}/lists"
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(dsn, connect_timeout=1.0)
    assert time.monotonic() - start < 2.0
    message = str(info.value)
    assert message.startswith("store postgresql://127.0.0.1:") and "/lists: " in message
    assert "s3cret-pw" not in message


def test_describe_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    assert describe_server("postgresql://u:pw@db1.example:5433/lists?sslmode=verify-full") == (
        "postgresql://db1.example:5433/lists"
    )
    assert describe_server("postgresql://db1.example/lists") == "postgresql://db1.example:5432/lists"
    assert describe_server("postgresql://u:pw@a:5432,b:5432/lists") == "postgresql://a:5432,b:5432/lists"
    monkeypatch.setenv("PGHOST", "db2.example")
    monkeypatch.setenv("PGPORT", "6432")
    monkeypatch.setenv("PGDATABASE", "smtpguard")
    assert describe_server(None) == "postgresql://db2.example:6432/smtpguard"
    assert describe_server("postgresql:///other") == "postgresql://db2.example:6432/other"


# --- connection settings the way PostgreSQL users give them -------------------------------------


async def password_account(pg_dsn: str) -> str:
    """Give the test database to an account that must log in with 'right-pw'; the database's name."""
    database = pg_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_USER}')"
            f" THEN CREATE ROLE {PASSWORD_USER} LOGIN; END IF; END $$"
        )
        await admin.execute(f"ALTER ROLE {PASSWORD_USER} PASSWORD 'right-pw'")
        await admin.execute(f"ALTER DATABASE {database} OWNER TO {PASSWORD_USER}")
        await admin.execute(f"ALTER SCHEMA public OWNER TO {PASSWORD_USER}")
    finally:
        await admin.close()
    return database


async def test_libpq_environment_variables_and_sslmode(
    pg_cluster: Cluster, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = pg_dsn.rsplit("/", 1)[1]
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg_cluster.port))
    monkeypatch.setenv("PGUSER", SUPERUSER)
    monkeypatch.setenv("PGDATABASE", database)
    store = await open_relay(None, "env")  # everything from the environment
    try:
        await store.add_entries([row("jane@example.com")])
    finally:
        await store.close()
    store = await open_relay("postgresql://?sslmode=prefer", "env")
    try:
        assert await store.match(["jane@example.com"]) is not None
    finally:
        await store.close()
    # the test cluster has no TLS: sslmode=require must refuse to go on in clear
    with pytest.raises(StoreError, match=f"store postgresql://127.0.0.1:{pg_cluster.port}/{database}: "):
        await PostgresStore.open("postgresql://?sslmode=require")


async def test_a_password_file_and_a_wrong_password(
    pg_cluster: Cluster, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = await password_account(pg_dsn)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_cluster.port}:{database}:{PASSWORD_USER}:right-pw\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    dsn = f"postgresql://{PASSWORD_USER}@127.0.0.1:{pg_cluster.port}/{database}"
    store = await open_relay(dsn, "passfile")
    try:
        await store.add_entries([row("jane@example.com")])
        assert await store.match(["jane@example.com"]) is not None
    finally:
        await store.close()
    monkeypatch.delenv("PGPASSFILE")
    wrong = f"postgresql://{PASSWORD_USER}:wrong-pw@127.0.0.1:{pg_cluster.port}/{database}"
    with pytest.raises(StoreError, match="password authentication failed") as info:
        await PostgresStore.open(wrong)
    assert "wrong-pw" not in str(info.value)


async def test_a_server_that_stops_answering_gives_store_error_within_the_lookup_timeout(
    pg_cluster: Cluster, pg_dsn: str
) -> None:
    async with relay_a_with_jane(pg_dsn) as store:
        pg_cluster.freeze()
        try:
            for _ in range(2):  # the hung connection, then a new one that gets no answer either
                start = time.monotonic()
                with pytest.raises(StoreError, match="no answer in time"):
                    # wait_for: a hang must fail this test, not stall the suite
                    await asyncio.wait_for(store.match(["jane@example.com"]), 5)
                assert time.monotonic() - start < 2.0
        finally:
            pg_cluster.thaw()
        await finds_jane(store)


async def test_password_file_and_systemd_credential_through_the_configuration(
    pg_cluster: Cluster, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = await password_account(pg_dsn)
    for name in ("PGPASSWORD", "PGPASSFILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    url = f"postgresql://{PASSWORD_USER}@127.0.0.1:{pg_cluster.port}/{database}"
    secret = tmp_path / "store-password"
    secret.write_text("right-pw\n")
    settings = Settings(store=StoreSettings(url=url, password_file=secret, relay_name="office-1"))
    store = await connect(settings)
    try:
        await store.add_entries([row("jane@example.com")])
        await store.record_events([event("x@example.com")])
        assert [e.relay for e in await store.events()] == ["office-1"]
    finally:
        await store.close()
    # systemd: LoadCredential=store-password:... puts it in $CREDENTIALS_DIRECTORY
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "store-password").write_text("right-pw")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    store = await connect(Settings(store=StoreSettings(url=url)), create=False)
    try:
        assert await store.match(["jane@example.com"]) is not None
    finally:
        await store.close()
    # a wrong one: refused, and never shown
    (credentials / "store-password").write_text("wrong-pw")
    with pytest.raises(StoreError, match="password authentication failed") as info:
        await connect(Settings(store=StoreSettings(url=url)), create=False)
    assert "wrong-pw" not in str(info.value)
    with pytest.raises(StoreError, match=f"store password file {tmp_path}/none: No such file"):
        await connect(Settings(store=StoreSettings(url=url, password_file=tmp_path / "none")))


def test_store_url_in_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[store]\nurl = "postgresql://db1.example,db2.example/lists?target_session_attrs=read-write"\n'
        'password_file = "/run/pw"\nrelay_name = "paris"\n'
    )
    store = load(cfg).store
    assert (store.url, store.password_file, store.relay_name) == (
        "postgresql://db1.example,db2.example/lists?target_session_attrs=read-write",
        Path("/run/pw"),
        "paris",
    )
    assert load(cfg, db=tmp_path / "x.db").store.url is None  # --db: that SQLite file
    cfg.write_text('[store]\nurl = "mysql://db/lists"\n')
    with pytest.raises(ConfigError, match=r"\[store\] url must be a \"postgresql://...\" URL"):
        load(cfg)


def test_config_show_never_prints_the_store_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\nurl = "postgresql://sg:s3cret-pw@db1.example:5433/lists?sslmode=require"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPGUARD_")}
    shown = subprocess.run(
        [sys.executable, "-m", "smtpguard", "config", "show", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert 'url = "postgresql://sg:***@db1.example:5433/lists?sslmode=require"' in shown.stdout
    assert "s3cret-pw" not in shown.stdout + shown.stderr
