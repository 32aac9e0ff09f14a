"""What every command shares: the options, loading the settings, running the async body."""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from smtpguard import config
from smtpguard.config import Settings

if TYPE_CHECKING:
    from smtpguard.service import Service

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


def on_list(body: Callable[..., None]) -> Callable[..., None]:
    """Command plumbing in one place: the body's `settings` comes from --config and --db.

    A body that takes `fmt: Output` gets --json and --nl as well. The options
    are added after the body's own, where every command lists them.
    """
    sig = inspect.signature(body)
    hints = typing.get_type_hints(body, include_extras=True)  # typer reads the options from Annotated
    wants_fmt = "fmt" in sig.parameters
    own = [p.replace(annotation=hints[n]) for n, p in sig.parameters.items() if n not in ("settings", "fmt")]
    added: list[tuple[str, object, object]] = [("config_path", ConfigOpt, None), ("db", DbOpt, None)]
    if wants_fmt:
        added = [("json_", JsonOpt, False), ("nl", NlOpt, False), *added]
    tail = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in added]

    @functools.wraps(body)
    def command(*args: Any, config_path: Path | None = None, db: Path | None = None, **kwargs: Any) -> None:
        if wants_fmt:
            kwargs["fmt"] = output(bool(kwargs.pop("json_", False)), bool(kwargs.pop("nl", False)))
        body(*args, settings=settings_for(config_path, db), **kwargs)

    params = own + tail
    command.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command


def serve(settings: Settings, call: Callable[[Service], Awaitable[T]], *, create: bool = False) -> T:
    """Run one service call over the list, opened for this command only."""
    from smtpguard.service import open_service

    async def main() -> T:
        async with open_service(settings, create=create) as service:
            return await call(service)

    return run(main)
