"""When a lookup may run on the loop's thread: the kernel's word on the WAL index's locks.

Another process's shared read lock (a reader) or write lock (a writer) never makes
SQLite wait; an exclusive lock on the recover byte or the read marks can, for ~10 s:
only then does the lookup go to its thread (see tests/store/test_list_file.py for the
451 within 250 ms it then gives).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smtpguard.suppression import verdict
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import SQLiteStore, open_store

from .test_contract import row

# Holds one fcntl lock on the -shm file from another process until killed.
HOLDER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "kind = fcntl.LOCK_EX if sys.argv[2] == 'ex' else fcntl.LOCK_SH\n"
    "fcntl.lockf(fd, kind | fcntl.LOCK_NB, int(sys.argv[4]), int(sys.argv[3]), os.SEEK_SET)\n"
    "print('locked', flush=True)\n"
    "time.sleep(30)\n"
)


@contextmanager
def held(shm: Path, kind: str, start: int, length: int) -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(shm), kind, str(start), str(length)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe reads /proc/self/fd")
async def test_only_an_exclusive_lock_on_the_read_marks_sends_lookups_to_the_thread(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    store = await open_store(db, MatchRules())
    assert isinstance(store, SQLiteStore)
    try:
        await store.add_entries([row("jane@example.com")])
        assert await verdict.check_recipient(store, "<jane@example.com>") is not None
        guard = store._inline
        assert guard.clear()  # nothing held: on the loop's thread
        shm = Path(f"{db}-shm")
        for kind, start, length, inline in [
            ("sh", 123, 5, True),  # another reader
            ("ex", 120, 1, True),  # another writer: readers never wait for it
            ("ex", 123, 1, False),  # read mark 0 taken exclusively
            ("ex", 127, 1, False),  # read mark 4
            ("ex", 122, 1, False),  # a recovery under way
        ]:
            with held(shm, kind, start, length):
                assert guard.clear() is inline, (kind, start)
                # Either way the answer is the list's.
                assert await verdict.check_recipient(store, "<bob@example.com>") is None
        assert guard.clear()
        assert await verdict.check_recipient(store, "<jane@example.com>") is not None
    finally:
        await store.close()
