"""Accounts for auth = "local": user add, remove, list."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from smtpguard.cli.app import Command, user_app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, NlOpt, Output, fail, output, run, settings_for
from smtpguard.cli.output import Rows
from smtpguard.inputs import check_sender_address, check_user_name
from smtpguard.service import User, open_service
from smtpguard.suppression.store.base import WEB_ROLES

NameArg = Annotated[str, typer.Argument(help="Login name.", metavar="NAME")]


@user_app.command("add", cls=Command)
def user_add(
    name: NameArg,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    address: Annotated[
        list[str] | None,
        typer.Option(
            "--address",
            metavar="ADDRESS",
            help="A sender address this user may use in MAIL FROM (repeat for several; replaces the list). "
            "For an existing user, --address alone keeps the password.",
        ),
    ] = None,
    any_sender: Annotated[bool, typer.Option("--any-sender", help="Remove the sender binding.")] = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
    web: Annotated[bool, typer.Option("--web", help="The account may sign in to the web page (role viewer).")] = False,
    role: Annotated[
        str | None,
        typer.Option(
            "--role", metavar="ROLE", help="Its role on the web page: viewer, editor or admin (implies --web)."
        ),
    ] = None,
) -> None:
    """Create an account (or change its password); the password is prompted."""
    settings = settings_for(config_path, db)
    check_user_name(name)
    web_role = role if role is not None else ("viewer" if web else None)
    if web_role is not None and web_role not in WEB_ROLES:
        fail(f"--role must be one of {', '.join(WEB_ROLES)}, got {web_role!r}")
    addresses = [check_sender_address(a) for a in address or []]
    binding = bool(addresses) or any_sender

    async def exists() -> bool:
        async with open_service(settings) as service:
            return await service.has_user(name)

    async def bound() -> bool:
        async with open_service(settings) as service:
            return any(u.addresses for u in await service.users() if u.name == name)

    # The app-only credential lets its user send as anyone, so the relay only sends
    # for them with a sender binding (553 at MAIL otherwise): say so now, not then.
    app_only = settings.server.auth == "local" and settings.credentials.kind_for(name, settings.oauth) == "oauth-app"
    if app_only and (any_sender or not (bool(addresses) or run(bound))):
        fail(
            f"{name} sends with the app-only Microsoft 365 credential ([credentials]), which could send as anyone: "
            f"give the addresses {name} may send from with --address (the relay refuses their mail otherwise)"
        )

    password = ""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not (binding and run(exists)):
        password = typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if not password and not binding:
        fail("the password is empty")

    async def main() -> bool:
        async with open_service(settings) as service:
            created = await service.set_user(name, password) if password else False
            if binding:
                await service.set_user_addresses(name, addresses)
            if web_role is not None:
                await service.set_web_role(name, web_role)
            return created

    created = run(main)
    if password:
        typer.echo(f"{'created' if created else 'password changed for'} user {name}")
    if binding:
        typer.echo(f"user {name} may send from: {', '.join(addresses) or 'any address'}")
    if web_role is not None:
        typer.echo(f"{name} may sign in to the web page as {web_role}")


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
    return f"{u.name}\t{u.created}" + (f"\t{','.join(u.addresses)}" if u.addresses else "")


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
