"""SQLite's import writes rows in key-sorted runs: the file's order must still decide which copy is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpguard.suppression.store import open_store, sqlite

from .test_contract import RULES, row


@pytest.mark.parametrize("run", [3, 4, 1 << 18])
async def test_sorted_runs_keep_the_first_copy_of_a_key_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: int
) -> None:
    monkeypatch.setattr(sqlite, "SORT_ROWS", run)
    store = await open_store(tmp_path / "s.db", RULES)
    try:
        await store.add_entries([row("zoe@example.com", "earlier")])
        result = await store.add_entries(
            [
                row("Zoe@Example.com", "later"),  # already listed: left as it was
                row("Bob+news@Example.com", "first"),
                row("carl@example.com"),
                row("BOB@example.com", "second"),  # same key, same run (3) or the next one (4)
                row("amy@example.com"),
                row("bob@example.com", "third"),  # a later run
                row("@example.org"),
            ]
        )
        assert (result.rows, result.added) == (7, 4)
        bob = await store.match(["bob@example.com"])
        assert bob is not None and (bob.original, bob.source) == ("Bob+news@Example.com", "first")
        zoe = await store.match(["zoe@example.com"])
        assert zoe is not None and zoe.source == "earlier"
        assert [e.key async for e in store.entries()] == [
            "@example.org", "amy@example.com", "bob@example.com", "carl@example.com", "zoe@example.com",
        ]  # fmt: skip
    finally:
        await store.close()
