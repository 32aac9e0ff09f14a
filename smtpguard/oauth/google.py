"""Google tokens for XOAUTH2, hand-rolled: authorization code + PKCE on a desktop-app client, then refresh.

Google's device flow refuses Gmail scopes, so sign-in is the loopback redirect (or the
pasted final redirect address on a headless server). MSAL is Entra-shaped; this is
plain RFC 6749 + RFC 7636 over the same `requests` client MSAL already brings (one
HTTP stack, one set of network errors to map, `verify` pinned per request).
Stored (encrypted): {"refresh_token", "access_token", "expires_at"}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from smtpguard.oauth.account import GOOGLE_SCOPE, OAuthAccount, Token, jwt_claims
from smtpguard.oauth.errors import AuthorizationRefused, ProviderUnavailable, SignInRequired, calling_provider, refusal
from smtpguard.oauth.http import PinnedHTTP
from smtpguard.oauth.tokens import TokenStore


@dataclass(frozen=True)
class PendingSignIn:
    url: str  # open this in a browser
    redirect_uri: str
    state: str
    verifier: str

    def __repr__(self) -> str:
        return f"PendingSignIn(redirect_uri={self.redirect_uri!r})"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class GoogleAuth:
    def __init__(self, account: OAuthAccount, store: TokenStore, http: PinnedHTTP | None = None) -> None:
        self.account = account
        self.store = store
        self.http = http or PinnedHTTP(account.ca_file, loopback_only=account.loopback_only)

    def start(self, redirect_uri: str) -> PendingSignIn:
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        query = {
            "client_id": self.account.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": f"{GOOGLE_SCOPE} openid email",
            "state": state,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
            "code_challenge_method": "S256",
            "access_type": "offline",  # a refresh token
            "prompt": "consent",  # ... again on a second sign-in, too
        }
        if self.account.mailbox:
            query["login_hint"] = self.account.mailbox
        return PendingSignIn(f"{self.account.auth_url}?{urlencode(query)}", redirect_uri, state, verifier)

    def finish(self, pending: PendingSignIn, params: Mapping[str, str]) -> str:
        """`params`: the redirect's query. Stores the tokens; returns who signed in."""
        name = self.account.name
        if "error" in params:
            raise AuthorizationRefused(name, f"sign-in refused ({params['error']})")
        if not secrets.compare_digest(params.get("state", ""), pending.state):
            raise AuthorizationRefused(name, "sign-in answer does not match this sign-in (state)")
        result = self._post(
            grant_type="authorization_code",
            code=params.get("code", ""),
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.verifier,
        )
        if "refresh_token" not in result:
            raise AuthorizationRefused(name, "Google returned no refresh token (access_type=offline refused)")
        who = str(jwt_claims(str(result.get("id_token", ""))).get("email", ""))
        if self.account.mailbox and who.lower() != self.account.mailbox.lower():
            raise AuthorizationRefused(name, f"signed in as {who or 'unknown'}, not {self.account.mailbox}")
        self._store(result, refresh_token=str(result["refresh_token"]))
        return who

    def token(self, force_refresh: bool = False) -> Token:
        blob = self.store.read(self.account.name)
        if blob is None:
            raise SignInRequired(self.account.name, "not signed in")
        saved: dict[str, Any] = json.loads(blob)
        current = Token(str(saved.get("access_token", "")), float(saved.get("expires_at", 0)))
        if current.access_token and current.fresh() and not force_refresh:
            return current
        result = self._post(grant_type="refresh_token", refresh_token=str(saved["refresh_token"]))
        # Google rarely rotates; when it does, the new refresh token replaces the old one.
        return self._store(result, refresh_token=str(result.get("refresh_token") or saved["refresh_token"]))

    def _post(self, **form: str) -> dict[str, Any]:
        form["client_id"] = self.account.client_id
        if self.account.client_secret:  # desktop clients: documented as not confidential
            form["client_secret"] = self.account.client_secret
        with calling_provider(self.account.name):
            response = self.http.post(self.account.token_url, data=form)
        if response.status_code >= 500:
            raise ProviderUnavailable(self.account.name, f"identity provider failing (HTTP {response.status_code})")
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            detail = f"identity provider answered HTTP {response.status_code}"
            raise ProviderUnavailable(self.account.name, detail) from None
        if "access_token" not in result:
            raise refusal(self.account.name, result)
        return result

    def _store(self, result: Mapping[str, Any], refresh_token: str) -> Token:
        token = Token(str(result["access_token"]), time.time() + float(result.get("expires_in", 0)))
        saved = {"refresh_token": refresh_token, "access_token": token.access_token, "expires_at": token.expires_at}
        self.store.write(self.account.name, json.dumps(saved).encode("utf-8"))
        return token
