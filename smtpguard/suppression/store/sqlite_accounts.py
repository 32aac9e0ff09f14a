"""The SQLite store's accounts: local users (passwords, web roles, sender addresses) and API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiosqlite

from .base import Token, TokenScope, WebRole, utc_now
from .sqlite_files import store_errors


class AccountTables:
    """The users, web_roles and tokens tables; the connections come from SQLiteStore."""

    path: Path

    def _transaction(self, *, commit: bool = True) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _writer(self) -> aiosqlite.Connection:
        raise NotImplementedError

    # -- local users -------------------------------------------------------

    async def set_user(self, name: str, password_hash: str) -> bool:
        async with self._transaction() as db:
            async with db.execute("SELECT 1 FROM users WHERE name = ?", (name,)) as cur:
                exists = await cur.fetchone() is not None
            await db.execute(
                "INSERT INTO users (name, hash, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
                (name, password_hash, utc_now()),
            )
            return not exists

    async def remove_user(self, name: str) -> bool:
        async with self._transaction() as db:
            await db.execute("DELETE FROM web_roles WHERE name = ?", (name,))
            async with db.execute("DELETE FROM users WHERE name = ? RETURNING name", (name,)) as cur:
                return await cur.fetchone() is not None

    async def user_hash(self, name: str) -> str | None:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute("SELECT hash FROM users WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            return str(row[0]) if row else None

    async def users(self) -> list[tuple[str, str]]:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute("SELECT name, created FROM users ORDER BY name") as cur:
                return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def set_web_role(self, name: str, role: WebRole | None) -> bool:
        async with self._transaction() as db:
            async with db.execute("SELECT 1 FROM users WHERE name = ?", (name,)) as cur:
                if await cur.fetchone() is None:
                    return False
            if role is None:
                await db.execute("DELETE FROM web_roles WHERE name = ?", (name,))
            else:
                await db.execute(
                    "INSERT INTO web_roles (name, role) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET role = excluded.role",
                    (name, role),
                )
            return True

    async def web_role(self, name: str) -> WebRole | None:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute("SELECT role FROM web_roles WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
        role = str(row[0]) if row else None
        return role if role in ("viewer", "editor", "admin") else None  # type: ignore[return-value]

    async def set_user_addresses(self, name: str, addresses: Sequence[str]) -> bool:
        async with (
            self._transaction() as db,
            db.execute(
                "UPDATE users SET addresses = ? WHERE name = ? RETURNING name", ("\n".join(addresses), name)
            ) as cur,
        ):
            return await cur.fetchone() is not None

    async def user_addresses(self, name: str) -> list[str]:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute("SELECT addresses FROM users WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            return [a for a in str(row[0]).split("\n") if a] if row else []

    # -- HTTP API tokens -----------------------------------------------------

    async def add_token(self, name: str, scope: TokenScope, token_hash: str) -> bool:
        async with (
            self._transaction() as db,
            db.execute(
                "INSERT INTO tokens (name, scope, hash, created) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
                " RETURNING name",
                (name, scope, token_hash, utc_now()),
            ) as cur,
        ):
            return await cur.fetchone() is not None

    async def remove_token(self, name: str) -> bool:
        async with (
            self._transaction() as db,
            db.execute("DELETE FROM tokens WHERE name = ? RETURNING name", (name,)) as cur,
        ):
            return await cur.fetchone() is not None

    async def tokens(self) -> list[Token]:
        return await self._tokens_where("1 ORDER BY name", ())

    async def token_by_hash(self, token_hash: str) -> Token | None:
        found = await self._tokens_where("hash = ?", (token_hash,))
        return found[0] if found else None

    async def _tokens_where(self, where: str, args: tuple[str, ...]) -> list[Token]:
        with store_errors(self.path):
            db = await self._writer()
            async with db.execute(f"SELECT name, scope, hash, created FROM tokens WHERE {where}", args) as cur:
                return [Token(str(r[0]), "write" if r[1] == "write" else "read", str(r[2]), str(r[3]))
                        for r in await cur.fetchall()]  # fmt: skip
