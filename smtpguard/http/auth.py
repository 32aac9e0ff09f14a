"""Bearer tokens for the API: made by `smtpguard token add`, kept as SHA-256 only.

A token is 256 random bits (`sg_` + 43 URL-safe characters); the store keeps
its SHA-256, which is enough (no salt or slow hash needed for a random secret
of that size), so a leaked database holds no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from smtpguard.suppression.store import Store, TokenScope

PREFIX = "sg_"
_bearer = HTTPBearer(auto_error=False, description="a token from `smtpguard token add NAME --scope read|write`")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(store: Store, name: str, scope: TokenScope) -> str | None:
    """A new token (to show once), or None when the name is taken."""
    token = new_token()
    return token if await store.add_token(name, scope, token_hash(token)) else None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name (for the audit trail) and the client's address."""

    token: str
    scope: TokenScope
    client: str

    @property
    def user(self) -> str:
        return f"token:{self.token}"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


async def _caller(request: Request, credentials: HTTPAuthorizationCredentials | None, need: TokenScope) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    store: Store = request.app.state.http.store
    found = await store.token_by_hash(token_hash(credentials.credentials))
    if found is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if need == "write" and found.scope != "write":
        raise HTTPException(403, f"token {found.name!r} may only read")
    return Caller(found.name, found.scope, client_ip(request))


async def reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return await _caller(request, credentials, "read")


async def writer(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return await _caller(request, credentials, "write")


Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]
