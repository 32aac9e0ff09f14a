"""Hostile drops into the watched folder: symlinks, forged names, files in place of folders."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from smtpguard.runtime.server import Relay
from smtpguard.suppression import watch

from .test_watch import INTERVAL, entries, inbox, relay, until

__all__ = ["inbox", "relay"]  # fixtures

LIST = "email\nnew1@x.example\nnew2@x.example\n"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("sub", ["done", "failed"])
async def test_symlinked_subfolder_is_refused(
    relay: Relay, inbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, sub: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / sub).rmdir()
    (inbox / sub).symlink_to(elsewhere)
    (inbox / "list.csv").write_text(LIST)
    (inbox / "junk.csv").write_text("no address here\n")
    await until(lambda: any("symbolic link" in m for m in errors(caplog)))
    await asyncio.sleep(4 * INTERVAL)
    assert list(elsewhere.iterdir()) == [] and entries(relay) == 2
    assert (inbox / "list.csv").exists() and (inbox / "junk.csv").exists()
    assert any(f"{inbox / sub} is a symbolic link" in m for m in errors(caplog))
    # Fixed by the admin: the watcher takes up again by itself.
    (inbox / sub).unlink()
    await until(lambda: (inbox / "done" / "list.csv").exists() and (inbox / "failed" / "junk.csv").exists())
    assert entries(relay) == 4


async def test_symlinked_watch_folder_is_refused(
    make_relay: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "inbox").symlink_to(real)
    (real / "list.csv").write_text(LIST)
    r = await make_relay(watch={"folder": tmp_path / "inbox", "interval": INTERVAL})  # type: ignore[operator]
    task = asyncio.create_task(watch.watch_folder(r.ctx))
    try:
        await until(lambda: any("symbolic link" in m for m in errors(caplog)))
        await asyncio.sleep(3 * INTERVAL)
        assert sorted(p.name for p in real.iterdir()) == ["list.csv"] and entries(r) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_dangling_report_symlink_is_not_followed(relay: Relay, inbox: Path, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    (inbox / "failed" / "junk.csv.report.txt").symlink_to(target)
    (inbox / "junk.csv").write_text("no address here\n")
    await until(lambda: not (inbox / "junk.csv").exists())
    await asyncio.sleep(2 * INTERVAL)
    assert not target.exists()
    reports = [p for p in (inbox / "failed").iterdir() if p.name.endswith(".report.txt") and not p.is_symlink()]
    assert len(reports) == 1 and "FAILED" in reports[0].read_text()


async def test_file_swapped_for_a_symlink_after_the_scan_is_not_imported(
    relay: Relay, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("email\nsecret1@x.example\nsecret2@x.example\n")
    real_import = watch.import_dropped
    swapped: list[str] = []

    async def swap_then_import(*args: Any) -> watch.Outcome:
        # Checked, about to be read: the dropper replaces the file by a link.
        os.unlink(inbox / "list.csv")
        os.symlink(secret, inbox / "list.csv")
        swapped.append("list.csv")
        return await real_import(*args)

    monkeypatch.setattr(watch, "import_dropped", swap_then_import)
    (inbox / "list.csv").write_text(LIST)
    await until(lambda: bool(swapped))
    await asyncio.sleep(4 * INTERVAL)
    with sqlite3.connect(relay.ctx.settings.store.path) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM entries")}
    assert not keys & {"secret1@x.example", "secret2@x.example"}, keys
    assert secret.read_text().startswith("email\nsecret1") and (inbox / "list.csv").is_symlink()
    assert list((inbox / "done").iterdir()) == [] and list((inbox / "failed").iterdir()) == []


async def test_newline_in_a_name_cannot_forge_log_lines(
    relay: Relay, inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name = "a.csv\nINFO smtpguard.server: forged\r.csv"
    (inbox / name).write_text(LIST)
    (inbox / "b\x1b[31m.csv").write_text("nothing valid\n")

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "smtpguard.watch"]

    # Files are filed away before the last line about them is logged: wait for both.
    await until(
        lambda: (
            sorted(os.listdir(inbox)) == ["done", "failed"]
            and len(os.listdir(inbox / "done")) == 2
            and any("forged" in m and "source" in m for m in logged())
            and any("b\\x1b[31m.csv" in m for m in logged())
        )
    )
    mine = logged()
    assert any("a.csv\\x0aINFO smtpguard.server: forged\\x0d.csv" in m for m in mine), mine
    assert any('source "a.csv\\x0aINFO smtpguard.server: forged\\x0d"' in m for m in mine), mine
    assert any("b\\x1b[31m.csv" in m for m in mine), mine
    assert not any(c in m for m in mine for c in "\n\r\x1b")
    report = next(p for p in (inbox / "done").iterdir() if p.name.endswith(".report.txt")).read_text()
    assert "forged" in report and "\r" not in report and report.count("\n") < 20


@pytest.mark.parametrize("sub", ["done", "failed"])
async def test_file_named_like_a_subfolder_is_reported_and_watching_goes_on(
    relay: Relay, inbox: Path, caplog: pytest.LogCaptureFixture, sub: str
) -> None:
    shutil.rmtree(inbox / sub)
    (inbox / sub).write_text("oops\n")
    (inbox / "list.csv").write_text(LIST)
    await until(lambda: any("is a file, not a folder" in m for m in errors(caplog)))
    assert any(f"{inbox / sub} is a file, not a folder; rename or remove it" in m for m in errors(caplog))
    (inbox / sub).unlink()
    await until(lambda: (inbox / "done" / "list.csv").exists())
    assert entries(relay) == 4
