"""Accounts for auth = "local": user add, remove, list."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from smtpguard.cli.app import Command, user_app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, NlOpt, Output, fail, output, run, settings_for
from smtpguard.cli.output import Rows
from smtpguard.service import User, check_user_name, open_service

NameArg = Annotated[str, typer.Argument(help="Login name.", metavar="NAME")]


@user_app.command("add", cls=Command)
def user_add(
    name: NameArg,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Create an account (or change its password); the password is prompted."""
    settings = settings_for(config_path, db)
    check_user_name(name)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if not password:
        fail("the password is empty")

    async def main() -> bool:
        async with open_service(settings) as service:
            return await service.set_user(name, password)

    created = run(main)
    typer.echo(f"{'created' if created else 'password changed for'} user {name}")


@user_app.command("remove", cls=Command)
def user_remove(name: NameArg, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Delete an account."""
    settings = settings_for(config_path, db)

    async def main() -> bool:
        async with open_service(settings, create=False) as service:
            return await service.remove_user(name)

    if not run(main):
        fail(f"no user {name!r}", code=1)
    typer.echo(f"removed user {name}")


def user_line(u: User) -> str:
    return f"{u.name}\t{u.created}"


@user_app.command("list", cls=Command)
def user_list(json_: JsonOpt = False, nl: NlOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """List the accounts."""
    fmt = output(json_, nl)
    settings = settings_for(config_path, db)

    async def main() -> list[User]:
        async with open_service(settings, create=False) as service:
            return await service.users()

    users = run(main)
    with Rows[User](fmt, user_line) as rows:
        for u in users:
            rows.add(u)
    if not users and fmt is Output.text:
        typer.echo("no users", err=True)
