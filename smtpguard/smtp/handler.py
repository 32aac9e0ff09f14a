"""The aiosmtpd handler: one `RelayHandler` for all sessions, its hooks gathered.

AUTH is in auth.py, MAIL/DATA/RSET/QUIT in transaction.py, the decision on
each recipient in recipient.py.  Every hook catches its own failures and
answers 4xx: aiosmtpd's default for an exception is a permanent 500 that
leaks internals (aiosmtpd 1.4.6, smtp.py `_call_handler_hook`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

from aiosmtpd.smtp import Envelope, Session

from smtpguard import replies
from smtpguard.smtp.auth import AuthHooks
from smtpguard.smtp.recipient import RecipientHook
from smtpguard.smtp.session import RelaySession, dispatched
from smtpguard.smtp.transaction import TransactionHooks

log = logging.getLogger("smtpguard.relay")


class RelayHandler(AuthHooks, RecipientHook, TransactionHooks):
    """The aiosmtpd handler (the policy); `session.RelaySession` is the protocol."""

    def __dir__(self) -> Iterable[str]:
        return dispatched(type(self), ("handle_", "auth_"))  # as RelaySession.__dir__

    async def handle_EHLO(
        self, server: RelaySession, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if server.txn is not None:
            self.end_transaction(server)
            await self.rset_upstream(server)
        lines = list(responses[:-1])
        if self.ctx.settings.server.auth == "none" or server.gateway:
            lines = [line for line in lines if not line.startswith("250-AUTH")]
        if server.gateway:
            lines.append("250-DSN")  # passed on where the next hop has it (smtp/dsn.py)
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]
        server.ehlo_lines = len(lines)
        return lines

    # aiosmtpd reads this hook's signature for every connection (to tell its old
    # 4-argument form from this one): ~20 µs each time, unless it is given.
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)  # type: ignore[attr-defined]

    async def handle_exception(self, error: Exception) -> str:
        # Must be async and return a string (aiosmtpd 1.4.6); 4xx, never a 500.
        log.error("session error: %s: %s", type(error).__name__, error)
        return replies.INTERNAL.say(self.lang)
