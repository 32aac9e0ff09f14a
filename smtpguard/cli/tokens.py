"""Bearer tokens for the HTTP API: token add, list, remove."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from smtpguard.cli.app import Command, token_app
from smtpguard.cli.options import Output, fail, on_list, run
from smtpguard.cli.output import Rows
from smtpguard.config import Settings
from smtpguard.inputs import check_user_name
from smtpguard.suppression.store import Token, connect

NameArg = Annotated[str, typer.Argument(help="A name for the token (who or what uses it).", metavar="NAME")]


@token_app.command("add", cls=Command)
@on_list
def token_add(
    settings: Settings,
    name: NameArg,
    scope: Annotated[str, typer.Option("--scope", help="read (GET only) or write.")] = "read",
) -> None:
    """Create a token; it is shown once, only its SHA-256 is kept."""
    from smtpguard.http.auth import create_token

    check_user_name(name)
    if scope not in ("read", "write"):
        fail(f"--scope must be read or write, got {scope!r}")
    chosen: Literal["read", "write"] = "write" if scope == "write" else "read"

    async def main() -> str | None:
        store = await connect(settings, create=True)
        try:
            return await create_token(store, name, chosen)
        finally:
            await store.close()

    token = run(main)
    if token is None:
        fail(f"a token named {name!r} exists; remove it first (smtpguard token remove {name})")
    typer.echo(token)
    typer.echo(f"token {name} ({chosen}) created; copy it now, it is not shown again", err=True)


@token_app.command("remove", cls=Command)
@on_list
def token_remove(settings: Settings, name: NameArg) -> None:
    """Revoke a token (at once, also for a running relay)."""

    async def main() -> bool:
        store = await connect(settings, create=False)
        try:
            return await store.remove_token(name)
        finally:
            await store.close()

    if not run(main):
        fail(f"no token {name!r}", code=1)
    typer.echo(f"removed token {name}")


def listed(t: Token) -> dict[str, str]:
    """A token as listed: never its hash."""
    return {"name": t.name, "scope": t.scope, "created": t.created}


def token_line(t: dict[str, str]) -> str:
    return f"{t['name']}\t{t['scope']}\t{t['created']}"


@token_app.command("list", cls=Command)
@on_list
def token_list(settings: Settings, fmt: Output) -> None:
    """List the tokens (names, scopes and creation times; never the tokens)."""

    async def main() -> list[Token]:
        store = await connect(settings, create=False)
        try:
            return await store.tokens()
        finally:
            await store.close()

    tokens = run(main)
    with Rows(fmt, token_line) as rows:
        for t in tokens:
            rows.add(listed(t))
    if not tokens and fmt is Output.text:
        typer.echo("no tokens", err=True)
