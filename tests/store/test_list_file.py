"""The list as a file shared with other processes: its own matching rules, replacement, absence."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from smtpguard.config import Settings, StoreSettings
from smtpguard.suppression import verdict
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.rules import change_rules
from smtpguard.suppression.store import SQLiteStore, Store, StoreError, connect, open_store

from .test_contract import row

RULES = MatchRules()
NO_DOTS = MatchRules(gmail_dots=False)


def settings(db: Path, rules: MatchRules = RULES) -> Settings:
    return Settings(store=StoreSettings(db), matching=rules)


def keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT key FROM entries ORDER BY key")]


async def blocked(store: Store, path: str) -> bool:
    return await verdict.check_recipient(store, path) is not None


@asynccontextmanager
async def opened(db: Path, rules: MatchRules, *, create: bool = True) -> AsyncIterator[SQLiteStore]:
    """The list at `db` (open_store), closed on the way out."""
    store = await open_store(db, rules, create=create)
    try:
        yield store
    finally:
        await store.close()


# --- matching rules belong to the list ------------------------------------------------


async def test_a_command_with_other_rules_leaves_the_relays_list_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "list.db"
    relay = await connect(settings(db, NO_DOTS))  # the relay runs with gmail_dots = false
    try:
        await relay.add_entries([row("John.Doe@gmail.com", rules=NO_DOTS)])
        assert await blocked(relay, "<John.Doe@gmail.com>")
        assert not await blocked(relay, "<johndoe@gmail.com>")  # dots count under the list's rules
        before = keys(db)

        # `smtpguard check x --db <the relay's db>` without --config: built-in rules
        with caplog.at_level(logging.WARNING, logger="smtpguard.store"):
            cli = await connect(settings(db), create=False)
        try:
            assert await cli.rules() == NO_DOTS
            assert await verdict.check_address(cli, "John.Doe@gmail.com") is not None
            assert await verdict.check_address(cli, "johndoe@gmail.com") is None
        finally:
            await cli.close()
        assert keys(db) == before == ["john.doe@gmail.com"]
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "gmail_dots = false" in warning and str(db) in warning

        assert await blocked(relay, "<John.Doe@gmail.com>")  # still 550 at the relay
    finally:
        await relay.close()


async def test_a_rules_change_by_another_process_is_seen_at_the_next_lookup(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    async with opened(db, NO_DOTS) as relay:
        await relay.add_entries([row("j.ohn@gmail.com", rules=NO_DOTS)])
        assert not await blocked(relay, "<john@gmail.com>")
        async with opened(db, NO_DOTS, create=False) as other:
            assert await change_rules(other, RULES) == 1
        # seen within a second (the relay checks at most once a second)
        deadline = time.monotonic() + 2
        while await relay.rules() != RULES and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await relay.rules() == RULES
        assert await blocked(relay, "<john@gmail.com>")
        assert await blocked(relay, "<J.O.H.N@gmail.com>")


# --- a list replaced or removed on disk ------------------------------------------------


async def test_a_list_moved_over_the_open_one_is_read(tmp_path: Path) -> None:
    db, new = tmp_path / "list.db", tmp_path / "new.db"
    store = await open_store(db, RULES)
    other = await open_store(new, RULES)
    try:
        await store.add_entries([row("old@example.com")])
        await other.add_entries([row("new@example.com")])
        await other.close()
        assert await blocked(store, "<old@example.com>")
        os.replace(new, db)  # an atomic copy over the database file
        assert await blocked(store, "<new@example.com>")
        assert not await blocked(store, "<old@example.com>")
        assert (await store.add_entries([row("added@example.com")])).added == 1
        with sqlite3.connect(db) as conn:  # written to the file now at the path
            assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 2
    finally:
        await store.close()


async def test_a_removed_list_fails_closed_until_it_is_back(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    async with opened(db, RULES) as store:
        await store.add_entries([row("jane@example.com")])
        assert await blocked(store, "<jane@example.com>")
        shutil.move(db, tmp_path / "elsewhere.db")
        with pytest.raises(StoreError, match="gone"):
            await blocked(store, "<jane@example.com>")
        with pytest.raises(StoreError, match="gone"):
            await store.add_entries([row("bob@example.com")])
        assert not db.exists()  # not silently re-created empty
        shutil.move(tmp_path / "elsewhere.db", db)
        assert await blocked(store, "<jane@example.com>")


# --- a missing list is not created by the relay -----------------------------------------


async def test_connect_without_create_refuses_a_missing_list(tmp_path: Path) -> None:
    db = tmp_path / "typo" / "list.db"
    with pytest.raises(StoreError, match="smtpguard init") as info:
        await connect(settings(db), create=False)
    assert str(db) in str(info.value)
    assert not db.parent.exists()


async def test_the_relay_refuses_to_start_without_its_list(tmp_path: Path) -> None:
    from smtpguard.runtime.server import Relay

    db = tmp_path / "unmounted" / "list.db"
    with pytest.raises(StoreError, match="no such file"):
        await Relay.start(Settings(store=StoreSettings(db)))
    assert not db.exists()


# --- a lookup never stalls the relay on a lock held from outside --------------------------


async def test_a_lookup_behind_a_lock_held_from_outside_fails_closed_within_milliseconds(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "list.db"
    async with opened(db, RULES) as store:
        await store.add_entries([row("jane@example.com")])
        assert await blocked(store, "<jane@example.com>")
        code = (
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123, os.SEEK_SET)\n"
            "print('locked', flush=True)\n"
            "time.sleep(30)\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", code, f"{db}-shm"], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            for _ in range(3):  # and again: the relay keeps answering, never stalls
                start = time.monotonic()
                with pytest.raises(StoreError, match="no answer within"):
                    await verdict.check_recipient(store, "<jane@example.com>")
                assert time.monotonic() - start < 0.5
        finally:
            holder.kill()
            holder.wait()


async def test_imports_and_lookups_key_the_lists_way_whatever_the_configuration(tmp_path: Path) -> None:
    from smtpguard.suppression.ingest import import_file

    db, export = tmp_path / "list.db", tmp_path / "export.txt"
    export.write_text("J.Ohn@gmail.com\n")
    await (await connect(settings(db, NO_DOTS))).close()  # created with gmail_dots = false
    store = await connect(settings(db), create=False)  # then a command with the defaults
    try:
        done = await import_file(store, export)
        assert done.result.added == 1
        assert keys(db) == ["j.ohn@gmail.com"]
        assert await blocked(store, "<j.ohn@gmail.com>") and not await blocked(store, "<john@gmail.com>")
    finally:
        await store.close()
