"""MAIL, DATA, RSET and QUIT: one transaction from its start to the upstream's verdict.

MAIL takes the settings the whole transaction will use (a reload applies
from the next one) and opens the upstream transaction; DATA settles what
RCPT held (see recipient.py) and hands the message on; the client hears 250
only once the upstream accepted it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

import aiosmtplib
from aiosmtpd.smtp import Envelope, Session

from smtpguard import replies
from smtpguard.replies import upstream_error, upstream_reply
from smtpguard.smtp import credentials, dsn, gateway
from smtpguard.smtp.context import LOST, Transaction
from smtpguard.smtp.link import UpstreamLink, answers_4xx
from smtpguard.smtp.message import header_value, remove_recipients
from smtpguard.smtp.notice import notify_sender
from smtpguard.smtp.session import RelaySession
from smtpguard.smtp.spool import Spool
from smtpguard.smtp.stream import send_data
from smtpguard.smtp.upstream import close_quietly, describe
from smtpguard.suppression.addresses import address_key

log = logging.getLogger("smtpguard.relay")
ONE_PIECE = 64 * 1024  # a message up to this size (in memory) goes upstream in one write


def pieces(head: bytes, spool: Spool) -> Iterable[bytes]:
    """The message to send: the header block, then the spooled rest; a small one in one piece
    (each piece is a write, a send() and a loop step in send_data)."""
    if not spool.on_disk and spool.size <= ONE_PIECE:
        return (head + b"".join(spool.body()),)
    return itertools.chain((head,), spool.body())


class TransactionHooks(UpstreamLink):
    """The handler's MAIL, DATA, RSET and QUIT hooks."""

    @answers_4xx("MAIL")
    async def handle_MAIL(
        self, server: RelaySession, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        settings = self.ctx.settings  # the transaction keeps these until it ends
        lang = settings.policy.language
        # trusted_networks stand in for AUTH only with auth = "none": with
        # "local" the relay would otherwise send under its own upstream
        # account for anyone on the machine or LAN. Judged on the settings of now.
        if server.gateway:
            if not gateway.trusted(server, settings.gateway):
                return replies.GATEWAY_REFUSED.say(lang, address=server.client_ip)
        elif not (session.authenticated or (settings.server.auth == "none" and server.trusted)):
            return replies.AUTH_NEEDED.say(lang)
        if server.txn is not None:
            # A transaction aiosmtpd ended without our DATA hook (oversize
            # message, line too long): the upstream still has it open.
            self.end_transaction(server)
            await self.rset_upstream(server)
        sender = "" if address == "<>" else address
        refused = await credentials.sender_refusal(settings, self.ctx.store, server.user, sender)
        if refused is not None:
            return refused  # not one of this user's addresses: the upstream never hears of it
        utf8 = "SMTPUTF8" in options or not sender.isascii()
        while True:
            up = await self.upstream_for(server, sender)
            if isinstance(up, str):
                return up
            if utf8 and not up.supports_extension("smtputf8"):
                return replies.NO_UTF8_UPSTREAM.say(lang)
            forwarded = [
                o
                for o in options
                if (o.startswith("SIZE=") and up.supports_extension("size"))
                or (o.startswith("BODY=") and up.supports_extension("8bitmime"))
            ]
            if utf8:
                forwarded.append("SMTPUTF8")
            forwarded += dsn.forwardable(server.dsn_mail, up)
            try:
                r = await up.mail(sender, options=forwarded, encoding="utf-8" if utf8 else "ascii")
            except ValueError:
                # aiosmtplib refuses what cannot be a mailbox (spaces, controls);
                # nothing was sent upstream.
                return replies.BAD_SENDER.say(lang, address=address)
            except aiosmtplib.SMTPResponseException as exc:
                return upstream_error(exc)
            except LOST as exc:
                reused = server.upstream_reused
                await self.drop_upstream(server, describe(exc))
                if reused:
                    continue  # a pooled session the upstream had closed meanwhile: take a fresh one
                return replies.UPSTREAM_LOST.say(lang)
            break
        server.upstream_reused = False
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        server.txn = Transaction(settings=settings, sender=sender, utf8=utf8)
        return upstream_reply(r.code, r.message)

    @answers_4xx("DATA", end_transaction=True)
    async def handle_DATA(self, server: RelaySession, session: Session, envelope: Envelope) -> str:
        txn = server.txn
        up = server.upstream
        if txn is None:
            return replies.MAIL_FIRST.say(self.lang)
        settings, lang = txn.settings, txn.lang  # as they were at MAIL
        spool = server.message
        assert spool is not None  # set by RelaySession.smtp_DATA around this hook
        head = bytes(spool.head)  # the header block: the rest of the message stays spooled
        size = spool.size
        message_id = header_value(head, "Message-ID")
        mode = settings.policy.mode
        if txn.held and mode == "reject-message":
            txn.events += [("rejected", s) for s in txn.held]
            await self.rset_upstream(server)
            self.finish(server, txn, "refused", size, message_id)
            return replies.message_refusal(txn.held, lang)
        if up is None or txn.upstream_lost:
            # The upstream went away during RCPT: nothing was refused for good.
            self.finish(server, txn, "upstream lost", size, message_id)
            return replies.UPSTREAM_LOST.say(lang)
        if not txn.relayed:
            txn.events += [("stripped", s) for s in txn.held]
            await self.rset_upstream(server)
            self.finish(server, txn, "refused", size, message_id)
            return replies.all_stripped(txn.held, lang)
        rewrite = bool(txn.held) and settings.policy.rewrite_headers
        if spool.head_truncated and (rewrite or server.gateway):
            # Recipient fields, or a forged loop header, may lie past what is kept in memory.
            await self.rset_upstream(server)
            self.finish(server, txn, "header too long", size, message_id)
            return replies.HEADER_TOO_BIG.say(lang)
        if rewrite:
            rules = await self.ctx.store.rules()  # "the same person" as the list sees it
            held_keys = {address_key(s.address, rules, strict=False) for s in txn.held}
            head = remove_recipients(head, lambda a: address_key(a, rules, strict=False) in held_keys)
        if server.gateway:  # never trust an incoming loop header; ours marks mail as checked
            head = gateway.stamp_message(head, settings.gateway, txn.sender, txn.relayed, message_id)
        # The timeout covers upload and reply: scale it with size. It is the next hop's own
        # in gateway mode (the session was opened with it), else [upstream] timeout.
        timeout = (up.timeout or settings.upstream.timeout) + size / 20_000
        server.in_data = True
        server.set_data_deadline(timeout + 30)
        try:
            r = await send_data(up, pieces(head, spool), timeout=timeout)
        except aiosmtplib.SMTPResponseException as exc:
            await self.rset_upstream(server)
            self.finish(server, txn, f"upstream {exc.code}", size, message_id)
            return upstream_error(exc)
        except LOST as exc:
            await self.drop_upstream(server, describe(exc))
            self.finish(server, txn, "upstream lost", size, message_id)
            return replies.UPSTREAM_LOST.say(lang)
        finally:
            server.in_data = False
            server.set_data_deadline(None)
        txn.events += [("stripped", s) for s in txn.held]
        if txn.held and settings.policy.notify_sender and txn.sender:
            await notify_sender(self, server, txn, head)
        self.finish(server, txn, f"relayed {r.code}", size, message_id)
        return upstream_reply(r.code, r.message)

    async def handle_RSET(self, server: RelaySession, session: Session, envelope: Envelope) -> str:
        if server.txn is not None:
            self.end_transaction(server)
            await self.rset_upstream(server)
        return replies.RESET_OK.say(self.lang)

    async def handle_QUIT(self, server: RelaySession, session: Session, envelope: Envelope) -> str:
        clean = server.txn is None
        self.end_transaction(server)
        up, server.upstream = server.upstream, None
        if up is not None and server.upstream_key is not None and self.ctx.accepting:
            await self.ctx.pool.give(server.upstream_key, up, server.loop.time(), clean=clean)
        else:
            await close_quietly(up)
        return replies.BYE.say(self.lang)
