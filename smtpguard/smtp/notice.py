"""Strip mode's last step: tell the sender which recipients were removed.

Sent through the same upstream session once the message itself was
accepted; a failure here never changes the client's 250.
"""

from __future__ import annotations

import logging

import aiosmtplib

from smtpguard.smtp.context import LOST, Transaction
from smtpguard.smtp.link import UpstreamLink
from smtpguard.smtp.message import header_value, sender_notice
from smtpguard.smtp.session import RelaySession
from smtpguard.smtp.upstream import describe
from smtpguard.suppression import verdict
from smtpguard.suppression.addresses import AddressError
from smtpguard.suppression.store import StoreError

log = logging.getLogger("smtpguard.relay")


async def notify_sender(link: UpstreamLink, server: RelaySession, txn: Transaction, content: bytes) -> None:
    """Tell the sender what was stripped, through the same upstream session."""
    up = server.upstream
    if up is None:
        return
    settings = txn.settings
    # The notice is mail the relay sends itself: the rules a recipient meets at
    # RCPT apply to it too. A routing form (`a%b@relay`, `b!a@relay`,
    # `"a@b"@relay`, an IP literal) or a suppressed (or unreadable) sender
    # gets none; the client's 250 already stands, so skip quietly.
    try:
        blocked = await verdict.check_recipient(link.ctx.store, txn.sender)
    except (AddressError, StoreError) as exc:
        log.warning("session=%d sender notice not sent: cannot check <%s>: %s", server.sid, txn.sender, exc)
        return
    if blocked is not None:
        log.info("session=%d sender notice not sent: <%s> is suppressed (%s)", server.sid, txn.sender, blocked.original)
        return
    notice = sender_notice(
        txn.sender,
        header_value(content, "Subject"),
        [s.address for s in txn.held],
        txn.lang,
        settings.server.hostname,
    )
    try:
        await up.send_message(notice, sender=txn.sender, recipients=[txn.sender])
    except aiosmtplib.SMTPException as exc:
        log.warning("session=%d sender notice not sent: %s", server.sid, describe(exc))
        await link.rset_upstream(server)
    except LOST as exc:
        await link.drop_upstream(server, describe(exc))
