"""Store commands: store migrate (a SQLite list into PostgreSQL, for several relays)."""

from __future__ import annotations

from typing import Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, fail, run, settings_for
from smtpguard.cli.output import emit_json

store_app = typer.Typer(help="Move the list between stores.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(store_app, name="store")


@store_app.command("migrate", cls=Command)
def migrate(
    to: Annotated[str, typer.Option("--to", help="The PostgreSQL database to fill.", metavar="postgresql://...")],
    force: Annotated[bool, typer.Option("--force", help="Replace a list the target already holds.")] = False,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Copy the SQLite list, its audit log and its users into PostgreSQL, in one transaction."""
    from dataclasses import asdict, replace

    from smtpguard.suppression.store.migrate import Copied, migrate_sqlite
    from smtpguard.suppression.store.postgres_connect import open_url

    settings = settings_for(config_path, db)
    if not to.startswith(("postgresql://", "postgres://")):
        fail(f'--to must be a "postgresql://..." URL, got {to!r}')
    source = settings.store.path
    relay = settings.store.relay_name or settings.server.hostname
    target_settings = replace(settings, store=replace(settings.store, url=to))

    async def main() -> tuple[str, Copied]:
        target = await open_url(target_settings)
        try:
            return target.server, await migrate_sqlite(source, target, relay=relay, force=force)
        finally:
            await target.close()

    server, copied = run(main)
    if json_:
        emit_json({"from": str(source), "to": server, **asdict(copied)})
        return
    typer.echo(
        f"copied {source} to {server}: {copied.entries:,} entries in {copied.batches:,} batches,"
        f" {copied.events:,} audit events, {copied.users:,} users, and the list's matching rules"
    )
    typer.echo("the SQLite file is unchanged; set [store] url in each relay's configuration to use the copy")
