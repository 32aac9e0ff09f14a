"""The client session's link to the upstream: get it (pool or new), reset it, drop it.

Also the end of a transaction (its audit events), which every hook needs.
The base of the aiosmtpd handler (`handler.RelayHandler`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib

from smtpguard import replies
from smtpguard.metrics import METRICS
from smtpguard.smtp import credentials
from smtpguard.smtp.context import LOST, RelayContext, Transaction
from smtpguard.smtp.nexthop import connect_first
from smtpguard.smtp.session import RelaySession
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, connect, describe
from smtpguard.suppression.store import Event, utc_now

log = logging.getLogger("smtpguard.relay")
Hook = Callable[..., Awaitable[str]]


def answers_4xx(command: str, *, end_transaction: bool = False) -> Callable[[Hook], Hook]:
    """A hook that never raises: a failure is logged and answered 451 (aiosmtpd
    would answer a permanent 500 that leaks internals; aiosmtpd 1.4.6, smtp.py
    `_call_handler_hook`). With `end_transaction`, the transaction ends too."""

    def wrap(hook: Hook) -> Hook:
        @functools.wraps(hook)
        async def guarded(self: UpstreamLink, server: RelaySession, *args: Any) -> str:
            try:
                return await hook(self, server, *args)
            except Exception:
                log.exception("session=%d %s failed", server.sid, command)
                if end_transaction:
                    await self.rset_upstream(server)
                    self.end_transaction(server)
                return replies.INTERNAL.say(self.lang)

        return guarded

    return wrap


class UpstreamLink:
    """Shared by the handler's hooks: the relay's context and the session's upstream."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    @property
    def lang(self) -> str:
        return self.ctx.settings.policy.language

    def end_transaction(self, server: RelaySession, message_id: str = "") -> None:
        """Write the transaction's audit events and forget it."""
        txn, server.txn = server.txn, None
        if txn is None:
            return
        now = utc_now()
        for action, s in txn.events:
            self.ctx.audit.add(
                Event(
                    time=now,
                    action=action,  # type: ignore[arg-type]
                    sender=txn.sender,
                    recipient=s.address,
                    entry=s.entry.original,
                    source=s.entry.source,
                    client=server.client_ip,
                    user=server.user,
                    message_id=message_id,
                )
            )

    def finish(self, server: RelaySession, txn: Transaction, outcome: str, size: int, message_id: str) -> None:
        """The message's one log line, then its audit events. Call it last before
        returning the reply: a graceful stop treats `txn is None` as "reply written"."""
        log.info(
            "session=%d message from=<%s> relayed=%d held=%d size=%d outcome=%s message_id=%s user=%s client=%s",
            server.sid,
            txn.sender,
            len(txn.relayed),
            len(txn.held),
            size,
            outcome,
            message_id or "-",
            server.user or "-",
            server.client_ip,
        )
        METRICS.message_finished(outcome)
        self.end_transaction(server, message_id)

    async def drop_upstream(self, server: RelaySession, why: str) -> None:
        log.warning("session=%d upstream lost: %s", server.sid, why)
        up, server.upstream = server.upstream, None
        if server.txn is not None:
            server.txn.upstream_lost = True
        await close_quietly(up, quit=False)

    async def rset_upstream(self, server: RelaySession) -> None:
        """End the upstream's transaction; a session that will not reset is dropped,
        never kept (or pooled) with a transaction still open."""
        up = server.upstream
        if up is None or not up.is_connected:
            return
        try:
            await up.rset()
        except aiosmtplib.SMTPResponseException as exc:
            await self.drop_upstream(server, f"RSET refused: {describe(exc)}")
        except LOST as exc:
            await self.drop_upstream(server, describe(exc))

    async def upstream_for(self, server: RelaySession, sender: str = "") -> aiosmtplib.SMTP | str:
        """The session's upstream, connected and logged in (credentials.py) on first use,
        or again when this sender needs another login; a reply text on failure."""
        up = server.upstream
        if up is not None and up.is_connected and server.upstream_key is None:
            return up  # passthrough: the client's own login
        settings = self.ctx.settings
        if server.gateway:
            return await self._next_hop_for(server)
        if settings.server.auth == "passthrough":
            server.upstream = None
            await close_quietly(up, quit=False)
            # The upstream session carried the client's login, which cannot be
            # replayed (the password is never kept). Connecting again without
            # it would send unauthenticated: make the client reconnect and log in.
            log.info("session=%d upstream session gone; asking the client to reconnect", server.sid)
            server.close_after_reply()
            return replies.RELOGIN.say(self.lang)
        cred = credentials.choose(settings, server.user, sender)
        if isinstance(cred, str):
            return cred
        if up is not None:
            if up.is_connected and server.upstream_key == cred:
                return up
            server.upstream = None  # lost, or logged in as another mailbox (oauth-app)
            if up.is_connected and server.upstream_key is not None and self.ctx.accepting:
                await self.ctx.pool.give(server.upstream_key, up, server.loop.time(), clean=False)
            else:
                await close_quietly(up, quit=False)
        pooled = self.ctx.pool.take(cred, server.loop.time())
        if pooled is not None:
            server.upstream, server.upstream_key, server.upstream_reused = pooled, cred, True
            return pooled
        try:
            up = await connect(settings.upstream, settings.server.hostname)
        except UpstreamUnavailable as exc:
            log.warning("session=%d upstream %s unreachable: %s", server.sid, settings.upstream.host, exc)
            return replies.UPSTREAM_DOWN.say(self.lang)
        refused = await credentials.log_in(up, cred, settings, credentials.broker(self.ctx))
        if refused is not None:
            await close_quietly(up)
            return refused
        server.upstream, server.upstream_key, server.upstream_reused = up, cred, False
        return up

    async def _next_hop_for(self, server: RelaySession) -> aiosmtplib.SMTP | str:
        """Gateway sessions: the first next hop that answers; kept for the client's next messages."""
        settings = self.ctx.settings
        try:
            up = await connect_first(settings.gateway.hops, settings.server.hostname)
        except UpstreamUnavailable as exc:
            log.warning("session=%d no next hop: %s", server.sid, exc)
            return replies.NEXT_HOP_DOWN.say(self.lang)
        server.upstream, server.upstream_key, server.upstream_reused = up, None, False
        return up
