"""The `smtpguard` command: thin typer commands over the library.

Errors print one line on stderr and exit non-zero, never a traceback.
Exit codes: 0 success; 1 `check` found a blocked address; 2 bad input,
configuration or store errors; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer

from smtpguard import __version__, config
from smtpguard.config import ConfigError, Settings
from smtpguard.suppression.addresses import AddressError, Entry, MatchRules, parse_entry
from smtpguard.suppression.store import EntryRow, Store, StoreError, connect, utc_now
from smtpguard.suppression.verdict import check_address

T = TypeVar("T")

app = typer.Typer(
    help="smtpguard: an outgoing SMTP relay that refuses recipients on your suppression list.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
user_app = typer.Typer(help='Accounts for auth = "local".', no_args_is_help=True)
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Configuration file [default: $SMTPGUARD_CONFIG, else /etc/smtpguard/smtpguard.toml if present]",
        show_default=False,
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="Store file, overrides [store] path [env: SMTPGUARD_DB]", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
ExpiresOpt = Annotated[str | None, typer.Option(help="YYYY-MM-DD: the entries stop blocking that day.")]


class Failure(Exception):
    """A user-facing error: one line, then exit 2."""


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"smtpguard: {message}", err=True)
    raise typer.Exit(code)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body, turning known failures into one-line errors."""
    from smtpguard.suppression.formats import ImportFormatError

    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except (ConfigError, StoreError, ImportFormatError, AddressError, Failure) as exc:
        fail(str(exc))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{':' if where else ''}{where}")
    except KeyboardInterrupt:
        fail("interrupted; the list is as it was before this command", code=130)


def settings_for(config_path: Path | None, db: Path | None) -> Settings:
    try:
        return config.load(config_path, db)
    except ConfigError as exc:
        fail(str(exc))


@asynccontextmanager
async def opened(settings: Settings, *, create: bool = True) -> AsyncIterator[Store]:
    """The configured store, closed on the way out whatever happens."""
    store = await connect(settings, create=create)
    try:
        yield store
    finally:
        await store.close()


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def entry_dict(e: EntryRow) -> dict[str, Any]:
    return e._asdict()


def parse_date(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise Failure(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


def parse_entries(texts: list[str], rules: MatchRules) -> list[Entry]:
    """Entries typed on the command line; the first bad one stops the command."""
    out = []
    for text in texts:
        try:
            out.append(parse_entry(text, rules))
        except AddressError as exc:
            raise Failure(f"{text!r} is not an address or domain: {exc}") from None
    return out


# --- list management ----------------------------------------------------------


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A byte-based progress bar on a terminal; nothing when output is piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def say_imported(r: dict[str, Any], dry_run: bool, rejects: Path | None) -> None:
    """One file's import summary, and its first rejected rows on stderr."""
    verb = "would add" if dry_run else "added"
    typer.echo(
        f"{r['file']}: {r['rows']} rows, {verb} {r['added']}, {r['duplicates']} already listed, "
        f"{r['invalid']} invalid (source {r['source']!r})"
    )
    for rej in r["rejects"][:5]:
        typer.echo(f"  line {rej['line']}: {rej['text']!r}: {rej['reason']}", err=True)
    if r["invalid"] > 5:
        more = "write them all with --rejects FILE" if rejects is None else f"all in {rejects}"
        typer.echo(f"  … {r['invalid'] - 5} more invalid rows ({more})", err=True)


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="Export files: CSV, TXT or XLSX.", show_default=False, metavar="FILE")
    ],
    source: Annotated[
        str | None, typer.Option(help="Where the entries come from [default: the file's name without extension]")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why these addresses are suppressed.")] = "unsubscribed",
    column: Annotated[str | None, typer.Option(help="Header of the address column, when not detected.")] = None,
    expires: ExpiresOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and count, change nothing.")] = False,
    rejects: Annotated[
        Path | None, typer.Option(help="Write the rows not imported, with line number and reason, to this CSV.")
    ] = None,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Add the addresses of export files to the suppression list (one transaction per file)."""
    from smtpguard.suppression.formats import Reject, total_size, write_rejects
    from smtpguard.suppression.ingest import import_file

    settings = settings_for(config_path, db)

    async def main() -> list[dict[str, Any]]:
        expiry = parse_date(expires, "--expires")
        results: list[dict[str, Any]] = []
        all_rejects: list[Reject] = []
        async with opened(settings) as store:
            for path in files:
                with progress_bar(path.name, total_size(path)) as advance:
                    done = await import_file(
                        store, path, source=source, reason=reason, expires=expiry,
                        column=column, commit=not dry_run, progress=advance,
                    )  # fmt: skip
                results.append(
                    {
                        "file": str(path),
                        "source": done.source,
                        "rows": done.stats.rows,
                        "added": done.result.added,
                        "duplicates": done.result.duplicates,
                        "invalid": done.stats.invalid,
                        "rejects": [asdict(r) for r in done.rejects[:20]],
                    }
                )
                all_rejects += [
                    r if len(files) == 1 else Reject(r.line, r.text, f"{path.name}: {r.reason}") for r in done.rejects
                ]
                if not json_:
                    say_imported(results[-1], dry_run, rejects)  # now: a later file may still fail
        if rejects is not None:
            write_rejects(rejects, all_rejects)
        return results

    results = run(main)
    totals = {k: sum(r[k] for r in results) for k in ("rows", "added", "duplicates", "invalid")}
    if json_:
        emit_json({**totals, "dry_run": dry_run, "files": results})
        return
    if dry_run:
        typer.echo("dry run: nothing was changed")


@app.command()
def add(
    entries: Annotated[
        list[str], typer.Argument(help="Addresses (jane@x.com) or domains (@x.com or x.com).", metavar="ENTRY")
    ],
    reason: Annotated[str, typer.Option(help="Why they are suppressed.")] = "added by hand",
    source: Annotated[str, typer.Option(help="Where they come from.")] = "manual",
    expires: ExpiresOpt = None,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Add addresses or domains to the suppression list by hand."""
    settings = settings_for(config_path, db)

    async def main() -> list[dict[str, Any]]:
        expiry = parse_date(expires, "--expires")
        parse_entries(entries, settings.matching)  # bad input stops before the list is opened
        out = []
        async with opened(settings) as store:
            parsed = parse_entries(entries, await store.rules())  # keyed the list's way
            now = utc_now()
            for e in parsed:
                r = await store.add_entries([EntryRow(e.key, e.kind, e.original, source, reason, now, expiry)])
                out.append({"entry": e.original, "key": e.key, "kind": e.kind, "added": bool(r.added)})
        return out

    results = run(main)
    if json_:
        emit_json(results)
        return
    for r in results:
        state = "added" if r["added"] else "already listed"
        typer.echo(f"{state}: {r['entry']} ({r['kind']} {r['key']})")


@app.command()
def remove(
    entries: Annotated[list[str], typer.Argument(help="Addresses or domains to take off the list.", metavar="ENTRY")],
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Take entries off the suppression list (for example an address that re-subscribed)."""
    settings = settings_for(config_path, db)

    async def main() -> list[dict[str, Any]]:
        parse_entries(entries, settings.matching)  # bad input stops before the list is opened
        async with opened(settings, create=False) as store:
            keys = [(e.original, e.key) for e in parse_entries(entries, await store.rules())]
            removed = set(await store.remove([k for _, k in keys]))
        return [{"entry": t, "key": k, "removed": k in removed} for t, k in keys]

    results = run(main)
    if json_:
        emit_json(results)
    else:
        for r in results:
            typer.echo(f"{'removed' if r['removed'] else 'not listed'}: {r['entry']} ({r['key']})")
    if not all(r["removed"] for r in results):
        raise typer.Exit(1)


@app.command()
def check(
    addresses: Annotated[list[str], typer.Argument(help="Addresses to check.", metavar="ADDRESS")],
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Say for each address whether the list blocks it (exit 1 if any is blocked, 2 on bad input)."""
    settings = settings_for(config_path, db)

    async def main() -> list[dict[str, Any]]:
        out = []
        async with opened(settings, create=False) as store:
            for a in addresses:
                try:
                    hit = await check_address(store, a)
                except AddressError as exc:
                    raise Failure(f"{a!r} is not a valid address: {exc}") from None
                out.append(
                    {
                        "address": a,
                        "blocked": hit is not None,
                        "entry": hit.original if hit else None,
                        "key": hit.key if hit else None,
                        "kind": hit.kind if hit else None,
                        "source": hit.source if hit else None,
                        "reason": hit.reason if hit else None,
                        "added": hit.added if hit else None,
                        "expires": hit.expires if hit else None,
                    }
                )
        return out

    results = run(main)
    if json_:
        emit_json(results)
    else:
        for r in results:
            if r["blocked"]:
                typer.echo(
                    f"blocked  {r['address']}  by {r['kind']} entry {r['entry']} "
                    f"(source {r['source']}, reason {r['reason']}, added {r['added'][:10]})"
                )
            else:
                typer.echo(f"allowed  {r['address']}")
    if any(r["blocked"] for r in results):
        raise typer.Exit(1)


@app.command("list")
def list_(
    source: Annotated[str | None, typer.Option(help="Only entries from this source.")] = None,
    search: Annotated[str | None, typer.Option(help="Only entries containing this text.")] = None,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Show the entries of the suppression list."""
    settings = settings_for(config_path, db)

    async def main() -> int:
        n = 0
        async with opened(settings, create=False) as store:
            if json_:
                sys.stdout.write("[")
            else:
                typer.echo("entry\tkind\tsource\treason\tadded\texpires")
            async for e in store.entries(source=source, search=search):
                if json_:
                    sys.stdout.write(("," if n else "") + "\n  " + json.dumps(entry_dict(e), ensure_ascii=False))
                else:
                    typer.echo(f"{e.original}\t{e.kind}\t{e.source}\t{e.reason}\t{e.added}\t{e.expires or ''}")
                n += 1
            if json_:
                sys.stdout.write("\n]\n")
        return n

    n = run(main)
    if not json_:
        typer.echo(f"{n} entries", err=True)


@app.command()
def export(
    file: Annotated[str, typer.Argument(help="Where to write; - for standard output.")] = "-",
    format_: Annotated[str, typer.Option("--format", help="csv, txt or json.")] = "csv",
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Write the whole list as CSV (default), plain text or JSON."""
    if format_ not in ("csv", "txt", "json"):
        fail(f"--format must be csv, txt or json, got {format_!r}")
    settings = settings_for(config_path, db)

    async def write(out: TextIO) -> int:
        n = 0
        async with opened(settings, create=False) as store:
            writer = csv.writer(out, lineterminator="\n")
            if format_ == "csv":
                writer.writerow(["email", "kind", "key", "source", "reason", "added", "expires"])
            elif format_ == "json":
                out.write("[")
            async for e in store.entries():
                if format_ == "csv":
                    writer.writerow([e.original, e.kind, e.key, e.source, e.reason, e.added, e.expires or ""])
                elif format_ == "txt":
                    out.write((e.key if e.kind == "domain" else e.original) + "\n")
                else:
                    out.write(("," if n else "") + "\n  " + json.dumps(entry_dict(e), ensure_ascii=False))
                n += 1
            if format_ == "json":
                out.write("\n]\n")
        return n

    async def main() -> int:
        if file == "-":
            return await write(sys.stdout)
        target = Path(file)
        partial = target.with_name(target.name + ".part")
        with partial.open("w", encoding="utf-8", newline="") as out:
            n = await write(out)
        partial.replace(target)  # never leave a half-written export under the real name
        return n

    n = run(main)
    if file != "-":
        typer.echo(f"{n} entries written to {file}", err=True)


@app.command()
def stats(json_: JsonOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Entry counts by source and kind, and refusals over the last 30 days."""
    settings = settings_for(config_path, db)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat(timespec="seconds")

    async def main() -> dict[str, Any]:
        async with opened(settings, create=False) as store:
            s = await store.stats(since)
        return {
            "entries": [{"source": src, "kind": k, "count": c} for src, k, c in s.entries_by_source_kind],
            "total": sum(c for _, _, c in s.entries_by_source_kind),
            "expired": s.expired,
            "events_last_30_days": s.events_by_action,
        }

    r = run(main)
    if json_:
        emit_json(r)
        return
    typer.echo(f"{r['total']} entries ({r['expired']} expired)")
    for row in r["entries"]:
        typer.echo(f"  {row['count']:>9}  {row['kind']:<8} {row['source']}")
    events = r["events_last_30_days"]
    typer.echo("last 30 days: " + (", ".join(f"{n} {a}" for a, n in sorted(events.items())) or "no refusals"))


@app.command()
def log(
    since: Annotated[str | None, typer.Option(help="From this date or time (ISO 8601, UTC).")] = None,
    sender: Annotated[str | None, typer.Option(help="Only this sender.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the most recent.")] = 100,
    json_: JsonOpt = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """The audit trail of refused, stripped and monitored recipients."""
    settings = settings_for(config_path, db)

    async def main() -> list[dict[str, Any]]:
        if since is not None:
            try:
                dt.datetime.fromisoformat(since)
            except ValueError:
                raise Failure(
                    f"--since must be a date or time like 2026-11-01 or 2026-11-01T09:00, got {since!r}"
                ) from None
        async with opened(settings, create=False) as store:
            events = await store.events(since=since, sender=sender, limit=limit)
        return [asdict(e) for e in events]

    events = run(main)
    if json_:
        emit_json(events)
        return
    for e in events:
        typer.echo(
            f"{e['time']}  {e['action']:<9} {e['recipient']}  from {e['sender'] or '<>'}"
            f"  entry {e['entry']} ({e['source']})  client {e['client']}" + (f" user {e['user']}" if e["user"] else "")
        )
    if not events:
        typer.echo("no events", err=True)


# --- users ------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Create an account (or change its password); the password is prompted."""
    from smtpguard.passwords import hash_password

    settings = settings_for(config_path, db)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if not password:
        fail("the password is empty")
    if not name or any(c.isspace() or c == ":" for c in name):
        fail(f"user name {name!r} must not be empty or hold spaces")

    async def main() -> bool:
        async with opened(settings) as store:
            return await store.set_user(name, hash_password(password))

    created = run(main)
    typer.echo(f"{'created' if created else 'password changed for'} user {name}")


@user_app.command("remove")
def user_remove(name: str, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Delete an account."""
    settings = settings_for(config_path, db)

    async def main() -> bool:
        async with opened(settings, create=False) as store:
            return await store.remove_user(name)

    if not run(main):
        fail(f"no user {name!r}", code=1)
    typer.echo(f"removed user {name}")


@user_app.command("list")
def user_list(json_: JsonOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """List the accounts."""
    settings = settings_for(config_path, db)

    async def main() -> list[tuple[str, str]]:
        async with opened(settings, create=False) as store:
            return await store.users()

    users = run(main)
    if json_:
        emit_json([{"name": n, "created": c} for n, c in users])
        return
    for n, c in users:
        typer.echo(f"{n}\t{c}")
    if not users:
        typer.echo("no users", err=True)


# --- running ----------------------------------------------------------------------


@config_app.command("check")
def config_check(config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Validate the configuration and try the upstream connection (connect, TLS, EHLO)."""
    from smtpguard.runtime.probe import probe
    from smtpguard.runtime.safety import relay_problems

    settings = settings_for(config_path, db)
    typer.echo(f"configuration: {settings.source or 'built-in defaults'}: valid")
    problems = relay_problems(settings)
    for p in problems:
        typer.echo(f"refused: {p}")
    ok = run(lambda: probe(settings, typer.echo))
    if problems or not ok:
        raise typer.Exit(1)


@app.command()
def serve(
    config_path: ConfigOpt = None,
    db: DbOpt = None,
    log_format: Annotated[str, typer.Option(help="text (for journald) or json (for log shippers).")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the relay in the foreground until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    from smtpguard.runtime.logs import setup_logging
    from smtpguard.runtime.server import serve_forever

    settings = settings_for(config_path, db)
    setup_logging(log_format, log_level)
    code = run(lambda: serve_forever(settings, config_path=config_path, db=db))
    raise typer.Exit(code)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option(help="Where the demo keeps its list and received mail.")] = Path(".demo"),
    port: Annotated[int, typer.Option(help="Port of the demo relay on 127.0.0.1.")] = 2525,
) -> None:
    """A self-contained demonstration: relay on 127.0.0.1:2525 with a local upstream that stores mail."""
    from smtpguard.demo import run_demo
    from smtpguard.runtime.logs import setup_logging

    setup_logging("text", "info")
    raise typer.Exit(run(lambda: run_demo(folder, port)))


@app.command()
def send(
    to: Annotated[list[str], typer.Option("--to", help="Recipient; repeat for several.")],
    server: Annotated[str, typer.Option(help="Relay to send through, host:port.")] = "127.0.0.1:2525",
    from_: Annotated[str, typer.Option("--from", help="Sender address.")] = "you@example.com",
    subject: Annotated[str, typer.Option(help="Subject of the test message.")] = "smtpguard test message",
    user: Annotated[str | None, typer.Option(help="Log in as this user (password read from stdin).")] = None,
    starttls: Annotated[bool, typer.Option("--starttls", help="Use STARTTLS (certificate checked).")] = False,
) -> None:
    """Send a short test message through a relay and show each answer (exit 1 if anything was refused)."""
    import smtplib
    import ssl
    from email.message import EmailMessage
    from email.utils import make_msgid

    try:
        endpoint = config.parse_endpoint(server)
    except ValueError as exc:
        fail(f"--server must be {exc}")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = from_, ", ".join(to), subject
    msg["Message-ID"] = make_msgid(domain="smtpguard.localhost")
    msg.set_content("A test message sent with `smtpguard send`.\n")
    refused = False
    try:
        with smtplib.SMTP(endpoint.host, endpoint.port, timeout=60) as smtp:
            smtp.ehlo()
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if user:
                smtp.login(user, sys.stdin.readline().rstrip("\r\n"))
            code, text = smtp.mail(from_)
            typer.echo(f"MAIL FROM:<{from_}>  -> {code} {text.decode()}")
            if code != 250:
                raise typer.Exit(1)
            accepted = []
            for rcpt in to:
                code, text = smtp.rcpt(rcpt)
                typer.echo(f"RCPT TO:<{rcpt}>  -> {code} {text.decode()}")
                if code in (250, 251):
                    accepted.append(rcpt)
                else:
                    refused = True
            if not accepted:
                smtp.rset()
                typer.echo("nothing sent: every recipient was refused")
                raise typer.Exit(1)
            code, text = smtp.data(msg.as_bytes())
            typer.echo(f"DATA  -> {code} {text.decode()}")
            refused = refused or code != 250
    except smtplib.SMTPAuthenticationError as exc:
        why = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        fail(f"login refused: {exc.smtp_code} {why}", code=1)
    except (smtplib.SMTPException, OSError) as exc:
        fail(f"cannot send through {server}: {exc}", code=1)
    if refused:
        raise typer.Exit(1)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"smtpguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """smtpguard: an outgoing SMTP relay that refuses recipients on your suppression list."""


def main() -> None:
    app()
