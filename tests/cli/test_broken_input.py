"""Every command with broken input: one line on stderr, the documented status, never a traceback.

In-process through CliRunner (the closed-stdout and unusable-store cases run
on the real entry point in test_entry_point.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpguard.cli import app

ROOT = Path(__file__).resolve().parents[2]
MISSING = "/nonexistent/smtpguard"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("SMTPGUARD_DB", raising=False)


CASES: list[tuple[list[str], int, str]] = [
    # missing files
    (["import", f"{MISSING}/nope.csv", "--db", "{db}"], 2, "nope.csv"),
    (["list", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["list", "--json", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["check", "a@b.example", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["remove", "a@b.example", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["export", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["log", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["stats", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["user", "list", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["user", "remove", "bob", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["list", "--config", f"{MISSING}/c.toml"], 2, "no such file"),
    (["config", "check", "--config", f"{MISSING}/c.toml"], 2, "no such file"),
    (["config", "show", "--config", f"{MISSING}/c.toml"], 2, "no such file"),
    (["serve", "--config", f"{MISSING}/c.toml"], 2, "no such file"),
    # unwritable paths
    (["export", f"{MISSING}/out.csv", "--db", "{db}"], 2, "No such file or directory"),
    (["import", str(ROOT / "tests/fixtures/list.txt"), "--rejects", f"{MISSING}/r.csv", "--db", "{db}"], 2, "r.csv"),
    # bad values and choices
    (["export", "--format", "xml", "--db", "{db}"], 2, "'xml' is not one of 'csv', 'txt', 'json', 'ndjson'"),
    (["serve", "--log-format", "xml"], 2, "'xml' is not one of 'text', 'json'"),
    (["serve", "--log-level", "verbose"], 2, "'verbose' is not one of 'debug', 'info', 'warning', 'error'"),
    (["demo", "--port", "70000"], 2, "--port"),
    (["log", "--limit", "0", "--db", "{db}"], 2, "--limit"),
    (["log", "--since", "last week", "--db", "{db}"], 2, "--since must be a date"),
    (["add", "x@x.example", "--expires", "tomorrow", "--db", "{db}"], 2, "--expires must be a date YYYY-MM-DD"),
    (["add", "bad@@x", "--db", "{db}"], 2, "'bad@@x' is not an address or domain"),
    (["check", "not an address", "--db", "{db}"], 2, "is not a valid address"),
    (["user", "add", "a b", "--password-stdin", "--db", "{db}"], 2, "must not be empty or hold spaces"),
    (["send", "--to", "a@b.example", "--server", "nonsense"], 2, "--server must be"),
    (["list", "--json", "--nl", "--db", "{db}"], 2, "--json and --nl cannot be used together"),
    (["list", "--colour"], 2, "No such option: --colour"),
    (["frobnicate"], 2, "No such command"),
    # issue 9's commands
    (["init", "--db", "{db}"], 2, "a list is there already"),
    (["rules", "show", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["rules", "set", "--db", "{db}"], 2, "say which rule to change"),
    (["allow", "bad@@x", "--db", "{db}"], 2, "'bad@@x' is not an address or domain"),
    (["allow", "a@b.example", "--remove", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["remove", "--source", "s", "--db", f"{MISSING}/list.db"], 2, "no such file"),
    (["remove", "a@b.example", "--source", "s", "--db", "{db}"], 2, "not both"),
    (["import", f"{MISSING}/nope.csv", "--replace", "--db", "{db}"], 2, "nope.csv"),
    (["import", "-", "--replace", "--db", "{db}"], 2, "exactly one file"),
    (["stats", "--by", "team", "--db", "{db}"], 2, "'team' is not one of 'user', 'sender'"),
    (["log", "--prune", "--days", "0", "--db", "{db}"], 2, "--days"),
]


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_broken_input_is_one_line(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    db = tmp_path / "list.db"
    CliRunner().invoke(app, ["add", "keep@x.example", "--db", str(db)], catch_exceptions=False)
    before = db.read_bytes()
    r = CliRunner().invoke(app, [a.replace("{db}", str(db)) for a in args], input="", catch_exceptions=False)
    assert r.exit_code == code, r.stderr
    assert "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("smtpguard: "), r.stderr
    assert says in r.stderr
    assert db.read_bytes() == before  # stored data unchanged
