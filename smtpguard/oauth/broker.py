"""The relay's one entry point: `await broker.access_token(account)` before each upstream login.

One client object per account (MSAL's app and discovery are reused), one lock per
account so two connections never refresh the same refresh token at once, and the
blocking provider calls in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio

from smtpguard.oauth.account import OAuthAccount, Token
from smtpguard.oauth.google import GoogleAuth
from smtpguard.oauth.microsoft import MicrosoftApp, MicrosoftDelegated
from smtpguard.oauth.tokens import TokenStore

Client = MicrosoftDelegated | MicrosoftApp | GoogleAuth


def make_client(account: OAuthAccount, store: TokenStore) -> Client:
    if account.provider == "google":
        return GoogleAuth(account, store)
    if account.mode == "oauth-app":
        return MicrosoftApp(account)
    return MicrosoftDelegated(account, store)


class TokenBroker:
    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self._clients: dict[OAuthAccount, Client] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def client(self, account: OAuthAccount) -> Client:
        if account not in self._clients:
            self._clients[account] = make_client(account, self.store)
        return self._clients[account]

    async def token(self, account: OAuthAccount, *, force_refresh: bool = False) -> Token:
        """Raises `SignInRequired`/`AuthorizationRefused` (4xx) or `ProviderUnavailable` (451)."""
        lock = self._locks.setdefault(account.name, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self.client(account).token, force_refresh)

    async def access_token(self, account: OAuthAccount, *, force_refresh: bool = False) -> str:
        """A token with more than 5 minutes left. After an upstream 535 with a token that looked
        valid, call once more with `force_refresh=True` and retry the login once."""
        return (await self.token(account, force_refresh=force_refresh)).access_token
