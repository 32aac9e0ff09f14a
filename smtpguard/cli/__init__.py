"""The `smtpguard` command: thin typer front ends over smtpguard.service.

app.py holds the typer application and turns every error into one line
(exit codes there); options.py the shared options; output.py the one
renderer (text, JSON, NDJSON); lists.py, audit.py, users.py,
configuration.py and running.py the commands.
"""

from __future__ import annotations

from smtpguard.cli import allowing, audit, configuration, lists, running, setup, users
from smtpguard.cli.app import app

__all__ = ["allowing", "app", "audit", "configuration", "lists", "main", "running", "setup", "users"]


def main() -> None:
    app()
