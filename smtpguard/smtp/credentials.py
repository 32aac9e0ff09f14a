"""Which upstream login a local user's mail goes out with, the login itself, and sender binding.

A `Credential` is also the key of pooled upstream sessions: a session logged in with
XOAUTH2 as alice is only ever handed to another of alice's connections, never to bob's.
With `oauth-app` the provider no longer knows who sends (one app credential, any
mailbox in scope), so XOAUTH2 `user=` is the sender, and the sender must be one of the
user's own addresses (`smtpguard user add NAME --address A`): checked at MAIL, before
anything reaches the upstream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from smtpguard import replies
from smtpguard.config import ConfigError, Settings, UpstreamSettings
from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.broker import TokenBroker
from smtpguard.oauth.errors import AuthorizationRefused, ProviderUnavailable, SignInRequired, StoreError
from smtpguard.oauth.tokens import TokenStore
from smtpguard.smtp.context import RelayContext
from smtpguard.smtp.upstream import describe
from smtpguard.suppression.store import Store

log = logging.getLogger("smtpguard.relay")

Kind = Literal["none", "password", "oauth", "oauth-app"]


@dataclass(frozen=True)
class Credential:
    """One upstream identity; equal credentials may share pooled upstream sessions."""

    upstream: UpstreamSettings
    kind: Kind
    user: str = ""  # password: the login; oauth/oauth-app: XOAUTH2 user= (the mailbox)
    account: OAuthAccount | None = None


def broker(ctx: RelayContext) -> TokenBroker:
    """The relay's token broker for the configured state directory (one per directory, kept)."""
    state = ctx.settings.oauth_state_dir
    if state not in ctx.brokers:
        ctx.brokers[state] = TokenBroker(TokenStore(state))
    return ctx.brokers[state]


def choose(settings: Settings, user: str, sender: str) -> Credential | str:
    """The credential for `user` sending as `sender` (auth local/none), or a reply text."""
    up = settings.upstream
    kind = settings.credentials.kind_for(user, settings.oauth) if user else "password"
    lang = settings.policy.language
    if kind == "password":
        return Credential(up, "password", up.username) if up.username else Credential(up, "none")
    name = user if kind == "oauth" else settings.credentials.app_account
    found = settings.oauth.get(name)
    if found is None or found.mode != kind:
        return replies.NO_OAUTH_ACCOUNT.say(lang, user=user)
    try:
        account = found.account()
    except ValueError as exc:  # the client secret file cannot be read
        log.error("oauth account %s: %s", name, exc)
        return replies.INTERNAL.say(lang)
    return Credential(up, kind, account.mailbox if kind == "oauth" else sender, account)


async def sender_refusal(settings: Settings, store: Store, user: str, sender: str) -> str | None:
    """The 553 for a local user sending as someone else; None when the sender is theirs."""
    if settings.server.auth != "local" or not user:
        return None
    allowed = await store.user_addresses(user)
    lang = settings.policy.language
    if not allowed:
        if settings.credentials.kind_for(user, settings.oauth) == "oauth-app":
            return replies.NO_SENDER_SET.say(lang, user=user)  # the upstream would let them be anyone
        return None  # no binding configured: any sender, as before
    if sender.casefold() in {a.casefold() for a in allowed}:
        return None
    log.warning("sender refused: user=%s from=<%s> (allowed: %s)", user, sender, ", ".join(allowed))
    return replies.NOT_YOUR_SENDER.say(lang, address=f"<{sender}>", allowed=", ".join(allowed))


async def log_in(up: aiosmtplib.SMTP, cred: Credential, settings: Settings, broker: TokenBroker) -> str | None:
    """Log the new upstream session in with `cred`; None on success, else the client's reply."""
    lang = settings.policy.language
    if cred.kind == "none":
        return None
    try:
        if cred.account is None:
            await up.login(cred.user, settings.upstream_password())
        else:
            await _xoauth2(up, cred.user, cred.account, broker)
        return None
    except SignInRequired as exc:
        log.warning("upstream sign-in for %s needs a person: %s", exc.account, exc.detail)
        return replies.SIGN_IN_NEEDED.say(lang, command=exc.command)
    except (AuthorizationRefused, StoreError) as exc:
        log.error("upstream sign-in for %s refused: %s", exc.account, exc.detail)
        return replies.OAUTH_REFUSED.say(lang, detail=exc.detail, command=f"smtpguard account login {exc.account}")
    except ProviderUnavailable as exc:
        log.warning("identity provider unavailable for %s: %s", exc.account, exc.detail)
        return replies.IDP_DOWN.say(lang)
    except aiosmtplib.SMTPResponseException as exc:
        log.error("upstream login as %s (%s) refused: %s", cred.user, cred.kind, describe(exc))
        if 400 <= exc.code < 500 or cred.account is None:
            # A busy or throttling upstream (Microsoft: 30 messages a minute per mailbox)
            # is relayed with its own words; a 4xx stays a 4xx.
            return replies.upstream_error(exc) if exc.code < 500 else replies.UPSTREAM_DOWN.say(lang)
        command = f"smtpguard account login {cred.account.name}"
        answer = " ".join(f"{exc.code} {exc.message}".split())  # one line
        return replies.UPSTREAM_REFUSED_TOKEN.say(lang, mailbox=cred.user, answer=answer, command=command)
    except (aiosmtplib.SMTPException, OSError, ConfigError) as exc:
        log.error("upstream login as %s failed: %s", cred.user, describe(exc))
        return replies.UPSTREAM_DOWN.say(lang)


async def _xoauth2(up: aiosmtplib.SMTP, user: str, account: OAuthAccount, broker: TokenBroker) -> None:
    """XOAUTH2 with a token refreshed when it has under 5 minutes left; after a 535 with a
    token that looked valid (revoked, or its expiry misreported), one forced refresh, one retry."""
    token = await broker.access_token(account)
    try:
        await up.auth_xoauth2(user, token)
    except aiosmtplib.SMTPAuthenticationError as exc:
        if exc.code != 535:
            raise
        log.info("upstream refused the token for %s (%s); refreshing once", user, describe(exc))
        await up.auth_xoauth2(user, await broker.access_token(account, force_refresh=True))
