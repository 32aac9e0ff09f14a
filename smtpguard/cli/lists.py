"""List commands: import, add, remove, check, list, export."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from smtpguard.cli.app import Command, app, quiet_stdout
from smtpguard.cli.options import ExpiresOpt, JsonOpt, Output, fail, on_list, run, serve
from smtpguard.cli.output import Rows, emit_json, plural, say
from smtpguard.cli.progress import progress_bar
from smtpguard.config import Settings
from smtpguard.service import CheckResult, ImportResult, Service, open_service
from smtpguard.suppression.store import EntryRow

STDIN = "-"


@contextmanager
def stdin_as_file(name: str) -> Iterator[Path]:
    """`import -`: standard input copied to a private temporary file (formats need to seek)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smtpguard-") as folder:
        path = Path(folder) / name
        with path.open("wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield path


def say_imported(r: ImportResult, dry_run: bool, rejects: Path | None) -> None:
    """One file's import summary, and its first rejected rows on stderr."""
    verb = "would add" if dry_run else "added"
    typer.echo(
        f"{r.file}: {plural(r.rows, 'row')}, {verb} {r.added:,}, {r.duplicates:,} already listed, "
        f"{r.invalid:,} invalid (source {r.source!r})"
    )
    for rej in r.rejects[:5]:
        typer.echo(f"  line {rej.line}: {rej.text!r}: {rej.reason}", err=True)
    if r.invalid > 5:
        more = "write them all with --rejects FILE" if rejects is None else f"all in {rejects}"
        typer.echo(f"  … {plural(r.invalid - 5, 'more invalid row')} ({more})", err=True)


def import_json(r: ImportResult) -> dict[str, Any]:
    d = asdict(r)
    d["rejects"] = d["rejects"][:20]
    return d


@app.command("import", cls=Command)
@on_list
def import_(
    settings: Settings,
    files: Annotated[
        list[str],
        typer.Argument(help="Export files: CSV, TXT or XLSX; - reads standard input.", metavar="FILE"),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            help="Where the entries come from [default: the file's name without extension; stdin for -]",
            metavar="NAME",
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why these addresses are suppressed.", metavar="TEXT")] = "unsubscribed",
    column: Annotated[
        str | None, typer.Option(help="Header of the address column, when not detected.", metavar="NAME")
    ] = None,
    expires: ExpiresOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and count, change nothing.")] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write the rows not imported, with line number and reason, to this CSV.", metavar="FILE"),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="Encoding of CSV and text files, when not detected (cp1252, utf-16…).", metavar="NAME"),
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="CSV field separator, when not detected (; , | or tab).", metavar="CHAR")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Make the entries of the source exactly the file's (adds and removes)."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --replace: allow emptying the source or removing most of it.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Add the addresses of export files to the suppression list (one transaction per file)."""
    from smtpguard.suppression.formats import Reject, write_rejects

    if files.count(STDIN) > 1:
        fail("- (standard input) can be imported only once")
    if replace:
        from smtpguard.cli.sources import replace_import

        return replace_import(
            settings, files, source, dry_run=dry_run, force=force, json_=json_, reason=reason, expires=expires,
            column=column, encoding=encoding, delimiter=delimiter,
        )  # fmt: skip
    if rejects is not None:
        write_rejects(rejects, [])  # an unwritable --rejects fails now, before the list changes

    async def one(service: Service, path: Path, name: str) -> ImportResult:
        with progress_bar(path) as advance:
            return await service.import_file(
                path, source=source or (None if name != STDIN else "stdin"), reason=reason, expires=expires,
                column=column, dry_run=dry_run, progress=advance, encoding=encoding, delimiter=delimiter,
            )  # fmt: skip

    async def main() -> list[ImportResult]:
        results: list[ImportResult] = []
        all_rejects: list[Reject] = []
        async with open_service(settings) as service:
            for name in files:
                if name == STDIN:
                    with stdin_as_file("stdin") as path:
                        r = await one(service, path, name)
                    r = ImportResult(STDIN, r.source, r.rows, r.added, r.duplicates, r.invalid, r.rejects)
                else:
                    r = await one(service, Path(name), name)
                results.append(r)
                label = Path(name).name
                all_rejects += [
                    x if len(files) == 1 else Reject(x.line, x.text, f"{label}: {x.reason}") for x in r.rejects
                ]
                if not json_:
                    say_imported(r, dry_run, rejects)  # now: a later file may still fail
        if rejects is not None:
            write_rejects(rejects, all_rejects)
        return results

    results = run(main)
    if json_:
        totals = {k: sum(getattr(r, k) for r in results) for k in ("rows", "added", "duplicates", "invalid")}
        emit_json({**totals, "dry_run": dry_run, "files": [import_json(r) for r in results]})
    elif dry_run:
        typer.echo("dry run: nothing was changed")


EntriesArg = Annotated[
    list[str], typer.Argument(help="Addresses (jane@x.com) or domains (@x.com or x.com).", metavar="ENTRY")
]


@app.command(cls=Command)
@on_list
def add(
    settings: Settings,
    entries: EntriesArg,
    reason: Annotated[str, typer.Option(help="Why they are suppressed.", metavar="TEXT")] = "added by hand",
    source: Annotated[str, typer.Option(help="Where they come from.", metavar="NAME")] = "manual",
    expires: ExpiresOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add addresses or domains to the suppression list by hand."""
    results = serve(settings, lambda s: s.add(entries, source=source, reason=reason, expires=expires), create=True)
    say(results, json_, lambda r: f"{'added' if r.added else 'already listed'}: {r.entry} ({r.kind} {r.key})")


@app.command(cls=Command)
@on_list
def remove(
    settings: Settings,
    entries: Annotated[
        list[str] | None, typer.Argument(help="Addresses or domains to take off the list.", metavar="ENTRY")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Remove every entry of this source instead (a mistaken import).", metavar="NAME")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --source: do not ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Take entries off the suppression list (an address that re-subscribed), or a whole --source."""
    if source is not None:
        if entries:
            fail("give entries or --source, not both")
        from smtpguard.cli.sources import remove_source

        return remove_source(settings, source, yes=yes, json_=json_)
    if not entries:
        fail("give the entries to remove, or --source NAME (see smtpguard remove --help)")

    wanted = entries
    results = serve(settings, lambda s: s.remove(wanted))
    say(results, json_, lambda r: f"{'removed' if r.removed else 'not listed'}: {r.entry} ({r.key})")
    if not all(r.removed for r in results):
        raise typer.Exit(1)


def check_line(r: CheckResult) -> str:
    if r.allowed_by_exception:
        return f"allowed  {r.address}  by exception {r.entry} (reason {r.reason}, added {(r.added or '')[:10]})"
    if not r.blocked:
        return f"allowed  {r.address}"
    return (
        f"blocked  {r.address}  by {r.kind} entry {r.entry} "
        f"(source {r.source}, reason {r.reason}, added {(r.added or '')[:10]})"
    )


def stdin_lines() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip()]


@app.command(cls=Command)
@on_list
def check(
    settings: Settings,
    fmt: Output,
    addresses: Annotated[
        list[str],
        typer.Argument(help="Addresses to check; - reads them from standard input, one a line.", metavar="ADDRESS"),
    ],
) -> None:
    """Say for each address whether the list blocks it (exit 1 if any is blocked, 2 on bad input)."""
    wanted = [a for x in addresses for a in (stdin_lines() if x == STDIN else [x])]
    results = serve(settings, lambda s: s.check(wanted))
    try:
        with Rows(fmt, check_line) as rows:
            for r in results:
                rows.add(r)
    except BrokenPipeError:  # the reader went away; the exit status still says blocked or not
        quiet_stdout()
    if any(r.blocked for r in results):
        raise typer.Exit(1)


def entry_line(e: EntryRow) -> str:
    return f"{e.original}\t{e.kind}\t{e.source}\t{e.reason}\t{e.added}\t{e.expires or ''}"


@app.command("list", cls=Command)
@on_list
def list_(
    settings: Settings,
    fmt: Output,
    source: Annotated[str | None, typer.Option(help="Only entries from this source.", metavar="NAME")] = None,
    search: Annotated[str | None, typer.Option(help="Only entries containing this text.", metavar="TEXT")] = None,
) -> None:
    """Show the entries of the suppression list."""

    async def main() -> int:
        async with open_service(settings, create=False) as service:
            with Rows(fmt, entry_line, header="entry\tkind\tsource\treason\tadded\texpires") as rows:
                async with aclosing(service.entries(source=source, search=search)) as entries:
                    async for e in entries:
                        rows.add(e)
            return rows.count

    n = run(main)
    if fmt is Output.text:
        typer.echo(plural(n, "entry", "entries"), err=True)


class ExportFormat(StrEnum):
    csv = "csv"
    txt = "txt"
    json = "json"
    ndjson = "ndjson"


CSV_HEADER = "email,kind,key,source,reason,added,expires"


def csv_line(e: EntryRow) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(
        [e.original, e.kind, e.key, e.source, e.reason, e.added, e.expires or ""]
    )
    return buf.getvalue()


def txt_line(e: EntryRow) -> str:
    return e.key if e.kind == "domain" else e.original


def export_rows(fmt: ExportFormat, out: TextIO) -> Rows[EntryRow]:
    if fmt is ExportFormat.csv:
        return Rows(Output.text, csv_line, header=CSV_HEADER, out=out)
    if fmt is ExportFormat.txt:
        return Rows(Output.text, txt_line, out=out)
    return Rows(Output(fmt.value), txt_line, out=out)


@app.command(cls=Command)
@on_list
def export(
    settings: Settings,
    file: Annotated[str, typer.Argument(help="Where to write; - for standard output.", metavar="FILE")] = STDIN,
    format_: Annotated[ExportFormat, typer.Option("--format", help="What to write.")] = ExportFormat.csv,
) -> None:
    """Write the whole list as CSV (default), plain text, JSON or newline-delimited JSON."""

    async def write(out: TextIO) -> int:
        async with open_service(settings, create=False) as service:
            with export_rows(format_, out) as rows:
                async with aclosing(service.entries()) as entries:
                    async for e in entries:
                        if e.kind != "allow" or format_ is not ExportFormat.txt:  # txt: addresses to block only
                            rows.add(e)
            return rows.count

    async def main() -> int:
        if file == STDIN:
            return await write(sys.stdout)
        target = Path(file)
        partial = target.with_name(target.name + ".part")
        with partial.open("w", encoding="utf-8", newline="") as out:
            n = await write(out)
        partial.replace(target)  # never leave a half-written export under the real name
        return n

    n = run(main)
    if file != STDIN:
        typer.echo(f"{plural(n, 'entry', 'entries')} written to {file}", err=True)
