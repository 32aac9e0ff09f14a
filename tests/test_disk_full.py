"""Disk full under the list: nothing relayed unchecked, the list unchanged, one clear error.

A 2 MB tmpfs holds the list; the tests fill it to the last byte.  Mounting
needs root (CAP_SYS_ADMIN): elsewhere these tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpguard.smtp.audit import AuditWriter
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import Event, open_store, utc_now
from smtpguard.suppression.watch import watch_folder

from .conftest import RelayFactory
from .test_watch import INTERVAL, entries, rcpt_codes, report, until


@dataclass
class SmallDisk:
    path: Path

    def fill(self) -> None:
        """Take every free byte (tmpfs counts pages: a last write of 1 byte at a time)."""
        with (self.path / "filler").open("ab", buffering=0) as fh:
            for chunk in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        fh.write(b"\0" * chunk)

    def free(self) -> None:
        (self.path / "filler").unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.decode().strip()}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def event(i: int) -> Event:
    return Event(utc_now(), "rejected", "alice@corp.example", f"r{i}@x.example", "r@x.example", "t", "::1", "", "")


async def test_pending_audit_events_are_bounded(small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    store = await open_store(small_disk.path / "list.db", MatchRules())
    writer = AuditWriter(store, max_pending=100)
    try:
        small_disk.fill()
        for i in range(2500):
            writer.add(event(i))
        await writer.flush()
        assert writer.pending == 100 and writer.dropped == 2400
        logged = [r for r in caplog.records if r.name == "smtpguard.audit" and r.levelno == logging.ERROR]
        assert any("full" in r.getMessage() and "100 events kept" in r.getMessage() for r in logged)
        assert any("2400 events dropped (2400 in all), the oldest" in r.getMessage() for r in logged)
        small_disk.free()
        await writer.flush()
        assert writer.pending == 0
        written = await store.events()
        assert sorted(e.recipient for e in written) == sorted(f"r{i}@x.example" for i in range(2400, 2500))
    finally:
        await store.close()


async def test_audit_disk_full_while_relaying(
    make_relay: RelayFactory, small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await make_relay(store={"path": small_disk.path / "list.db"})
    small_disk.fill()
    for _ in range(30):  # enough refusals that their audit rows cannot fit
        codes = await rcpt_codes(relay, "jane.doe@example.com", "x@blocked.example", "bob@ok.example")
        assert codes == {"jane.doe@example.com": 550, "x@blocked.example": 550, "bob@ok.example": 250}
    for i in range(3000):  # and a burst the relay queued meanwhile
        relay.ctx.audit.add(event(i))
    await relay.ctx.audit.flush()
    assert relay.ctx.audit.pending > 0
    assert any("audit log not written" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    small_disk.free()
    await relay.ctx.audit.flush()
    assert relay.ctx.audit.pending == 0
    relayed = [
        e for e in await relay.ctx.store.events() if e.sender != "alice@corp.example" or e.entry != "r@x.example"
    ]
    assert len(relayed) == 60 and {e.recipient for e in relayed} == {"jane.doe@example.com", "x@blocked.example"}


async def test_import_on_a_full_disk_changes_nothing_and_retries(
    make_relay: RelayFactory, small_disk: SmallDisk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    relay = await make_relay(store={"path": small_disk.path / "list.db"}, watch={"folder": inbox, "interval": INTERVAL})
    inbox.mkdir()
    small_disk.fill()
    with (inbox / "unsubs.csv").open("w") as fh:
        fh.write("email\n")
        fh.writelines(f"gone{i}@x.example\n" for i in range(20_000))
    task = asyncio.create_task(watch_folder(relay.ctx))
    try:
        await until(lambda: any("the store failed" in r.getMessage() for r in caplog.records), timeout=30)
        msg = next(r.getMessage() for r in caplog.records if "the store failed" in r.getMessage())
        assert "unsubs.csv not imported" in msg and "full" in msg, msg
        assert entries(relay) == 2 and (inbox / "unsubs.csv").exists()
        assert os.listdir(inbox / "done") == [] and os.listdir(inbox / "failed") == []
        assert await rcpt_codes(relay, "jane.doe@example.com", "bob@ok.example") == {
            "jane.doe@example.com": 550,
            "bob@ok.example": 250,
        }
        small_disk.free()
        await until(lambda: (inbox / "done" / "unsubs.csv").exists(), timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "added:      20000" in report(inbox / "done", "unsubs.csv") and entries(relay) == 20_002
