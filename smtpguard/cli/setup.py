"""Creating the list and changing its matching rules: init, rules show|set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import fail, on_list, run
from smtpguard.config import Settings
from smtpguard.suppression.addresses import MatchRules

rules_app = typer.Typer(
    help="The list's matching rules (kept with the list).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(rules_app, name="rules")


@app.command(cls=Command)
@on_list
def init(settings: Settings) -> None:
    """Create an empty list with the configuration's [matching] rules (run it as the service user)."""
    from smtpguard.suppression.store import open_store

    path = settings.store.path
    if path.exists():
        fail(f"store {path}: a list is there already; nothing changed (`smtpguard rules set` changes its rules)")

    async def main() -> None:
        store = await open_store(path, settings.matching)
        await store.close()

    run(main)
    typer.echo(f"created an empty list at {path} ({settings.matching.describe()})")
    warn_if_not_the_folders_owner(path)


def warn_if_not_the_folders_owner(path: Path) -> None:
    """root creating the list in the service user's folder: the service could not write it."""
    import os

    from smtpguard.runtime.preflight import user_name

    owner = path.resolve().parent.stat().st_uid
    if owner != os.geteuid():
        who = user_name(owner)
        typer.echo(
            f"warning: {path} belongs to {user_name(os.geteuid())}, its folder to {who}: a relay running as {who}"
            f" could not write it. Fix: chown {who}: {path} (or run smtpguard as {who}: sudo -u {who} smtpguard …)",
            err=True,
        )


@rules_app.command("show", cls=Command)
@on_list
def rules_show(settings: Settings) -> None:
    """The list's own matching rules (they, not the configuration's [matching], apply)."""
    from smtpguard.suppression.store import open_store

    async def main() -> MatchRules:
        store = await open_store(settings.store.path, settings.matching, create=False)
        try:
            return await store.rules()
        finally:
            await store.close()

    rules = run(main)
    typer.echo(f"ignore_subaddress = {str(rules.ignore_subaddress).lower()}")
    typer.echo(f"gmail_dots = {str(rules.gmail_dots).lower()}")
    if rules != settings.matching:
        typer.echo(f"(the configuration's [matching] differs: {settings.matching.describe()})", err=True)


@rules_app.command("set", cls=Command)
@on_list
def rules_set(
    settings: Settings,
    ignore_subaddress: Annotated[
        bool | None,
        typer.Option(
            "--ignore-subaddress/--keep-subaddress", help="jane+news@x.com counts as jane@x.com.", show_default=False
        ),
    ] = None,
    gmail_dots: Annotated[
        bool | None,
        typer.Option(
            "--gmail-dots/--no-gmail-dots", help="j.ane@gmail.com counts as jane@gmail.com.", show_default=False
        ),
    ] = None,
    from_config: Annotated[
        bool, typer.Option("--from-config", help="Take the configuration's [matching] rules.")
    ] = False,
) -> None:
    """Change the list's matching rules and re-key its entries (a running relay follows within a second)."""
    from dataclasses import replace

    from smtpguard.suppression.rules import change_rules
    from smtpguard.suppression.store import open_store

    if not from_config and ignore_subaddress is None and gmail_dots is None:
        fail(
            "say which rule to change: --ignore-subaddress/--keep-subaddress,"
            " --gmail-dots/--no-gmail-dots or --from-config"
        )

    async def main() -> tuple[MatchRules, int]:
        store = await open_store(settings.store.path, settings.matching, create=False)
        try:
            new = settings.matching if from_config else await store.rules()
            if ignore_subaddress is not None:
                new = replace(new, ignore_subaddress=ignore_subaddress)
            if gmail_dots is not None:
                new = replace(new, gmail_dots=gmail_dots)
            if new == await store.rules():
                return new, -1
            return new, await change_rules(store, new)
        finally:
            await store.close()

    new, moved = run(main)
    if moved < 0:
        typer.echo(f"unchanged: the list already matches with {new.describe()}")
        return
    typer.echo(f"rules now {new.describe()}; {moved:,} {'entry' if moved == 1 else 'entries'} re-keyed")
