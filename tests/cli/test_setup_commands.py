"""`smtpguard init`, `smtpguard rules show|set` and `credential:NAME` password files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpguard.config import ConfigError, from_mapping
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import SQLiteStore
from smtpguard.suppression.store.sqlite import RULES_RECHECK

from .test_entry_point import proc


def test_init_creates_an_empty_list_once(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n[matching]\ngmail_dots = false\n')
    r = proc("init", "--config", str(cfg))
    assert r.returncode == 0 and f"created an empty list at {db}" in r.stdout and "gmail_dots = false" in r.stdout
    shown = proc("rules", "show", "--config", str(cfg))
    assert shown.stdout.splitlines() == ["ignore_subaddress = true", "gmail_dots = false"]
    again = proc("init", "--config", str(cfg))
    assert again.returncode == 2 and again.stderr.strip() == (
        f"smtpguard: store {db}: a list is there already; nothing changed (`smtpguard rules set` changes its rules)"
    )


def test_serve_without_a_list_points_at_init(tmp_path: Path) -> None:
    r = proc("serve", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "smtpguard init" in r.stderr and len(r.stderr.splitlines()) == 1


async def test_rules_set_rekeys_and_a_running_relay_follows_within_a_second(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    assert (await asyncio.to_thread(proc, "init", "--db", str(db))).returncode == 0
    for entry in ("jane+news@example.com", "j.o.e@gmail.com", "bob@example.com"):
        assert (await asyncio.to_thread(proc, "add", "--db", str(db), entry)).returncode == 0
    relay_store = await SQLiteStore.open(db, create=False)  # what a running relay holds open
    try:
        assert await relay_store.rules() == MatchRules(True, True)
        r = await asyncio.to_thread(proc, "rules", "set", "--db", str(db), "--keep-subaddress", "--no-gmail-dots")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "rules now ignore_subaddress = false, gmail_dots = false; 2 entries re-keyed"
        await asyncio.sleep(RULES_RECHECK + 0.1)
        assert await relay_store.rules() == MatchRules(False, False)
        assert await relay_store.match(["jane+news@example.com"]) is not None
    finally:
        await relay_store.close()
    same = await asyncio.to_thread(proc, "rules", "set", "--db", str(db), "--keep-subaddress")
    assert same.returncode == 0 and same.stdout.startswith("unchanged")
    nothing = await asyncio.to_thread(proc, "rules", "set", "--db", str(db))
    assert nothing.returncode == 2 and "say which rule to change" in nothing.stderr


def test_password_file_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "upstream-password").write_text("from-systemd\n")
    settings = from_mapping({"upstream": {"password_file": "credential:upstream-password"}})
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"\$CREDENTIALS_DIRECTORY is not set .*LoadCredential=upstream-password:"):
        settings.upstream_password()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert settings.upstream_password() == "from-systemd"
    missing = from_mapping({"upstream": {"password_file": "credential:other"}})
    with pytest.raises(ConfigError, match=f"password_file {tmp_path / 'other'}: No such file"):
        missing.upstream_password()
