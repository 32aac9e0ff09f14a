"""The `smtpguard` command: thin typer front ends over smtpguard.service.

app.py holds the typer application and turns every error into one line
(exit codes there); options.py the shared options; output.py the one
renderer (text, JSON, NDJSON); lists.py, audit.py, users.py, accounts.py,
configuration.py, running.py and store.py the commands.
"""

from __future__ import annotations

from smtpguard.cli import (
    accounts,
    allowing,
    audit,
    configuration,
    lists,
    running,
    setup,
    store,
    syncing,
    tokens,
    users,
)
from smtpguard.cli.app import app

__all__ = [
    "accounts",
    "allowing",
    "app",
    "audit",
    "configuration",
    "lists",
    "main",
    "running",
    "setup",
    "store",
    "syncing",
    "tokens",
    "users",
]


def main() -> None:
    app()
