"""smtpguard.service: the typed results the CLI and the HTTP API render, on a real SQLite store."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import pytest

from smtpguard.config import Settings, StoreSettings
from smtpguard.inputs import InvalidInput
from smtpguard.service import AddResult, CheckResult, RemoveResult, User, open_service
from smtpguard.suppression.store import StoreError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def settings(tmp_path: Path) -> Settings:
    return replace(Settings(), store=StoreSettings(tmp_path / "list.db"))


async def test_add_check_remove(tmp_path: Path) -> None:
    async with open_service(settings(tmp_path)) as s:
        added = await s.add(["Jane.Doe+x@GoogleMail.com", "@corp.example"], source="crm", reason="asked")
        assert added == [
            AddResult("Jane.Doe+x@GoogleMail.com", "janedoe@gmail.com", "address", True),
            AddResult("@corp.example", "@corp.example", "domain", True),
        ]
        assert [r.added for r in await s.add(["janedoe@gmail.com"], source="x", reason="y")] == [False]
        [hit, miss] = await s.check(["jane.doe@gmail.com", "jane@else.example"])
        assert hit.blocked and (hit.entry, hit.source, hit.reason) == ("Jane.Doe+x@GoogleMail.com", "crm", "asked")
        assert miss == CheckResult("jane@else.example", False)
        assert await s.remove(["@corp.example", "@nope.example"]) == [
            RemoveResult("@corp.example", "@corp.example", True),
            RemoveResult("@nope.example", "@nope.example", False),
        ]
        with pytest.raises(InvalidInput, match="'bad@@x' is not an address or domain"):
            await s.add(["ok@x.example", "bad@@x"], source="x", reason="y")
        with pytest.raises(InvalidInput, match="--expires must be a date"):
            await s.add(["ok@x.example"], source="x", reason="y", expires="soon")
        assert not (await s.check(["ok@x.example"]))[0].blocked  # nothing written by the refused calls


async def test_import_entries_stats_users(tmp_path: Path) -> None:
    async with open_service(settings(tmp_path)) as s:
        dry = await s.import_file(FIXTURES / "list.txt", dry_run=True)
        assert (dry.rows, dry.added, dry.invalid, dry.source) == (11, 8, 3, "list") and len(dry.rejects) == 3
        async with aclosing(s.entries()) as entries:
            assert [e async for e in entries] == []
        done = await s.import_file(FIXTURES / "list.txt", source="mailchimp", expires="2001-01-01")
        assert done.added == 8
        stats = await s.stats()
        assert (stats.total, stats.expired) == (8, 8) and {r.source for r in stats.entries} == {"mailchimp"}
        async with aclosing(s.entries(search="example.org")) as entries:
            assert [e.key async for e in entries] == ["@example.org"]
        assert await s.log() == []
        with pytest.raises(InvalidInput, match="--since"):
            await s.log(since="yesterday")
        assert await s.set_user("alice", "pw") is True and await s.set_user("alice", "pw2") is False
        assert [u.name for u in await s.users()] == ["alice"] and isinstance((await s.users())[0], User)
        with pytest.raises(InvalidInput):
            await s.set_user("a b", "pw")
        assert await s.remove_user("alice") and not await s.remove_user("alice")


async def test_missing_store_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        async with open_service(settings(tmp_path), create=False):
            pass
    assert not (tmp_path / "list.db").exists()
