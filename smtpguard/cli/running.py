"""Running and trying the relay: serve, demo, send."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from smtpguard import config
from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ConfigOpt, DbOpt, fail, run, settings_for


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.command(cls=Command)
def serve(
    config_path: ConfigOpt = None,
    db: DbOpt = None,
    log_format: Annotated[
        LogFormat, typer.Option(help="text (for journald) or json (for log shippers).")
    ] = LogFormat.text,
    log_level: Annotated[LogLevel, typer.Option(help="The least severe messages logged.")] = LogLevel.info,
) -> None:
    """Run the relay in the foreground until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    from smtpguard.runtime.logs import setup_logging
    from smtpguard.runtime.loops import loop_factory, run_with
    from smtpguard.runtime.server import serve_forever
    from smtpguard.runtime.workers import serve_workers

    settings = settings_for(config_path, db)
    loop_factory(settings.server.event_loop)  # event_loop = "uvloop" without uvloop: refused here, once
    setup_logging(log_format.value, log_level.value)
    try:
        if settings.server.workers > 1:
            code = serve_workers(settings, config_path=config_path, db=db)  # forks: no event loop in this process
        else:
            code = run_with(settings.server.event_loop, lambda: serve_forever(settings, config_path=config_path, db=db))
    except KeyboardInterrupt:  # before the signal handlers are in place
        fail("interrupted while starting", code=130)
    raise typer.Exit(code)


@app.command(cls=Command)
def demo(
    folder: Annotated[
        Path, typer.Option(help="Where the demo keeps its list and received mail.", metavar="PATH")
    ] = Path(".demo"),
    port: Annotated[
        int,
        typer.Option(help="Port of the demo relay on 127.0.0.1 (0: any free port).", min=0, max=65535, metavar="PORT"),
    ] = 2525,
) -> None:
    """A self-contained demonstration: relay on 127.0.0.1:2525 with a local upstream that stores mail."""
    from smtpguard.demo import run_demo
    from smtpguard.runtime.logs import setup_logging

    setup_logging("text", "info")
    raise typer.Exit(run(lambda: run_demo(folder, port)))


@app.command(cls=Command)
def send(
    to: Annotated[list[str], typer.Option("--to", help="Recipient; repeat for several.", metavar="ADDRESS")],
    server: Annotated[str, typer.Option(help="Relay to send through.", metavar="HOST:PORT")] = "127.0.0.1:2525",
    from_: Annotated[str, typer.Option("--from", help="Sender address.", metavar="ADDRESS")] = "you@example.com",
    subject: Annotated[str, typer.Option(help="Subject of the test message.", metavar="TEXT")] = (
        "smtpguard test message"
    ),
    user: Annotated[
        str | None, typer.Option(help="Log in as this user (password read from stdin).", metavar="NAME")
    ] = None,
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
