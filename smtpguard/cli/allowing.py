"""`smtpguard allow`: exceptions inside blocked domains (Postfix's OK)."""

from __future__ import annotations

from typing import Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ExpiresOpt, JsonOpt, on_list, serve
from smtpguard.cli.output import say
from smtpguard.config import Settings
from smtpguard.suppression.allow import AllowResult


def allow_line(r: AllowResult, remove: bool) -> str:
    if remove:
        return f"{'no longer allowed' if r.changed else 'was not an exception'}: {r.entry} ({r.key})"
    if not r.changed:
        return f"already allowed: {r.entry} ({r.key})"
    was = " (its own block removed)" if r.replaced_block else ""
    return f"allowed by exception: {r.entry} ({r.key}){was}"


@app.command(cls=Command)
@on_list
def allow(
    settings: Settings,
    entries: Annotated[list[str], typer.Argument(help="Addresses (or subdomains) to let through.", metavar="ENTRY")],
    remove: Annotated[bool, typer.Option("--remove", help="Take the exceptions away again.")] = False,
    reason: Annotated[str, typer.Option(help="Why they are allowed.", metavar="TEXT")] = "allowed by hand",
    expires: ExpiresOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Let an address through although its domain is blocked (the most specific entry wins)."""
    results = serve(
        settings, lambda s: s.allow(entries, remove=remove, reason=reason, expires=expires), create=not remove
    )
    say(results, json_, lambda r: allow_line(r, remove))
    if remove and not all(r.changed for r in results):
        raise typer.Exit(1)
