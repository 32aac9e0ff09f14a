"""What every command shares: the options, loading the settings, running the async body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from smtpguard import config
from smtpguard.config import Settings

T = TypeVar("T")


class Failure(Exception):
    """A user-facing error raised by a command: one line, then exit 2."""


class Output(StrEnum):
    """How a listing is written on stdout."""

    text = "text"
    json = "json"
    ndjson = "ndjson"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Configuration file [default: $SMTPGUARD_CONFIG, else /etc/smtpguard/smtpguard.toml if present]",
        show_default=False,
        metavar="PATH",
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db", help="Store file, overrides [store] path [env: SMTPGUARD_DB]", show_default=False, metavar="PATH"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
NlOpt = Annotated[bool, typer.Option("--nl", help="Newline-delimited JSON on stdout: one object a line.")]
ExpiresOpt = Annotated[str | None, typer.Option(help="YYYY-MM-DD: the entries stop blocking that day.", metavar="DATE")]


def output(json_: bool, nl: bool = False) -> Output:
    if json_ and nl:
        fail("--json and --nl cannot be used together")
    return Output.ndjson if nl else Output.json if json_ else Output.text


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"smtpguard: {message}", err=True)
    raise typer.Exit(code)


def settings_for(config_path: Path | None, db: Path | None) -> Settings:
    """The settings (ConfigError becomes a one-line error in app.Group)."""
    return config.load(config_path, db)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; Ctrl-C says the list is untouched (imports are one transaction)."""

    async def body() -> T:
        return await main()

    try:
        return asyncio.run(body())
    except KeyboardInterrupt:
        fail("interrupted; the list is as it was before this command", code=130)
