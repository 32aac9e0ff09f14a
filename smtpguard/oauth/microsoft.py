"""Microsoft 365 tokens through MSAL: delegated sign-in (device code, browser + PKCE), silent refresh, app-only.

MSAL blocks (HTTP, and device-code polling sleeps): callers run these methods in a
thread. The delegated cache (MSAL's SerializableTokenCache: access, refresh and ID
tokens in plaintext JSON) lives only in memory and in the encrypted store, rewritten
whenever MSAL changed it, so the rotated refresh token always replaces the old one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import msal  # type: ignore[import-untyped]

from smtpguard.oauth.account import MICROSOFT_APP_SCOPE, MICROSOFT_SMTP_SCOPE, OAuthAccount, Token
from smtpguard.oauth.errors import AuthorizationRefused, OAuthError, SignInRequired, calling_provider, refusal
from smtpguard.oauth.http import PinnedHTTP
from smtpguard.oauth.tokens import TokenStore


def _token(name: str, result: Mapping[str, Any] | None) -> Token:
    if result and "access_token" in result:
        return Token(str(result["access_token"]), time.time() + float(result.get("expires_in", 0)))
    raise refusal(name, result)


class MicrosoftDelegated:
    """One user's delegated SMTP.Send sign-in (`mode = "oauth"`)."""

    scopes = [MICROSOFT_SMTP_SCOPE]

    def __init__(self, account: OAuthAccount, store: TokenStore, http: PinnedHTTP | None = None) -> None:
        self.account = account
        self.store = store
        self.http = http or PinnedHTTP(account.ca_file, loopback_only=account.loopback_only)
        self._app: msal.PublicClientApplication | None = None
        self._cache = msal.SerializableTokenCache()
        self._stamp: tuple[int, int] | None = None

    # -- cache <-> store ---------------------------------------------------------------
    def _load(self) -> msal.PublicClientApplication:
        """The MSAL app, its cache reloaded if another process (`account login`) rewrote the file."""
        stamp = self.store.stamp(self.account.name)
        if self._app is None or stamp != self._stamp:
            cache = msal.SerializableTokenCache()
            blob = self.store.read(self.account.name)
            if blob is not None:
                cache.deserialize(blob.decode("utf-8"))
            self._cache, self._stamp = cache, stamp
            with calling_provider(self.account.name):  # the authority's openid-configuration
                self._app = msal.PublicClientApplication(
                    self.account.client_id,
                    authority=self.account.microsoft_authority,
                    instance_discovery=False,
                    http_client=self.http,
                    token_cache=cache,
                )
        return self._app

    def _save(self) -> None:
        if self._cache.has_state_changed:
            self.store.write(self.account.name, self._cache.serialize().encode("utf-8"))
            self._cache.has_state_changed = False
            self._stamp = self.store.stamp(self.account.name)

    def _signed_in(self, result: Mapping[str, Any] | None) -> str:
        """Keep a sign-in only if it is the configured mailbox; returns who signed in."""
        try:
            _token(self.account.name, result)
        except OAuthError:
            self._app = None  # drop whatever MSAL half-cached
            raise
        assert result is not None
        who = str(result.get("id_token_claims", {}).get("preferred_username", ""))
        if self.account.mailbox and who.lower() != self.account.mailbox.lower():
            self._app = None
            detail = f"signed in as {who or 'unknown'}, not {self.account.mailbox}"
            raise AuthorizationRefused(self.account.name, detail)
        self._save()
        return who

    # -- sign-in -----------------------------------------------------------------------
    def start_device_flow(self) -> dict[str, Any]:
        """Returns MSAL's flow; show `flow["message"]` (the code and where to enter it)."""
        with calling_provider(self.account.name):
            flow: dict[str, Any] = self._load().initiate_device_flow(scopes=self.scopes)
        if "user_code" not in flow:
            raise refusal(self.account.name, flow)
        return flow

    def finish_device_flow(self, flow: dict[str, Any]) -> str:
        """Blocks until the user entered the code (or it expired); returns who signed in."""
        with calling_provider(self.account.name):
            result = self._load().acquire_token_by_device_flow(flow)
        return self._signed_in(result)

    def start_browser_flow(self, redirect_uri: str) -> dict[str, Any]:
        """Authorization code + PKCE (S256) and state; open `flow["auth_uri"]` in a browser."""
        # Query mode on purpose: the pasted-address form needs the code in the URL, and PKCE
        # makes a leaked code useless; MSAL's form_post advice is for web apps.
        with calling_provider(self.account.name), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="response_mode='form_post'")
            flow: dict[str, Any] = self._load().initiate_auth_code_flow(
                self.scopes, redirect_uri=redirect_uri, login_hint=self.account.mailbox or None
            )
        return flow

    def finish_browser_flow(self, flow: dict[str, Any], params: Mapping[str, str]) -> str:
        """`params`: the redirect's query (from `RedirectCatcher.wait` or `parse_redirect`)."""
        with calling_provider(self.account.name):
            try:
                result = self._load().acquire_token_by_auth_code_flow(flow, dict(params))
            except ValueError as exc:  # state mismatch or a reused flow
                raise AuthorizationRefused(self.account.name, f"sign-in answer refused ({exc})") from None
        return self._signed_in(result)

    # -- use ---------------------------------------------------------------------------
    def token(self, force_refresh: bool = False) -> Token:
        """A token with more than 5 minutes left, refreshed (and the new refresh token stored) if needed."""
        app = self._load()
        accounts = app.get_accounts(username=self.account.mailbox or None) or app.get_accounts()
        if not accounts:
            raise SignInRequired(self.account.name, "not signed in")
        with calling_provider(self.account.name):
            result = app.acquire_token_silent_with_error(self.scopes, accounts[0], force_refresh=force_refresh)
        self._save()  # even a refused refresh may have changed the cache
        return _token(self.account.name, result)


class MicrosoftApp:
    """App-only SMTP.SendAsApp (`mode = "oauth-app"`): client credentials, nothing stored on disk.

    The client secret is the credential; the access token it buys is kept in memory only.
    """

    scopes = [MICROSOFT_APP_SCOPE]

    def __init__(self, account: OAuthAccount, http: PinnedHTTP | None = None) -> None:
        if not account.client_secret:
            raise ValueError(f"{account.name}: oauth-app needs a client secret")
        self.account = account
        self.http = http or PinnedHTTP(account.ca_file, loopback_only=account.loopback_only)
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: Token | None = None

    def token(self, force_refresh: bool = False) -> Token:
        if self._token and self._token.fresh() and not force_refresh:
            return self._token
        if force_refresh:  # MSAL's own cache would hand back the same token
            self._app = None
        with calling_provider(self.account.name):
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    self.account.client_id,
                    client_credential=self.account.client_secret,
                    authority=self.account.microsoft_authority,
                    instance_discovery=False,
                    http_client=self.http,
                    token_cache=msal.TokenCache(),  # never persisted
                )
            result = self._app.acquire_token_for_client(scopes=self.scopes)
        self._token = _token(self.account.name, result)
        return self._token
