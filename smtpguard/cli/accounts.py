"""`smtpguard account login|status|list|logout|setup`: thin front ends over smtpguard.oauth.login/setup.

The accounts themselves are `[oauth.NAME]` in the configuration; the tokens go to the
encrypted store in `<[oauth] state_dir>/oauth/`. No token is ever printed.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Annotated

import typer

from smtpguard.cli.app import Command, app
from smtpguard.cli.options import ConfigOpt, DbOpt, JsonOpt, NlOpt, Output, fail, output, settings_for
from smtpguard.cli.output import Rows
from smtpguard.config import Settings

if TYPE_CHECKING:
    from smtpguard.oauth.account import OAuthAccount
    from smtpguard.oauth.tokens import TokenStore

account_app = typer.Typer(
    help="Upstream OAuth sign-ins (Microsoft 365, Google Workspace) held by the relay.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(account_app, name="account")

NameArg = Annotated[str, typer.Argument(help="The account: [oauth.NAME] in the configuration.", metavar="NAME")]


def _account_settings(settings: Settings, name: str, provider: str | None) -> tuple[OAuthAccount, TokenStore]:
    """The OAuth account `name` and the token store, or a one-line failure."""
    from smtpguard.oauth.tokens import TokenStore

    found = settings.oauth.get(name)
    if found is None:
        known = ", ".join(a.name for a in settings.oauth.accounts) or "none"
        fail(
            f"no [oauth.{name}] in {settings.source or 'the configuration'} (accounts: {known}); "
            "add it first, see: smtpguard account setup microsoft|google"
        )
    if provider is not None and provider != found.provider:
        fail(f"[oauth.{name}] is a {found.provider} account, not {provider}")
    try:
        account = found.account()
    except ValueError as exc:
        fail(str(exc))
    return account, TokenStore(settings.oauth_state_dir)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@account_app.command("login", cls=Command)
def account_login(
    name: NameArg,
    provider: Annotated[
        str | None, typer.Option(help="microsoft or google (checked against the configuration).", metavar="PROVIDER")
    ] = None,
    flow: Annotated[
        str,
        typer.Option(
            help="device (Microsoft), browser (loopback redirect with PKCE) or paste (headless).", metavar="FLOW"
        ),
    ] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the sign-in.", metavar="SECONDS")] = 600.0,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Sign in to the mailbox of [oauth.NAME]; the tokens are stored encrypted, never shown."""
    from smtpguard.oauth.errors import OAuthError
    from smtpguard.oauth.login import Prompter, sign_in

    if provider not in (None, "microsoft", "google"):
        fail(f"--provider must be microsoft or google, got {provider!r}")
    settings = settings_for(config_path, db)
    account, store = _account_settings(settings, name, provider)
    chosen = flow or ("device" if account.provider == "microsoft" else "browser")
    if chosen not in ("device", "browser", "paste"):
        fail(f"--flow must be device, browser or paste, got {flow!r}")
    io = Prompter(say=typer.echo, ask=lambda prompt: typer.prompt(prompt, prompt_suffix=""))
    try:
        who = sign_in(account, store, chosen, io, timeout=timeout)  # type: ignore[arg-type]
    except (OAuthError, ValueError, TimeoutError) as exc:
        fail(f"sign-in failed: {exc}")
    if account.mode == "oauth-app":
        typer.echo(f"app credential accepted: {name} ({who}); nothing stored, the secret stays in its file")
    else:
        typer.echo(f"signed in: {name} as {who}; tokens saved encrypted in {store.dir}")


@account_app.command("status", cls=Command)
def account_status(
    name: NameArg, json_: JsonOpt = False, nl: NlOpt = False, config_path: ConfigOpt = None, db: DbOpt = None
) -> None:
    """What is stored for [oauth.NAME] (no network call)."""
    _print_status(settings_for(config_path, db), [name], output(json_, nl))


@account_app.command("list", cls=Command)
def account_list(json_: JsonOpt = False, nl: NlOpt = False, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Every [oauth.NAME] account and whether it is signed in."""
    settings = settings_for(config_path, db)
    names = [a.name for a in settings.oauth.accounts]
    if not names and not (json_ or nl):
        typer.echo("no [oauth.NAME] accounts in the configuration", err=True)
    _print_status(settings, names, output(json_, nl))


def _print_status(settings: Settings, names: list[str], fmt: Output) -> None:
    from smtpguard.oauth.errors import OAuthError
    from smtpguard.oauth.login import AccountStatus, status

    def line(s: AccountStatus) -> str:
        state = "signed in" if s.signed_in else "NOT signed in"
        left = f", access token valid until {_when(s.access_expires_at)}" if s.access_expires_at else ""
        return f"{s.name}\t{state}\t{s.who or '-'}{left}\tsaved {_when(s.saved_at)}"

    found = []
    for name in names:
        account, store = _account_settings(settings, name, None)
        try:
            found.append(status(account, store))
        except OAuthError as exc:
            fail(str(exc))
    with Rows[AccountStatus](fmt, line) as rows:
        for s in found:
            rows.add(s)
    if fmt is Output.text and any(not s.signed_in for s in found):
        typer.echo(f"sign in with: smtpguard account login NAME (now {_when(time.time())})", err=True)


@account_app.command("logout", cls=Command)
def account_logout(name: NameArg, config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Forget the stored tokens of [oauth.NAME] (revoke the grant at the provider too if needed)."""
    from smtpguard.oauth.login import sign_out

    account, store = _account_settings(settings_for(config_path, db), name, None)
    if not sign_out(account, store):
        fail(f"no tokens stored for {name}", code=1)
    typer.echo(f"signed out: {name} (tokens deleted)")


@account_app.command("setup", cls=Command)
def account_setup(
    provider: Annotated[str, typer.Argument(help="microsoft or google.", metavar="PROVIDER")],
    app_only: Annotated[
        bool, typer.Option("--app-only", help="Microsoft app-only (oauth-app): one credential, no user sign-in.")
    ] = False,
) -> None:
    """Print the one-time steps at the provider (app registration, tenant settings)."""
    from smtpguard.oauth.setup import setup_steps

    if app_only and provider != "microsoft":
        fail("--app-only exists for Microsoft 365 only")
    try:
        typer.echo(setup_steps(provider, app_only), nl=False)
    except ValueError as exc:
        fail(str(exc))
