"""Pull connectors from the command line: sync status, sync run NAME."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

import typer

from smtpguard.cli.app import Command, sync_app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, NlOpt, fail, output, run, settings_for
from smtpguard.cli.output import Rows
from smtpguard.suppression.store import connect
from smtpguard.sync.sync import SyncResult


@dataclass(frozen=True, slots=True)
class SyncLine:
    source: str
    provider: str
    pull: str  # "every N s" or "webhook"
    entries: int
    last_success: str | None
    last_failure: str | None
    last_error: str


def _when(stamp: float | None) -> str | None:
    return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="seconds")


def sync_text(s: SyncLine) -> str:
    failure = f"{s.last_failure or '-'}" + (f" ({s.last_error})" if s.last_error else "")
    return f"{s.source}\t{s.provider}\t{s.pull}\t{s.entries} entries\tok {s.last_success or '-'}\tfailed {failure}"


@sync_app.command("status", cls=Command)
def sync_status(json_: JsonOpt = False, nl: NlOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Each [[sync]] source: last success, last failure and why, entries on the list."""
    from smtpguard.sync.scheduler import read_status, status_path

    fmt = output(json_, nl)
    settings = settings_for(config_path, db)

    async def main() -> dict[str, int]:
        store = await connect(settings, create=False)
        try:
            counts: dict[str, int] = {}
            for source, _kind, n in (await store.stats("9999")).entries_by_source_kind:
                counts[source] = counts.get(source, 0) + n
            return counts
        finally:
            await store.close()

    counts = run(main)
    known = read_status(status_path(settings))
    with Rows[SyncLine](fmt, sync_text) as rows:
        for e in settings.sync:
            st = known.get(e.name)
            rows.add(SyncLine(
                e.name, e.provider, f"every {e.interval:g} s" if e.interval else "webhook", counts.get(e.name, 0),
                _when(st.last_success if st else None), _when(st.last_failure if st else None),
                st.last_error if st else "",
            ))  # fmt: skip
    if not settings.sync:
        typer.echo("no [[sync]] entries in the configuration", err=True)


@sync_app.command("run", cls=Command)
def sync_run(
    name: Annotated[str, typer.Argument(help="The [[sync]] entry's name.", metavar="NAME")],
    force: Annotated[bool, typer.Option("--force", help="Accept a large drop (the guard refuses it).")] = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Pull one source now (as the relay would) and show what changed."""
    from smtpguard.sync.scheduler import Scheduler, new_http, status_path

    settings = settings_for(config_path, db)
    if not any(e.name == name and e.interval for e in settings.sync):
        fail(f"no [[sync]] entry {name!r} with an interval (a pull connector)")

    async def main() -> SyncResult:
        store = await connect(settings, create=True)
        http = new_http()
        try:
            return await Scheduler(store, settings.sync, status_path(settings), http=http).run(name, force=force)
        finally:
            await http.client.aclose()
            await store.close()

    from smtpguard.sync.connectors import ConnectorError
    from smtpguard.sync.sync import SyncRefused

    try:
        r = run(main)
    except (ConnectorError, SyncRefused) as exc:
        fail(str(exc), code=1)
    typer.echo(f"{name}: {r.added} added, {r.removed} removed, {r.unchanged} unchanged, {len(r.invalid)} invalid")
