"""What can go wrong while getting a token, in the two kinds the relay answers differently.

- `AuthorizationRefused` (permanent until a person acts): the identity provider said no.
  `SignInRequired` is the common case: the refresh token is revoked, expired or missing,
  and the user must run `smtpguard account login USER` again. The relay answers a 4xx
  naming that command, so the message stays queued in the client while the user acts.
- `ProviderUnavailable` (transient): the identity provider could not be reached or
  answered 5xx. The relay answers 451; nothing is wrong with the account.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import msal  # type: ignore[import-untyped]
import requests


class OAuthError(Exception):
    """Base: one line a person can read, never a token."""

    def __init__(self, account: str, detail: str) -> None:
        super().__init__(f"{account}: {detail}")
        self.account = account
        self.detail = detail


class AuthorizationRefused(OAuthError):
    """The identity provider refused: a person (user or admin) must act."""


class SignInRequired(AuthorizationRefused):
    """No usable refresh token: `smtpguard account login <account>` again."""

    @property
    def command(self) -> str:
        return f"smtpguard account login {self.account}"


class ProviderUnavailable(OAuthError):
    """The identity provider is unreachable or failing: try again later (451)."""


class StoreError(OAuthError):
    """The token store on disk cannot be used (bad key file, unreadable directory)."""


# -- turning provider answers into the tree above ---------------------------------------
_TRANSIENT = frozenset({"temporarily_unavailable", "server_error"})
_APP_REFUSED = frozenset({"invalid_client", "unauthorized_client", "unsupported_grant_type"})


def refusal(name: str, result: Mapping[str, Any] | None) -> OAuthError:
    """The exception for a token answer without a token (MSAL result or token-endpoint JSON)."""
    if not result:
        return SignInRequired(name, "not signed in")
    error = str(result.get("error", "no_token"))
    description = str(result.get("error_description") or "").splitlines()[0:1]
    detail = f"{error}: {description[0]}" if description else error
    if error in _TRANSIENT:
        return ProviderUnavailable(name, f"identity provider failing ({detail})")
    if error in _APP_REFUSED:
        return AuthorizationRefused(name, f"the app registration was refused ({detail}); check client id and secret")
    return SignInRequired(name, detail)


@contextlib.contextmanager
def calling_provider(name: str) -> Iterator[None]:
    """Network failures and 5xx answers become `ProviderUnavailable` (the relay's 451)."""
    try:
        yield
    except requests.RequestException as exc:
        raise ProviderUnavailable(name, f"identity provider unreachable ({type(exc).__name__})") from None
    except msal.exceptions.MsalServiceError as exc:
        raise ProviderUnavailable(name, f"identity provider failing ({exc})") from None
