"""`smtpguard allow`: exceptions inside blocked domains (Postfix's OK)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ConfigOpt, DbOpt, ExpiresOpt, JsonOpt, run, settings_for
from smtpguard.cli.output import emit_json
from smtpguard.service import open_service


@app.command(cls=Command)
def allow(
    entries: Annotated[list[str], typer.Argument(help="Addresses (or subdomains) to let through.", metavar="ENTRY")],
    remove: Annotated[bool, typer.Option("--remove", help="Take the exceptions away again.")] = False,
    reason: Annotated[str, typer.Option(help="Why they are allowed.", metavar="TEXT")] = "allowed by hand",
    expires: ExpiresOpt = None,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Let an address through although its domain is blocked (the most specific entry wins)."""
    settings = settings_for(config_path, db)

    async def main() -> list[Any]:
        async with open_service(settings, create=not remove) as service:
            return list(await service.allow(entries, remove=remove, reason=reason, expires=expires))

    results = run(main)
    if json_:
        emit_json(results)
    else:
        for r in results:
            if remove:
                typer.echo(f"{'no longer allowed' if r.changed else 'was not an exception'}: {r.entry} ({r.key})")
            elif not r.changed:
                typer.echo(f"already allowed: {r.entry} ({r.key})")
            else:
                was = " (its own block removed)" if r.replaced_block else ""
                typer.echo(f"allowed by exception: {r.entry} ({r.key}){was}")
    if remove and not all(r.changed for r in results):
        raise typer.Exit(1)
