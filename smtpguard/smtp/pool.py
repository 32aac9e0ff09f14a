"""Idle upstream sessions of the relay's own account, kept for the next client."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import aiosmtplib

from smtpguard.smtp.upstream import close_quietly

# What a pooled session is logged in as (smtp/credentials.Credential: the upstream
# settings and the login): a session goes only to a client with an equal key.
UpstreamKey = Hashable
_Idle = tuple[float, UpstreamKey, aiosmtplib.SMTP]  # (idle since, key, session)


def _settings(key: UpstreamKey) -> object:
    """The upstream settings a key was made for (a Credential's `upstream`, or the key itself)."""
    return getattr(key, "upstream", key)


class UpstreamPool:
    """Idle upstream sessions logged in as the relay's own account, kept for the next client.

    Mail programs open a new connection for every message; without a pool each
    one costs the upstream a TCP and TLS handshake, EHLO and AUTH. Only
    sessions of the relay's own account (auth "local"/"none") are pooled: a
    passthrough session carries one user's login and dies with its client.
    """

    def __init__(self, *, size: int = 8, max_idle: float = 30.0) -> None:
        self.size = size
        self.max_idle = max_idle  # below common upstream idle timeouts (Postfix: 300 s)
        self._idle: list[_Idle] = []
        self._closed = False
        self._pending: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, up: UpstreamKey, now: float) -> aiosmtplib.SMTP | None:
        """The freshest idle session for this key, or None. Stale ones are closed, and so are
        those for other upstream settings (a reload); those of other logins to the same
        upstream stay for their own clients."""
        others: list[_Idle] = []
        matching: list[_Idle] = []
        for item in self._idle:
            since, key, client = item
            if now - since >= self.max_idle or not client.is_connected or _settings(key) != _settings(up):
                client.close()
            else:
                (matching if key == up else others).append(item)
        found = matching.pop()[2] if matching else None  # the most recently used
        self._idle = others + matching
        return found

    async def give(self, up: UpstreamKey, client: aiosmtplib.SMTP, now: float, *, clean: bool) -> None:
        """Keep `client` for reuse; `clean=False` means a transaction may be open (RSET first)."""
        if self._closed or not client.is_connected or len(self._idle) >= self.size:
            await close_quietly(client)
            return
        if not clean:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                return
        self._idle.append((now, up, client))

    def give_soon(self, up: UpstreamKey, client: aiosmtplib.SMTP, now: float) -> None:
        """`give` a clean session from code that cannot await (a connection_lost callback)."""
        task = asyncio.ensure_future(self.give(up, client, now, clean=True))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Close what is idle; sessions given back later are closed at once."""
        self._closed = True
        idle, self._idle = self._idle, []
        for _, _, client in idle:
            await close_quietly(client)
