"""Audit commands: log, stats."""

from __future__ import annotations

from typing import Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, NlOpt, Output, output, run, settings_for
from smtpguard.cli.output import Rows, emit_json, plural
from smtpguard.service import StatsResult, open_service
from smtpguard.suppression.store import Event


def event_line(e: Event) -> str:
    user = f" user {e.user}" if e.user else ""
    relay = f"  relay {e.relay}" if e.relay else ""
    return (
        f"{e.time}  {e.action:<9} {e.recipient}  from {e.sender or '<>'}"
        f"  entry {e.entry} ({e.source})  client {e.client}{user}{relay}"
    )


@app.command(cls=Command)
def log(
    since: Annotated[str | None, typer.Option(help="From this date or time (ISO 8601, UTC).", metavar="WHEN")] = None,
    sender: Annotated[str | None, typer.Option(help="Only this sender.", metavar="ADDRESS")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the most recent.", min=1, metavar="N")] = 100,
    json_: JsonOpt = False,
    nl: NlOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """The audit trail of refused, stripped and monitored recipients."""
    fmt = output(json_, nl)
    settings = settings_for(config_path, db)

    async def main() -> list[Event]:
        async with open_service(settings, create=False) as service:
            return await service.log(since=since, sender=sender, limit=limit)

    events = run(main)
    with Rows(fmt, event_line) as rows:
        for e in events:
            rows.add(e)
    if not events and fmt is Output.text:
        typer.echo("no events", err=True)


def stats_lines(r: StatsResult) -> list[str]:
    lines = [f"{plural(r.total, 'entry', 'entries')} ({r.expired:,} expired)"]
    lines += [f"  {row.count:>9,}  {row.kind:<8} {row.source}" for row in r.entries]
    events = r.events_last_30_days
    lines.append("last 30 days: " + (", ".join(f"{n:,} {a}" for a, n in sorted(events.items())) or "no refusals"))
    return lines


@app.command(cls=Command)
def stats(json_: JsonOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Entry counts by source and kind, and refusals over the last 30 days."""
    settings = settings_for(config_path, db)

    async def main() -> StatsResult:
        async with open_service(settings, create=False) as service:
            return await service.stats()

    r = run(main)
    if json_:
        emit_json(r)
        return
    for line in stats_lines(r):
        typer.echo(line)
