"""Per-person views of the audit log (`log --user`, `stats --by`) and audit retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from smtpguard.runtime.retention import retention_loop
from smtpguard.suppression.store import Event, SQLiteStore

from ..conftest import RelayFactory
from .test_entry_point import proc


def ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat(timespec="seconds")


def event(n: int, user: str, sender: str, days_ago: float) -> Event:
    return Event(
        ago(days_ago), "rejected", sender, f"r{n}@x.example", f"r{n}@x.example", "lemlist", "127.0.0.1", user, ""
    )


async def seeded(path: Path) -> None:
    store = await SQLiteStore.open(path)
    try:
        await store.record_events(
            [event(n, "ann", "Ann@Corp.example", 1) for n in range(3)]
            + [event(10, "bob", "bob@corp.example", 2), event(11, "", "robot@corp.example", 2)]
            + [event(n, "bob", "bob@corp.example", 400) for n in range(20, 24)]  # past one year
        )
    finally:
        await store.close()


async def test_log_user_and_stats_by_user_and_sender(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    await seeded(db)
    r = await asyncio.to_thread(proc, "log", "--db", str(db), "--user", "bob", "--nl")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0 and len(lines) == 5 and {e["user"] for e in lines} == {"bob"}

    r = await asyncio.to_thread(proc, "stats", "--db", str(db), "--by", "user")
    assert r.stdout.splitlines() == ["        3  ann", "        1  (no login)", "        1  bob"]
    r = await asyncio.to_thread(proc, "stats", "--db", str(db), "--by", "sender", "--top", "1", "--json")
    assert json.loads(r.stdout) == [{"name": "ann@corp.example", "events": 3}]
    bad = await asyncio.to_thread(proc, "stats", "--db", str(db), "--by", "team")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


async def test_log_prune_keeps_the_configured_days(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    await seeded(db)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n[audit]\nretention_days = 365\n')
    r = await asyncio.to_thread(proc, "log", "--config", str(cfg), "--prune")
    assert r.returncode == 0 and r.stdout.strip() == "deleted 4 events older than 365 days"
    r = await asyncio.to_thread(proc, "log", "--config", str(cfg), "--prune", "--days", "1")
    assert r.stdout.strip() == "deleted 5 events older than 1 day"
    cfg.write_text(f'[store]\npath = "{db}"\n[audit]\nretention_days = 0\n')
    r = await asyncio.to_thread(proc, "log", "--config", str(cfg), "--prune")
    assert r.returncode == 2 and "keep forever" in r.stderr


async def test_the_running_relay_deletes_events_past_retention(
    make_relay: RelayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await make_relay()
    await relay.ctx.store.record_events(
        [event(1, "ann", "a@corp.example", 366), event(2, "ann", "a@corp.example", 364)]
    )
    caplog.set_level(logging.INFO, logger="smtpguard.audit")
    task = asyncio.create_task(retention_loop(relay.ctx, every=0.05))
    try:
        for _ in range(100):
            if len(await relay.ctx.store.events()) == 1:
                break
            await asyncio.sleep(0.05)
        assert [e.recipient for e in await relay.ctx.store.events()] == ["r2@x.example"]
        assert "audit retention: deleted 1 event older than 365 days" in caplog.text
        # 0 keeps everything, from the next round on (a reload changes ctx.settings).
        relay.ctx.settings = replace(relay.ctx.settings, audit=replace(relay.ctx.settings.audit, retention_days=0))
        await relay.ctx.store.record_events([event(3, "ann", "a@corp.example", 5000)])
        await asyncio.sleep(0.2)
        assert len(await relay.ctx.store.events()) == 2
    finally:
        task.cancel()
