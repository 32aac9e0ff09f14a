"""What can go wrong while getting a token, in the two kinds the relay answers differently.

- `AuthorizationRefused` (permanent until a person acts): the identity provider said no.
  `SignInRequired` is the common case: the refresh token is revoked, expired or missing,
  and the user must run `smtpguard account login USER` again. The relay answers a 4xx
  naming that command, so the message stays queued in the client while the user acts.
- `ProviderUnavailable` (transient): the identity provider could not be reached or
  answered 5xx. The relay answers 451; nothing is wrong with the account.
"""

from __future__ import annotations


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
