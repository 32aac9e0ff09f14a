"""Audit commands: log, stats."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import JsonOpt, Output, on_list, serve
from smtpguard.cli.output import Rows, emit_json, plural, say
from smtpguard.config import Settings
from smtpguard.service import StatsResult
from smtpguard.suppression.store import Event


def event_line(e: Event) -> str:
    user = f" user {e.user}" if e.user else ""
    relay = f"  relay {e.relay}" if e.relay else ""
    return (
        f"{e.time}  {e.action:<9} {e.recipient}  from {e.sender or '<>'}"
        f"  entry {e.entry} ({e.source})  client {e.client}{user}{relay}"
    )


@app.command(cls=Command)
@on_list
def log(
    settings: Settings,
    fmt: Output,
    since: Annotated[str | None, typer.Option(help="From this date or time (ISO 8601, UTC).", metavar="WHEN")] = None,
    sender: Annotated[str | None, typer.Option(help="Only this sender.", metavar="ADDRESS")] = None,
    user: Annotated[str | None, typer.Option(help="Only this local or logged-in user.", metavar="NAME")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the most recent.", min=1, metavar="N")] = 100,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete events older than [audit] retention_days (or --days) instead.")
    ] = False,
    days: Annotated[
        int | None,
        typer.Option(help="With --prune: keep this many days [default: [audit] retention_days]", min=1, metavar="N"),
    ] = None,
) -> None:
    """The audit trail of refused, stripped and monitored recipients."""
    if prune:
        keep = days or settings.audit.retention_days
        gone = serve(settings, lambda s: s.prune_log(keep))
        typer.echo(f"deleted {plural(gone, 'event')} older than {plural(keep, 'day')}")
        return
    events = serve(settings, lambda s: s.log(since=since, sender=sender, limit=limit, user=user))
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


class By(StrEnum):
    user = "user"
    sender = "sender"


@app.command(cls=Command)
@on_list
def stats(
    settings: Settings,
    by: Annotated[
        By | None, typer.Option(help="Instead: who had the most recipients caught in the last 30 days.")
    ] = None,
    top: Annotated[int, typer.Option(help="With --by: how many to show.", min=1, metavar="N")] = 10,
    json_: JsonOpt = False,
) -> None:
    """Entry counts by source and kind, and refusals over the last 30 days (--by user|sender: per person)."""
    if by is not None:
        group = by
        found = serve(settings, lambda s: s.top(group.value, top))
        if not found and not json_:
            typer.echo("no events in the last 30 days", err=True)
        say(found, json_, lambda p: f"{p.events:>9,}  {p.name or '(no login)'}")
        return
    r = serve(settings, lambda s: s.stats())
    if json_:
        emit_json(r)
        return
    for line in stats_lines(r):
        typer.echo(line)
