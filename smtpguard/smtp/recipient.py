"""RCPT: where each recipient is decided — refused, held, or passed to the upstream.

The list is asked once per recipient (`verdict.check_recipient`); what a hit
means depends on the mode taken at MAIL: "reject" answers 550 now,
"reject-message" and "strip" accept it here and settle at DATA, "monitor"
relays it and notes it.  Anything else goes to the upstream, whose own reply
the client hears.
"""

from __future__ import annotations

import logging
import time

import aiosmtplib
from aiosmtpd.smtp import Envelope, Session

from smtpguard import replies
from smtpguard.metrics import METRICS
from smtpguard.replies import upstream_error, upstream_reply
from smtpguard.smtp import dsn
from smtpguard.smtp.context import LOST
from smtpguard.smtp.link import UpstreamLink, answers_4xx
from smtpguard.smtp.session import RelaySession
from smtpguard.smtp.upstream import describe, rcpt
from smtpguard.suppression import verdict
from smtpguard.suppression.addresses import AddressError, RoutingRefused
from smtpguard.suppression.store import StoreError
from smtpguard.suppression.verdict import Suppressed

log = logging.getLogger("smtpguard.relay")


class RecipientHook(UpstreamLink):
    """The handler's RCPT hook."""

    @answers_4xx("RCPT")
    async def handle_RCPT(
        self, server: RelaySession, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        txn = server.txn
        up = server.upstream
        if txn is None or up is None:
            return replies.MAIL_FIRST.say(self.lang)
        settings, lang = txn.settings, txn.lang  # as they were at MAIL
        if len(envelope.rcpt_tos) >= settings.server.max_recipients:
            return replies.TOO_MANY.say(lang)
        try:
            started = time.perf_counter()
            entry = await verdict.check_recipient(self.ctx.store, address)
            METRICS.rcpt_lookup(time.perf_counter() - started)
        except RoutingRefused as exc:
            return replies.ROUTING.say(lang, address=address, why=str(exc))
        except AddressError as exc:
            return replies.BAD_ADDRESS.say(lang, address=address, why=str(exc).rstrip("."))
        except StoreError as exc:
            log.error("session=%d list unreadable, RCPT refused for now: %s", server.sid, exc)
            return replies.STORE_DOWN.say(lang)
        mode = settings.policy.mode
        if entry is not None:
            hit = Suppressed(address, entry)
            log.info(
                "session=%d suppressed rcpt=<%s> entry=%s source=%s mode=%s user=%s client=%s",
                server.sid,
                address,
                entry.original,
                entry.source,
                mode,
                server.user or "-",
                server.client_ip,
            )
            if mode == "reject":
                txn.events.append(("rejected", hit))
                return replies.recipient_refusal(hit, lang)
            if mode in ("reject-message", "strip"):
                txn.held.append(hit)
                envelope.rcpt_tos.append(address)
                return replies.RECIPIENT_OK.say(lang)
            txn.events.append(("monitored", hit))
        try:
            encoding = "utf-8" if txn.utf8 or not address.isascii() else "ascii"
            options = options + dsn.forwardable(server.dsn_rcpt, up)  # gateway only; never an address we use
            r = await rcpt(up, address, options, encoding)
        except aiosmtplib.SMTPResponseException as exc:
            if not 200 <= exc.code < 300:
                return upstream_error(exc)
            # aiosmtplib raises on anything but 250/251; a 252 ("cannot
            # verify, will try") still accepted the recipient.
            r = aiosmtplib.SMTPResponse(exc.code, exc.message)
        except LOST as exc:
            await self.drop_upstream(server, describe(exc))
            return replies.UPSTREAM_LOST.say(lang)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        txn.relayed.append(address)
        return upstream_reply(r.code, r.message)
