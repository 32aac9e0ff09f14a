"""What `smtpguard account login|status|logout` do, apart from the terminal (passed in as `Prompter`).

Flows: `device` (Microsoft only: Google's device flow refuses Gmail scopes), `browser`
(loopback redirect caught on 127.0.0.1, PKCE), `paste` (headless: the user opens the
address anywhere and pastes back the address the browser ended on; nothing listens).
"""

from __future__ import annotations

import json
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.errors import AuthorizationRefused
from smtpguard.oauth.google import GoogleAuth
from smtpguard.oauth.loopback import RedirectCatcher, parse_redirect
from smtpguard.oauth.microsoft import MicrosoftApp, MicrosoftDelegated
from smtpguard.oauth.tokens import TokenStore

Flow = Literal["device", "browser", "paste"]
Finish = Callable[[Mapping[str, str]], str]


@dataclass
class Prompter:
    say: Callable[[str], None] = print
    ask: Callable[[str], str] = input
    open_browser: Callable[[str], object] = field(default=webbrowser.open)


def _start(account: OAuthAccount, store: TokenStore, redirect_uri: str) -> tuple[str, Finish]:
    """The sign-in address to open, and what to do with the redirect's query."""
    if account.provider == "google":
        google = GoogleAuth(account, store)
        pending = google.start(redirect_uri)
        return pending.url, lambda params: google.finish(pending, params)
    microsoft = MicrosoftDelegated(account, store)
    flow = microsoft.start_browser_flow(redirect_uri)
    return str(flow["auth_uri"]), lambda params: microsoft.finish_browser_flow(flow, params)


def _loopback_host(account: OAuthAccount) -> str:
    # What each provider's app registration holds: Entra `http://localhost`, Google desktop 127.0.0.1.
    return "127.0.0.1" if account.provider == "google" else "localhost"


def _device_sign_in(account: OAuthAccount, store: TokenStore, io: Prompter, timeout: float) -> str:
    microsoft = MicrosoftDelegated(account, store)
    device = microsoft.start_device_flow()
    io.say(str(device["message"]))
    device["expires_at"] = min(float(device["expires_at"]), time.time() + timeout)
    return microsoft.finish_device_flow(device)


def sign_in(account: OAuthAccount, store: TokenStore, flow: Flow, io: Prompter, timeout: float = 600.0) -> str:
    """Runs one sign-in, stores the tokens (encrypted), returns who signed in. Blocks: run in a thread."""
    if account.mode == "oauth-app":
        MicrosoftApp(account).token()  # proves the secret works; nothing to store
        return f"app {account.client_id}"
    if flow == "device":
        if account.provider == "google":
            raise ValueError("Google refuses mail scopes in the device flow: use --flow browser or --flow paste")
        try:
            return _device_sign_in(account, store, io, timeout)
        except AuthorizationRefused as exc:  # Conditional Access often blocks exactly this flow
            hint = "if your tenant blocks device code sign-in, use --flow browser"
            raise type(exc)(account.name, f"{exc.detail}; {hint}") from None
    if flow == "browser":
        with RedirectCatcher() as catcher:
            url, finish = _start(account, store, catcher.redirect_uri(_loopback_host(account)))
            io.say(f"Sign in with the browser that opens now, or open:\n{url}")
            io.open_browser(url)
            return finish(catcher.wait(timeout))
    url, finish = _start(account, store, f"http://{_loopback_host(account)}")
    io.say(f"Open this address in any browser and sign in as {account.mailbox or 'the mailbox'}:\n{url}")
    io.say("The browser then fails to load a localhost page: that is expected.")
    return finish(parse_redirect(io.ask("Paste the whole address the browser ended on: ")))


@dataclass(frozen=True)
class AccountStatus:
    name: str
    signed_in: bool  # a refresh token (or the app secret) is there
    who: str  # the mailbox the provider signed in
    access_expires_at: float | None  # of the newest access token held
    saved_at: float | None  # when the tokens were last written (sign-in or refresh)


def _microsoft_cache(cache: Mapping[str, Any]) -> tuple[bool, str, float | None]:
    accounts = list(cache.get("Account", {}).values())
    expiries = [float(at.get("expires_on", 0)) for at in cache.get("AccessToken", {}).values()]
    who = str(accounts[0].get("username", "")) if accounts else ""
    return bool(cache.get("RefreshToken")), who, max(expiries, default=None)


def status(account: OAuthAccount, store: TokenStore) -> AccountStatus:
    """What is stored, without any network call."""
    if account.mode == "oauth-app":
        return AccountStatus(account.name, bool(account.client_secret), f"app {account.client_id}", None, None)
    blob = store.read(account.name)
    if blob is None:
        return AccountStatus(account.name, False, "", None, None)
    saved = json.loads(blob)
    stamp = store.stamp(account.name)
    saved_at = stamp[0] / 1e9 if stamp else None
    if account.provider == "google":
        return AccountStatus(account.name, "refresh_token" in saved, account.mailbox, saved.get("expires_at"), saved_at)
    signed_in, who, expires = _microsoft_cache(saved)
    return AccountStatus(account.name, signed_in, who, expires, saved_at)


def sign_out(account: OAuthAccount, store: TokenStore) -> bool:
    """Forget the stored tokens (the provider keeps its grant: revoke it there too if needed)."""
    return store.delete(account.name)
