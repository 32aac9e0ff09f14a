"""Allow entries: an address let through inside a blocked domain, through the relay and `check`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smtpguard.service import Service
from smtpguard.suppression.store import SQLiteStore
from smtpguard.suppression.store.schema import MIGRATIONS

from .cli.test_entry_point import proc
from .conftest import RelayFactory
from .relay_helpers import SENDER, blocking_client, in_thread, message, port_of
from .smtp_fixtures import Upstream


async def test_the_relay_lets_an_allowed_address_through_a_blocked_domain(
    make_relay: RelayFactory, upstream: Upstream
) -> None:
    relay = await make_relay(blocked=("@blocked.example", "@eu.sales.blocked.example"))
    service = Service(relay.ctx.store, await relay.ctx.store.rules())
    await service.allow(["jane@blocked.example", "@sales.blocked.example"])

    def session() -> list[int]:
        s = blocking_client(port_of(relay))
        try:
            s.login("alice", "s3cret")
            s.mail(SENDER)
            codes = [
                s.rcpt(a)[0]
                for a in ("Jane+news@Blocked.example", "bob@blocked.example", "a@sales.blocked.example",
                          "b@eu.sales.blocked.example")
            ]  # fmt: skip
            s.data(message())
            return codes
        finally:
            s.quit()

    assert await in_thread(session) == [250, 550, 250, 550]
    assert [r.rcpt_tos for r in upstream.received] == [["Jane+news@Blocked.example", "a@sales.blocked.example"]]


def test_allow_and_check_through_the_command(tmp_path: Path) -> None:
    db = str(tmp_path / "list.db")
    assert proc("add", "--db", db, "@corp.example", "jane@corp.example").returncode == 0
    r = proc("allow", "--db", db, "jane@corp.example")
    assert r.stdout.strip() == "allowed by exception: jane@corp.example (jane@corp.example) (its own block removed)"
    r = proc("check", "--db", db, "jane@corp.example", "bob@corp.example")
    assert r.returncode == 1  # bob is blocked
    lines = r.stdout.splitlines()
    assert lines[0].startswith("allowed  jane@corp.example  by exception jane@corp.example (reason allowed by hand")
    assert lines[1].startswith("blocked  bob@corp.example  by domain entry @corp.example")
    r = proc("allow", "--db", db, "--remove", "jane@corp.example")
    assert r.returncode == 0 and r.stdout.strip() == "no longer allowed: jane@corp.example (jane@corp.example)"
    assert proc("check", "--db", db, "jane@corp.example").returncode == 1
    r = proc("allow", "--db", db, "--remove", "bob@corp.example")
    assert r.returncode == 1 and "was not an exception" in r.stdout


async def test_a_list_made_before_allow_entries_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.execute("INSERT INTO batches VALUES (1, 'lemlist', 'unsubscribed', '2024-01-01T00:00:00+00:00', NULL)")
    old.execute("INSERT INTO entries VALUES ('@x.com', 'domain', NULL, 1)")
    old.commit()
    old.close()
    store = await SQLiteStore.open(path, create=False)
    try:
        service = Service(store, await store.rules())
        await service.allow(["jane@x.com"])
        [jane, bob] = await service.check(["jane@x.com", "bob@x.com"])
        assert jane.allowed_by_exception and not jane.blocked and bob.blocked and bob.source == "lemlist"
    finally:
        await store.close()
