"""`smtpguard user add NAME --web --role ROLE`: the accounts that may sign in to the page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import open_store

from ..test_cli import _no_user_environment, cli

__all__ = ["_no_user_environment"]


def role_of(db: Path, name: str) -> str | None:
    async def read() -> str | None:
        store = await open_store(db, MatchRules(), create=False)
        try:
            return await store.web_role(name)
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("flags", "role"),
    [([], None), (["--web"], "viewer"), (["--role", "editor"], "editor"), (["--web", "--role", "admin"], "admin")],
)
def test_user_add_sets_the_web_role(tmp_path: Path, flags: list[str], role: str | None) -> None:
    db = tmp_path / "list.db"
    r = cli("user", "add", "claire", "--password-stdin", *flags, db=db, stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert role_of(db, "claire") == role
    assert (f"may sign in to the web page as {role}" in r.stdout) is (role is not None)


def test_an_unknown_role_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    r = cli("user", "add", "claire", "--password-stdin", "--role", "boss", db=db, stdin="s3cret\n")
    assert r.returncode == 2 and "--role must be one of viewer, editor, admin" in r.stderr
    assert not db.exists()
