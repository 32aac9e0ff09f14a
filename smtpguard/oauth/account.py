"""What the OAuth code needs to know about one upstream account (built from config by the caller)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"  # delegated, with offline_access (MSAL adds it)
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"  # client credentials, SMTP.SendAsApp
GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"

REFRESH_MARGIN = 300.0  # seconds: a token with less left is refreshed first (MSAL's own rule too)


@dataclass(frozen=True, slots=True)
class AccountIdentity:
    """One upstream identity, as configured (`[oauth.NAME]`) and as the OAuth code uses it.

    `name` keys the token store (the local user, or e.g. "relay" for the app-only
    credential); `mailbox` is the address the provider must see (XOAUTH2 `user=`).
    """

    name: str
    provider: Literal["microsoft", "google"]
    client_id: str
    mailbox: str = ""
    mode: Literal["oauth", "oauth-app"] = "oauth"
    tenant: str = "organizations"
    authority: str | None = None  # Microsoft: overrides https://login.microsoftonline.com/<tenant>
    auth_url: str = GOOGLE_AUTH_URL
    token_url: str = GOOGLE_TOKEN_URL
    ca_file: Path | None = None  # trust for the identity provider's TLS (tests, TLS-inspecting proxies)

    def identity(self) -> dict[str, Any]:
        """The identity's fields by name, to build the other kind from (`OAuthAccount(**identity())`)."""
        return {f.name: getattr(self, f.name) for f in fields(AccountIdentity)}

    @property
    def microsoft_authority(self) -> str:
        return self.authority or f"{MICROSOFT_AUTHORITY}/{self.tenant}"


@dataclass(frozen=True, slots=True)
class OAuthAccount(AccountIdentity):
    """What the OAuth code needs: the identity, with the client secret read from its file."""

    client_secret: str | None = None  # oauth-app; Google desktop clients' "not secret" secret
    loopback_only: bool = False  # tests: refuse every host but this machine


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_at: float  # time.time() seconds

    def fresh(self, margin: float = REFRESH_MARGIN) -> bool:
        return self.expires_at - time.time() > margin

    def __repr__(self) -> str:  # never print the token itself
        return f"Token(expires_at={self.expires_at:.0f})"


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of an ID token received straight from the token endpoint over TLS.

    OpenID Connect lets a client skip the signature check in exactly that case; we only
    read who signed in, to refuse a sign-in as someone else than the configured mailbox.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
