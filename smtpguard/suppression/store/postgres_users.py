"""PostgreSQL's accounts: local users (passwords, web roles, sender addresses) and API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from .base import WEB_ROLES, Token, TokenScope, WebRole, utc_now


class UserTables:
    """The users, web_roles and tokens tables; `_connection()` comes from PostgresStore."""

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def set_user(self, name: str, password_hash: str) -> bool:
        async with self._connection() as conn:
            # xmax = 0: the row was inserted, not updated (one statement, no race between relays).
            return bool(
                await conn.fetchval(
                    "INSERT INTO users (name, hash, created) VALUES ($1, $2, $3)"
                    " ON CONFLICT (name) DO UPDATE SET hash = excluded.hash RETURNING xmax = 0",
                    name,
                    password_hash,
                    utc_now(),
                )
            )

    async def remove_user(self, name: str) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval("DELETE FROM users WHERE name = $1 RETURNING name", name) is not None

    async def user_hash(self, name: str) -> str | None:
        async with self._connection() as conn:
            found = await conn.fetchval("SELECT hash FROM users WHERE name = $1", name)
        return None if found is None else str(found)

    async def users(self) -> list[tuple[str, str]]:
        async with self._connection() as conn:
            rows = await conn.fetch('SELECT name, created FROM users ORDER BY name COLLATE "C"')
        return [(str(r[0]), str(r[1])) for r in rows]

    async def set_web_role(self, name: str, role: WebRole | None) -> bool:
        async with self._connection() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM users WHERE name = $1", name) is None:
                return False
            if role is None:
                await conn.execute("DELETE FROM web_roles WHERE name = $1", name)
            else:
                await conn.execute(
                    "INSERT INTO web_roles (name, role) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET role = excluded.role",
                    name,
                    role,
                )
            return True

    async def web_role(self, name: str) -> WebRole | None:
        async with self._connection() as conn:
            role = await conn.fetchval("SELECT role FROM web_roles WHERE name = $1", name)
        return next((r for r in WEB_ROLES if r == role), None)

    async def set_user_addresses(self, name: str, addresses: Sequence[str]) -> bool:
        async with self._connection() as conn:
            found = await conn.fetchval(
                "UPDATE users SET addresses = $1 WHERE name = $2 RETURNING name", "\n".join(addresses), name
            )
        return found is not None

    async def user_addresses(self, name: str) -> list[str]:
        async with self._connection() as conn:
            found = await conn.fetchval("SELECT addresses FROM users WHERE name = $1", name)
        return [a for a in str(found).split("\n") if a] if found is not None else []

    async def add_token(self, name: str, scope: TokenScope, token_hash: str) -> bool:
        async with self._connection() as conn:
            found = await conn.fetchval(
                "INSERT INTO tokens (name, scope, hash, created) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING RETURNING name",
                name,
                scope,
                token_hash,
                utc_now(),
            )
        return found is not None

    async def remove_token(self, name: str) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval("DELETE FROM tokens WHERE name = $1 RETURNING name", name) is not None

    async def tokens(self) -> list[Token]:
        async with self._connection() as conn:
            rows = await conn.fetch('SELECT name, scope, hash, created FROM tokens ORDER BY name COLLATE "C"')
        return [_token(r) for r in rows]

    async def token_by_hash(self, token_hash: str) -> Token | None:
        async with self._connection() as conn:
            row = await conn.fetchrow("SELECT name, scope, hash, created FROM tokens WHERE hash = $1", token_hash)
        return None if row is None else _token(row)


def _token(row: Any) -> Token:
    return Token(str(row[0]), "write" if row[1] == "write" else "read", str(row[2]), str(row[3]))
