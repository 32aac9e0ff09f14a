"""`smtpguard config check` for OAuth upstreams: a real token refresh, then an XOAUTH2 login.

Each `[oauth.NAME]` account: force a refresh at the identity provider (the stored refresh
token is rotated as the relay would), then, when the relay uses local accounts, log in
to the upstream with XOAUTH2 as the account's mailbox. Tokens are never printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from smtpguard.config import Settings
from smtpguard.oauth.broker import TokenBroker
from smtpguard.oauth.errors import OAuthError, SignInRequired
from smtpguard.oauth.settings import AccountSettings
from smtpguard.oauth.tokens import TokenStore
from smtpguard.smtp import credentials
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, connect


async def oauth_probe(settings: Settings, say: Callable[[str], None]) -> bool:
    """True when every configured account refreshed and (where tried) logged in."""
    if not settings.oauth.accounts:
        return True
    broker = TokenBroker(TokenStore(settings.oauth_state_dir))
    results = [await _probe_one(settings, broker, found, say) for found in settings.oauth.accounts]
    return all(results)


async def _probe_one(
    settings: Settings, broker: TokenBroker, found: AccountSettings, say: Callable[[str], None]
) -> bool:
    where = f"oauth {found.name} ({found.provider}, {found.mode})"
    try:
        account = found.account()
        token = await broker.token(account, force_refresh=True)
    except ValueError as exc:
        say(f"{where}: FAILED: {exc}")
        return False
    except OAuthError as exc:
        hint = f"; run: {exc.command}" if isinstance(exc, SignInRequired) else ""
        say(f"{where}: token refresh FAILED: {exc.detail}{hint}")
        return False
    minutes = max(0, int((token.expires_at - time.time()) // 60))
    say(f"{where}: token refresh: ok (valid {minutes} min)")
    if settings.server.auth != "local":
        return True
    if not account.mailbox:
        say(f"{where}: XOAUTH2 login not tried: set mailbox = a sending address in [oauth.{found.name}] to try one")
        return True
    try:
        up = await connect(settings.upstream, settings.server.hostname)
    except UpstreamUnavailable as exc:
        say(f"{where}: XOAUTH2 login: upstream unreachable: {exc}")
        return False
    try:
        cred = credentials.Credential(settings.upstream, found.mode, account.mailbox, account)
        refused = await credentials.log_in(up, cred, settings, broker)
    finally:
        await close_quietly(up)
    if refused is not None:
        say(f"{where}: XOAUTH2 login as {account.mailbox}: FAILED: {refused}")
        return False
    say(f"{where}: XOAUTH2 login as {account.mailbox}: ok")
    return True
