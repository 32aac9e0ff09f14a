"""The `smtpguard` commands, run in-process through typer's CliRunner on real SQLite files.

The entry point itself (exit codes, `python -m smtpguard`, Ctrl-C) is tried
on a real process in tests/cli/test_entry_point.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpguard.cli import app
from smtpguard.passwords import verify_password
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import Event, open_store

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, db: Path | None = None, stdin: str | None = None, env: dict[str, str] | None = None) -> Ran:
    """One command, in this process; a bug (an exception no error line covers) fails the test."""
    full = [*args, *(["--db", str(db)] if db is not None else [])]
    r = CliRunner().invoke(app, full, input=stdin, env=env, catch_exceptions=False)
    return Ran(r.exit_code, r.stdout, r.stderr)


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SMTPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("SMTPGUARD_DB", raising=False)
    monkeypatch.chdir(ROOT)
    yield


def no_traceback(r: Ran) -> None:
    assert "Traceback" not in r.stderr, r.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "list.db"


def test_check_contract_examples(db: Path) -> None:
    r = cli("add", "johndoe@gmail.com", "user@xn--bcher-kva.example", "@corp.example", "--source", "lemlist", db=db)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("added:") == 3

    r = cli("check", "John.Doe+promo@GoogleMail.com", "--json", db=db)
    assert r.returncode == 1
    [hit] = json.loads(r.stdout)
    assert hit["blocked"] is True and hit["entry"] == "johndoe@gmail.com"
    assert hit["source"] == "lemlist" and hit["reason"] == "added by hand" and hit["added"]

    r = cli("check", "user@bücher.example", db=db)
    assert r.returncode == 1 and "blocked" in r.stdout and "user@xn--bcher-kva.example" in r.stdout

    r = cli("check", "ann@sales.eu.corp.example", "--json", db=db)
    assert r.returncode == 1 and json.loads(r.stdout)[0]["entry"] == "@corp.example"

    r = cli("check", "someone@else.example", "jane@corp-example.com", db=db)
    assert r.returncode == 0 and r.stdout.count("allowed") == 2

    r = cli("check", "not an address", db=db)
    assert r.returncode == 2 and r.stderr.startswith("smtpguard: ") and len(r.stderr.splitlines()) == 1
    no_traceback(r)


def test_add_remove_list_export(db: Path, tmp_path: Path) -> None:
    r = cli("add", "a@one.example", "@two.example", "--reason", "bounced", "--expires", "2099-01-01", db=db)
    assert r.returncode == 0
    r = cli("add", "A@One.Example", db=db)
    assert "already listed" in r.stdout

    r = cli("list", "--json", db=db)
    entries = json.loads(r.stdout)
    assert {e["key"] for e in entries} == {"a@one.example", "@two.example"}
    assert all(e["reason"] == "bounced" and e["expires"] == "2099-01-01" for e in entries)
    assert "a@one.example" in cli("list", "--search", "ONE", db=db).stdout
    assert "two.example" not in cli("list", "--search", "one", db=db).stdout

    out = tmp_path / "export.csv"
    assert cli("export", str(out), db=db).returncode == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "email,kind,key,source,reason,added,expires" and len(lines) == 3
    txt = cli("export", "--format", "txt", db=db).stdout.split()
    assert sorted(txt) == ["@two.example", "a@one.example"]
    assert len(json.loads(cli("export", "--format", "json", db=db).stdout)) == 2
    assert cli("export", "--format", "xml", db=db).returncode == 2

    r = cli("remove", "a@ONE.example", "nobody@x.example", "--json", db=db)
    assert r.returncode == 1  # one was not listed
    assert [x["removed"] for x in json.loads(r.stdout)] == [True, False]
    assert cli("check", "a@one.example", db=db).returncode == 0


def test_a_csv_export_imports_back_without_losing_a_domain_or_making_an_exception_a_block(
    db: Path, tmp_path: Path
) -> None:
    assert cli("add", "jane@example.com", "@blocked.example", db=db).returncode == 0
    assert cli("allow", "vip@blocked.example", db=db).returncode == 0
    backup = tmp_path / "backup.csv"
    assert cli("export", str(backup), db=db).returncode == 0
    restored = tmp_path / "restored.db"
    r = cli("import", str(backup), "--source", "backup", db=restored)
    assert r.returncode == 0, r.stderr
    assert "re-create it with `smtpguard allow vip@blocked.example`" in r.stdout + r.stderr
    entries = {e["key"]: e["kind"] for e in json.loads(cli("list", "--json", db=restored).stdout)}
    assert entries == {"jane@example.com": "address", "@blocked.example": "domain"}  # the domain kept, no block on vip
    r = cli("check", "someone@blocked.example", db=restored)
    assert r.returncode == 1 and r.stdout.startswith("blocked"), r  # as before the export


def test_expired_entries_no_longer_block(db: Path) -> None:
    cli("add", "old@x.example", "--expires", "2001-01-01", db=db)
    assert cli("check", "old@x.example", db=db).returncode == 0
    stats = json.loads(cli("stats", "--json", db=db).stdout)
    assert stats["total"] == 1 and stats["expired"] == 1
    r = cli("add", "x@x.example", "--expires", "tomorrow", db=db)
    assert r.returncode == 2 and "--expires must be a date YYYY-MM-DD" in r.stderr


def test_stats_and_log(db: Path) -> None:
    cli("add", "a@x.example", "b@x.example", "--source", "lemlist", db=db)
    cli("add", "@y.example", "--source", "hubspot", db=db)
    asyncio.run(
        record(
            db,
            [
                Event(
                    "2026-11-20T10:00:00+00:00",
                    "rejected",
                    "me@corp.example",
                    "a@x.example",
                    "a@x.example",
                    "lemlist",
                    "127.0.0.1",
                    "alice",
                    "<m1@corp>",
                ),
                Event(
                    "2026-11-21T10:00:00+00:00",
                    "stripped",
                    "you@corp.example",
                    "z@y.example",
                    "@y.example",
                    "hubspot",
                    "127.0.0.1",
                    "bob",
                    "<m2@corp>",
                ),
            ],
        )
    )
    s = json.loads(cli("stats", "--json", db=db).stdout)
    counts = {(e["source"], e["kind"], e["count"]) for e in s["entries"]}
    assert counts == {("lemlist", "address", 2), ("hubspot", "domain", 1)}
    log = json.loads(cli("log", "--json", db=db).stdout)
    assert [e["action"] for e in log] == ["rejected", "stripped"]
    assert set(log[0]) >= {"time", "action", "sender", "recipient", "entry", "client", "user", "message_id"}
    by_sender = json.loads(cli("log", "--json", "--sender", "YOU@corp.example", db=db).stdout)
    assert [e["recipient"] for e in by_sender] == ["z@y.example"]
    assert len(json.loads(cli("log", "--json", "--since", "2026-11-21", db=db).stdout)) == 1
    assert len(json.loads(cli("log", "--json", "--limit", "1", db=db).stdout)) == 1
    assert cli("log", "--since", "last week", db=db).returncode == 2


def test_users(db: Path) -> None:
    r = cli("user", "add", "alice", "--password-stdin", db=db, stdin="correct horse\n")
    assert r.returncode == 0 and "created user alice" in r.stdout
    assert "password changed" in cli("user", "add", "alice", "--password-stdin", db=db, stdin="battery staple\n").stdout
    users = json.loads(cli("user", "list", "--json", db=db).stdout)
    assert [u["name"] for u in users] == ["alice"]
    stored = asyncio.run(user_hash(db, "alice"))
    assert stored is not None and stored.startswith("scrypt$") and "battery" not in stored
    assert verify_password("battery staple", stored) and not verify_password("correct horse", stored)
    assert cli("user", "remove", "alice", db=db).returncode == 0
    r = cli("user", "remove", "alice", db=db)
    assert r.returncode == 1 and "no user 'alice'" in r.stderr
    assert cli("user", "add", "bob", "--password-stdin", db=db, stdin="\n").returncode == 2


def test_errors_are_one_line_without_traceback(tmp_path: Path, db: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[upstream]\nport = 70000\n")
    r = cli("list", "--config", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip() == f"smtpguard: config {bad}: [upstream] port must be 1-65535, got 70000"

    r = cli("list", db=tmp_path / "absent.db")
    assert r.returncode == 2 and "no such file" in r.stderr
    no_traceback(r)

    r = cli("import", str(tmp_path / "nope.csv"), db=db)
    assert r.returncode == 2 and "nope.csv" in r.stderr
    no_traceback(r)

    r = cli("add", "bad@@x", db=db)
    assert r.returncode == 2 and "'bad@@x' is not an address or domain" in r.stderr

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    r = cli("check", "a@b.example", db=corrupt)
    assert r.returncode == 2 and "corrupt.db" in r.stderr
    no_traceback(r)


def test_env_db_and_config(tmp_path: Path) -> None:
    envdb = tmp_path / "env.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[store]\npath = '{tmp_path / 'cfg.db'}'\n")
    assert cli("add", "a@x.example", env={"SMTPGUARD_DB": str(envdb)}).returncode == 0
    assert envdb.exists()
    assert cli("add", "b@x.example", env={"SMTPGUARD_CONFIG": str(cfg)}).returncode == 0
    assert (tmp_path / "cfg.db").exists()


def test_help_reads_well() -> None:
    r = cli("--help")
    assert r.returncode == 0
    commands = ("serve", "import", "add", "remove", "check", "list", "export", "log", "stats", "user", "config", "demo")
    for command in commands:
        assert command in r.stdout
    r = cli("import", "--help")
    assert "--rejects" in r.stdout and "--dry-run" in r.stdout and "--column" in r.stdout


FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize(
    ("name", "rows", "added", "duplicates", "invalid"),
    [
        ("fr_semicolon_bom.csv", 20, 19, 1, 0),  # John.Doe@gmail.com twice, spelt differently
        ("windows1252.csv", 12, 11, 0, 1),
        ("excel_unicode.txt", 10, 10, 0, 0),
        ("humanlinker.xlsx", 12, 11, 0, 1),
        ("list.txt", 11, 8, 0, 3),
        ("hubspot_contacts.csv", 10, 10, 0, 0),
        ("broken.csv", 13, 6, 0, 7),
    ],
)
def test_import_each_fixture_format(
    db: Path, tmp_path: Path, name: str, rows: int, added: int, duplicates: int, invalid: int
) -> None:
    rejects = tmp_path / "rejects.csv"
    r = cli("import", str(FIXTURES / name), "--json", "--rejects", str(rejects), db=db)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["rows"], got["added"], got["duplicates"], got["invalid"]) == (rows, added, duplicates, invalid)
    assert len(rejects.read_text(encoding="utf-8").splitlines()) == 1 + invalid  # header + one line each
    # Imported again: nothing new, everything a duplicate.
    again = json.loads(cli("import", str(FIXTURES / name), "--json", db=db).stdout)
    assert (again["added"], again["duplicates"]) == (0, added + duplicates)


def test_import_dry_run_and_source(db: Path) -> None:
    r = cli("import", str(FIXTURES / "hubspot_contacts.csv"), "--dry-run", "--json", db=db)
    assert json.loads(r.stdout)["added"] == 10 and json.loads(r.stdout)["dry_run"] is True
    assert json.loads(cli("list", "--json", db=db).stdout) == []
    cli("import", str(FIXTURES / "hubspot_contacts.csv"), "--source", "HubSpot", "--reason", "bounced", db=db)
    [hit] = json.loads(cli("check", "Jane.Doe+x@Example.com", "--json", db=db).stdout)
    assert (hit["source"], hit["reason"]) == ("HubSpot", "bounced")


def test_unusable_import_changes_nothing(db: Path, tmp_path: Path) -> None:
    cli("add", "keep@x.example", db=db)
    people = tmp_path / "people.csv"
    people.write_text("Nom;Prénom\nDupont;Jean\n", encoding="utf-8")
    r = cli("import", str(FIXTURES / "list.txt"), str(people), db=db)
    assert r.returncode == 2 and "no address column found" in r.stderr and "--column" in r.stderr
    no_traceback(r)
    # list.txt went in (its own transaction), people.csv changed nothing
    keys = {e["key"] for e in json.loads(cli("list", "--json", db=db).stdout)}
    assert "keep@x.example" in keys and "@example.org" in keys and len(keys) == 1 + 8


async def record(db: Path, events: list[Event]) -> None:
    store = await open_store(db, MatchRules())
    try:
        await store.record_events(events)
    finally:
        await store.close()


async def user_hash(db: Path, name: str) -> str | None:
    store = await open_store(db, MatchRules())
    try:
        return await store.user_hash(name)
    finally:
        await store.close()


def test_import_and_check_read_standard_input(db: Path) -> None:
    r = cli("import", "-", "--json", db=db, stdin="a@x.example\nnot an address\n@y.example\n")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["rows"], got["added"], got["invalid"]) == (3, 2, 1)
    assert got["files"][0]["file"] == "-" and got["files"][0]["source"] == "stdin"
    r = cli("import", "-", "--source", "crm", db=db, stdin="b@x.example\n")
    assert r.stdout.startswith("-: 1 row, added 1")
    r = cli("check", "-", "--nl", db=db, stdin="a@x.example\n\nz@y.example\nfree@z.example\n")
    assert r.returncode == 1
    assert [json.loads(line)["blocked"] for line in r.stdout.splitlines()] == [True, True, False]
    assert cli("import", "-", "-", db=db, stdin="").returncode == 2


def test_encoding_and_delimiter_overrides(db: Path, tmp_path: Path) -> None:
    hashed = tmp_path / "hashed.csv"
    hashed.write_text("name#email#city\nAnn#ann@x.example#Paris\nBob#bob@y.example#Lyon\n")
    assert json.loads(cli("import", str(hashed), "--json", "--dry-run", db=db).stdout)["added"] == 0
    r = cli("import", str(hashed), "--json", "--delimiter", "#", db=db)
    assert json.loads(r.stdout)["added"] == 2, r.stderr
    koi8 = tmp_path / "koi8.txt"
    koi8.write_bytes("email\nиван@пример.рф\n".encode("koi8_r"))
    r = cli("import", str(koi8), "--encoding", "koi8_r", "--json", db=db)
    assert json.loads(r.stdout)["added"] == 1, r.stderr
    assert "иван@пример.рф" in {e["original"] for e in json.loads(cli("list", "--json", db=db).stdout)}
    r = cli("import", str(koi8), "--encoding", "klingon", db=db)
    assert r.returncode == 2 and "--encoding 'klingon'" in r.stderr
    r = cli("import", str(FIXTURES / "humanlinker.xlsx"), "--delimiter", ";", db=db)
    assert r.returncode == 2 and "not to XLSX" in r.stderr


def test_listings_as_newline_delimited_json(db: Path) -> None:
    cli("add", "a@x.example", "@y.example", db=db)
    cli("user", "add", "alice", "--password-stdin", db=db, stdin="pw\n")
    asyncio.run(
        record(db, [Event("2026-11-20T10:00:00+00:00", "rejected", "me@c.example", "a@x.example", "a@x.example",
                          "manual", "127.0.0.1", "", "<m@c>")]),
    )  # fmt: skip
    listings = {
        ("list", "--nl"): 2,
        ("log", "--nl"): 1,
        ("user", "list", "--nl"): 1,
        ("export", "--format", "ndjson"): 2,
    }
    for args, n in listings.items():
        rows = [json.loads(line) for line in cli(*args, db=db).stdout.splitlines()]
        assert len(rows) == n and all(isinstance(x, dict) for x in rows), args
    assert cli("list", "--nl", "--json", db=db).returncode == 2


def test_counts_read_as_english(db: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("solo@x.example\n")
    assert ": 1 row, added 1," in cli("import", str(one), db=db).stdout
    assert cli("list", db=db).stderr == "1 entry\n"
    assert cli("export", str(tmp_path / "out.csv"), db=db).stderr.startswith("1 entry written")
    assert cli("stats", db=db).stdout.startswith("1 entry (0 expired)")
    two = tmp_path / "two.txt"
    two.write_text("a@x.example\nb@x.example\n")
    assert ": 2 rows, added 2," in cli("import", str(two), db=db).stdout
