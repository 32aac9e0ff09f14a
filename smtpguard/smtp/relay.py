"""The SMTP side: one client session <-> one upstream session.

aiosmtpd parses the client's commands; each hook here answers with the
upstream's own reply where there is one, so the client hears the real
server's verdict per recipient and a 250 for the message only once the
upstream accepted it.  Every hook catches its own failures and answers 4xx:
aiosmtpd's default for an exception is a permanent 500 that leaks internals
(aiosmtpd 1.4.6, smtp.py `_call_handler_hook`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import Any, AnyStr

import aiosmtplib
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from smtpguard import replies
from smtpguard.config import Settings, UpstreamSettings
from smtpguard.passwords import UNKNOWN_USER_HASH, verify_password
from smtpguard.replies import text, with_enhanced_code
from smtpguard.smtp import speedups as aiosmtpd_speedups
from smtpguard.smtp.audit import AuditWriter
from smtpguard.smtp.message import header_value, remove_recipients, sender_notice
from smtpguard.smtp.pool import UpstreamPool
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, connect, describe, error_reply, reply_text
from smtpguard.suppression import verdict
from smtpguard.suppression.addresses import AddressError, RoutingRefused, address_key
from smtpguard.suppression.store import Event, Store, StoreError, utc_now
from smtpguard.suppression.verdict import Suppressed

log = logging.getLogger("smtpguard.relay")
aiosmtpd_speedups.install()

# What losing the upstream mid-command looks like from aiosmtplib.
LOST = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectError,
    ConnectionError,
    OSError,
)
_session_ids = itertools.count(1)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# `<dot-atom@host.name> params`: the path most clients send (see GuardSMTP._getaddr).
_PLAIN_PATH = re.compile(rf"\s*<({_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>\s*(.*)", re.S)
SESSION_LIMIT = 3600.0  # seconds one connection may last, whatever it does
SESSION_LIMIT_RECHECK = 30.0  # then, while a transaction is open, look again this often


@dataclass
class RelayContext:
    """What every session shares; `settings` is swapped on reload."""

    settings: Settings
    store: Store
    audit: AuditWriter
    sessions: set[GuardSMTP] = field(default_factory=set)
    accepting: bool = True
    pool: UpstreamPool = field(default_factory=UpstreamPool)


@dataclass
class Transaction:
    """One MAIL .. DATA exchange, kept on the connection (STARTTLS replaces Session)."""

    sender: str = ""
    relayed: list[str] = field(default_factory=list)
    held: list[Suppressed] = field(default_factory=list)  # accepted, not relayed
    events: list[tuple[str, Suppressed]] = field(default_factory=list)
    utf8: bool = False


class GuardSMTP(SMTP):
    """aiosmtpd's SMTP with per-connection state and an idle (not per-command) timeout."""

    def __init__(self, handler: Guard, ctx: RelayContext, *, implicit_tls: bool = False, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.sid = next(_session_ids)
        self.upstream: aiosmtplib.SMTP | None = None
        # Set when `upstream` is the relay's own account (auth local/none), so
        # it may go back to the pool; `upstream_reused` until its first MAIL.
        self.upstream_key: UpstreamSettings | None = None
        self.upstream_reused = False
        self.user = ""
        self.client_ip = ""
        self.trusted = False
        self.txn: Transaction | None = None
        self.in_data = False  # a message is being handed to the upstream
        self.busy = 0  # a hook is running: its reply is not written yet
        self.ehlo_lines = 0  # lines of an EHLO reply still to be pushed as they are
        self._ehlo_reply: list[str] = []
        self._lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer and not self.client_ip:
            self.client_ip = str(peer[0])
            networks = self.ctx.settings.server.trusted_networks
            try:
                ip = ipaddress.ip_address(self.client_ip.split("%")[0])
                ip = getattr(ip, "ipv4_mapped", None) or ip
                self.trusted = any(ip in n for n in networks)
            except ValueError:
                self.trusted = False
        self.ctx.sessions.add(self)
        if self._lifetime is None:
            self._lifetime = self.loop.call_later(SESSION_LIMIT, self._session_limit)

    def _session_limit(self) -> None:
        # The idle timer restarts on every byte, so a client trickling one
        # byte at a time could hold a session for ever; cap its whole life,
        # but never cut a transaction in progress.
        if self.txn is not None or self.busy or self.in_data:
            self._lifetime = self.loop.call_later(SESSION_LIMIT_RECHECK, self._session_limit)
            return
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.4.2 Session too long, please reconnect\r\n")
            transport.close()

    def data_received(self, data: bytes) -> None:
        # aiosmtpd's timer restarts only per command line, so a long upload
        # would be cut mid-DATA; restart it on any byte instead.
        if self._timeout_handle is not None and not self.in_data:
            self._reset_timeout()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self.ctx.sessions.discard(self)
        if self._lifetime is not None:
            self._lifetime.cancel()
        guard: Guard = self.event_handler
        clean = self.txn is None and not self.in_data and not self.busy
        guard.end_transaction(self)
        up, self.upstream = self.upstream, None
        if up is not None:
            if self.upstream_key is not None and clean and self.ctx.accepting:
                # The client just hung up without QUIT: the session is still good.
                self.ctx.pool.give_soon(self.upstream_key, up, self.loop.time())
            else:
                up.close()
        super().connection_lost(error)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        # The reply is written in the same loop step as the hook returns, so
        # a stop that waits for busy == 0 never cuts a session before it.
        self.busy += 1
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self.busy -= 1

    def _timeout_cb(self) -> None:
        # aiosmtpd just hangs up; say why first (RFC 5321 4.1.1.10 / 3.8).
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(text(self.ctx.settings.policy.language, "idle").encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd's own size refusals ("552 Error: Too much mail data", at
        # MAIL for SIZE= and after DATA) carry no enhanced code and no advice.
        if isinstance(status, str) and status.startswith("552 Error:"):
            limit = self.data_size_limit or 0
            status = text(self.ctx.settings.policy.language, "too_big", limit=f"{limit / 1_000_000:.1f}")
        if isinstance(status, str) and not status.isascii():
            # Replies that echo the client's address carry its invalid UTF-8
            # bytes as lone surrogates (aiosmtpd decodes with surrogateescape);
            # encoding them would raise, and the client would get a 451
            # "something went wrong" instead of the 5xx meant for it. Show such
            # bytes as \xNN instead.
            status = status.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if self.ehlo_lines and isinstance(status, str):
            # EHLO keyword lines carry no status code; aiosmtpd pushes them one
            # write (one send()) each: gather them into one.
            self.ehlo_lines -= 1
            self._ehlo_reply.append(status)
            if self.ehlo_lines:
                return
            status, self._ehlo_reply = "\r\n".join(self._ehlo_reply), []
        elif isinstance(status, str) and self.session is not None and self.session.extended_smtp:
            status = with_enhanced_code(status)  # we advertise ENHANCEDSTATUSCODES
        await super().push(status)

    def close_after_reply(self) -> None:
        """Hang up once the reply being returned is written (it is, in this loop step)."""
        transport = self.transport
        if transport is not None:
            self.loop.call_soon(transport.close)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd runs the e-mail header parser (and defines a class) for
        # every MAIL and RCPT: ~17% of the relay's CPU. A plain <user@domain>
        # gets the same answer from one regex (property-tested against it).
        m = _PLAIN_PATH.fullmatch(arg)
        if m is not None and not self.local_part_limit:
            return m.group(1), m.group(2)
        try:
            address, rest = super()._getaddr(arg)
        except Exception:  # e.g. AttributeError on an unclosed `[`: malformed, a 5xx
            return None, None
        if address is not None and '"' in address and '"' not in arg:
            # `<jane\.doe@x>` is a syntax error (RFC 5321 has no quoted-pair outside
            # quotes); aiosmtpd would turn it into a different, quoted mailbox.
            return None, None
        return address, rest

    def set_data_deadline(self, seconds: float | None) -> None:
        """While the upstream takes the message, the client waits: give it time."""
        self._reset_timeout(seconds)


class Guard:
    """The aiosmtpd handler (one for all sessions)."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    # -- helpers ---------------------------------------------------------------

    @property
    def lang(self) -> str:
        return self.ctx.settings.policy.language

    def end_transaction(self, server: GuardSMTP, message_id: str = "") -> None:
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

    async def _drop_upstream(self, server: GuardSMTP, why: str) -> None:
        log.warning("session=%d upstream lost: %s", server.sid, why)
        up, server.upstream = server.upstream, None
        await close_quietly(up, quit=False)

    async def _rset_upstream(self, server: GuardSMTP) -> None:
        up = server.upstream
        if up is None or not up.is_connected:
            return
        try:
            await up.rset()
        except aiosmtplib.SMTPResponseException:
            pass
        except LOST as exc:
            await self._drop_upstream(server, describe(exc))

    async def _upstream_for(self, server: GuardSMTP) -> aiosmtplib.SMTP | str:
        """The session's upstream, connected on first use; a reply text on failure."""
        up = server.upstream
        if up is not None:
            if up.is_connected:
                return up
            server.upstream = None
            await close_quietly(up, quit=False)
        settings = self.ctx.settings
        if settings.server.auth == "passthrough":
            # The upstream session carried the client's login, which cannot be
            # replayed (the password is never kept). Connecting again without
            # it would send unauthenticated: make the client reconnect and log in.
            log.info("session=%d upstream session gone; asking the client to reconnect", server.sid)
            server.close_after_reply()
            return text(self.lang, "relogin")
        pooled = self.ctx.pool.take(settings.upstream, server.loop.time())
        if pooled is not None:
            server.upstream, server.upstream_key, server.upstream_reused = pooled, settings.upstream, True
            return pooled
        try:
            up = await connect(settings.upstream, settings.server.hostname)
        except UpstreamUnavailable as exc:
            log.warning("session=%d upstream %s unreachable: %s", server.sid, settings.upstream.host, exc)
            return text(self.lang, "upstream_down")
        if settings.upstream.username:
            try:
                await up.login(settings.upstream.username, settings.upstream_password())
            except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
                log.error("upstream login as %s failed: %s", settings.upstream.username, describe(exc))
                await close_quietly(up)
                return text(self.lang, "upstream_down")
        server.upstream, server.upstream_key, server.upstream_reused = up, settings.upstream, False
        return up

    # -- greeting --------------------------------------------------------------

    async def handle_EHLO(
        self, server: GuardSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if server.txn is not None:
            self.end_transaction(server)
            await self._rset_upstream(server)
        lines = list(responses[:-1])
        if self.ctx.settings.server.auth == "none":
            lines = [line for line in lines if not line.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]
        server.ehlo_lines = len(lines)
        return lines

    # -- authentication --------------------------------------------------------

    async def auth_PLAIN(self, server: GuardSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Malformed AUTH PLAIN data")
        return await self._authenticate(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: GuardSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth("Username:")
        else:
            try:
                login = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password)

    async def _authenticate(self, server: GuardSMTP, login_b: bytes, password_b: bytes) -> AuthResult:
        settings = self.ctx.settings
        try:
            login, password = login_b.decode("utf-8"), password_b.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Username or password is not UTF-8")
        mode = settings.server.auth
        if mode == "none":
            return AuthResult(success=False, handled=False, message="503 5.5.1 Authentication is not offered here")
        if mode == "local":
            stored = await self.ctx.store.user_hash(login)
            # An unknown user costs the same hash as a known one: the reply
            # time must not tell which names exist.
            ok = (
                await asyncio.get_running_loop().run_in_executor(
                    None, verify_password, password, stored or UNKNOWN_USER_HASH
                )
                and stored is not None
            )
            if not ok:
                log.info("session=%d auth failed for user %s (local)", server.sid, login)
                await asyncio.sleep(1)  # slows guessing; the client waits, nothing else does
                return AuthResult(success=False, handled=False, message=text(self.lang, "auth_failed"))
            server.user = login
            return AuthResult(success=True, auth_data=login)
        # passthrough: the upstream decides; its answer goes back verbatim.
        if server.upstream is not None:
            await close_quietly(server.upstream)
            server.upstream = None
        try:
            up = await connect(settings.upstream, settings.server.hostname)
        except UpstreamUnavailable as exc:
            log.warning("session=%d auth: upstream unreachable: %s", server.sid, exc)
            return AuthResult(success=False, handled=False, message=text(self.lang, "auth_unavailable"))
        try:
            await up.login(login, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            log.info("session=%d auth refused upstream for user %s: %d", server.sid, login, exc.code)
            await close_quietly(up)
            return AuthResult(success=False, handled=False, message=error_reply(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("session=%d auth: upstream failed: %s", server.sid, describe(exc))
            await close_quietly(up)
            return AuthResult(success=False, handled=False, message=text(self.lang, "auth_unavailable"))
        server.upstream, server.upstream_key = up, None  # the user's own login: never pooled
        server.user = login
        log.info("session=%d authenticated as %s (passthrough)", server.sid, login)
        return AuthResult(success=True, auth_data=login)

    # -- transaction -----------------------------------------------------------

    async def handle_MAIL(
        self, server: GuardSMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        try:
            return await self._mail(server, session, envelope, address, mail_options)
        except Exception:
            log.exception("session=%d MAIL failed", server.sid)
            return text(self.lang, "internal")

    async def _mail(
        self, server: GuardSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # trusted_networks stand in for AUTH only with auth = "none": with
        # "local" the relay would otherwise send under its own upstream
        # account for anyone on the machine or LAN.
        if not (session.authenticated or (server.trusted and self.ctx.settings.server.auth == "none")):
            return text(self.lang, "auth_needed")
        if server.txn is not None:
            # A transaction aiosmtpd ended without our DATA hook (oversize
            # message, line too long): the upstream still has it open.
            self.end_transaction(server)
            await self._rset_upstream(server)
        sender = "" if address == "<>" else address
        utf8 = "SMTPUTF8" in options or not sender.isascii()
        while True:
            up = await self._upstream_for(server)
            if isinstance(up, str):
                return up
            if utf8 and not up.supports_extension("smtputf8"):
                return "553 5.6.7 The outgoing mail server does not accept non-ASCII addresses"
            forwarded = [
                o
                for o in options
                if (o.startswith("SIZE=") and up.supports_extension("size"))
                or (o.startswith("BODY=") and up.supports_extension("8bitmime"))
            ]
            if utf8:
                forwarded.append("SMTPUTF8")
            try:
                r = await up.mail(sender, options=forwarded, encoding="utf-8" if utf8 else "ascii")
            except ValueError:
                # aiosmtplib refuses what cannot be a mailbox (spaces, controls);
                # nothing was sent upstream.
                return text(self.lang, "bad_sender", address=address)
            except aiosmtplib.SMTPResponseException as exc:
                return error_reply(exc)
            except LOST as exc:
                reused = server.upstream_reused
                await self._drop_upstream(server, describe(exc))
                if reused:
                    continue  # a pooled session the upstream had closed meanwhile: take a fresh one
                return text(self.lang, "upstream_lost")
            break
        server.upstream_reused = False
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        server.txn = Transaction(sender=sender, utf8=utf8)
        return reply_text(r.code, r.message)

    async def handle_RCPT(
        self, server: GuardSMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            return await self._rcpt(server, envelope, address, rcpt_options)
        except Exception:
            log.exception("session=%d RCPT failed", server.sid)
            return text(self.lang, "internal")

    async def _rcpt(self, server: GuardSMTP, envelope: Envelope, address: str, options: list[str]) -> str:
        settings = self.ctx.settings
        txn = server.txn
        up = server.upstream
        if txn is None or up is None:
            return "503 5.5.1 Send MAIL first"
        if len(envelope.rcpt_tos) >= settings.server.max_recipients:
            return text(self.lang, "too_many")
        try:
            entry = await verdict.check_recipient(self.ctx.store, address)
        except RoutingRefused as exc:
            return text(self.lang, "routing", address=address, why=str(exc))
        except AddressError as exc:
            return text(self.lang, "bad_address", address=address, why=str(exc).rstrip("."))
        except StoreError as exc:
            log.error("session=%d list unreadable, RCPT refused for now: %s", server.sid, exc)
            return text(self.lang, "store_down")
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
                return replies.recipient_refusal(hit, self.lang)
            if mode in ("reject-message", "strip"):
                txn.held.append(hit)
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 Recipient OK"
            txn.events.append(("monitored", hit))
        try:
            encoding = "utf-8" if txn.utf8 or not address.isascii() else "ascii"
            r = await up.rcpt(address, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            return error_reply(exc)
        except LOST as exc:
            await self._drop_upstream(server, describe(exc))
            return text(self.lang, "upstream_lost")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        txn.relayed.append(address)
        return reply_text(r.code, r.message)

    async def handle_DATA(self, server: GuardSMTP, session: Session, envelope: Envelope) -> str:
        try:
            return await self._data(server, envelope)
        except Exception:
            log.exception("session=%d DATA failed", server.sid)
            await self._rset_upstream(server)
            self.end_transaction(server)
            return text(self.lang, "internal")

    async def _data(self, server: GuardSMTP, envelope: Envelope) -> str:
        settings = self.ctx.settings
        txn = server.txn
        up = server.upstream
        if txn is None:
            return "503 5.5.1 Send MAIL first"
        content: bytes = envelope.original_content or b""
        message_id = header_value(content, "Message-ID")
        mode = settings.policy.mode
        if txn.held and mode == "reject-message":
            txn.events += [("rejected", s) for s in txn.held]
            await self._rset_upstream(server)
            self._finish(server, txn, "refused", len(content), message_id)
            return replies.message_refusal(txn.held, self.lang)
        if not txn.relayed or up is None:
            txn.events += [("stripped", s) for s in txn.held]
            await self._rset_upstream(server)
            self._finish(server, txn, "refused", len(content), message_id)
            return replies.all_stripped(txn.held, self.lang)
        if txn.held and settings.policy.rewrite_headers:
            held_keys = {address_key(s.address, settings.matching, strict=False) for s in txn.held}
            content = remove_recipients(content, lambda a: address_key(a, settings.matching, strict=False) in held_keys)
        # aiosmtplib's data() timeout covers upload and reply: scale it with size.
        timeout = settings.upstream.timeout + len(content) / 20_000
        server.in_data = True
        server.set_data_deadline(timeout + 30)
        try:
            r = await up.data(content, timeout=timeout)
        except aiosmtplib.SMTPResponseException as exc:
            await self._rset_upstream(server)
            self._finish(server, txn, f"upstream {exc.code}", len(content), message_id)
            return error_reply(exc)
        except LOST as exc:
            await self._drop_upstream(server, describe(exc))
            self._finish(server, txn, "upstream lost", len(content), message_id)
            return text(self.lang, "upstream_lost")
        finally:
            server.in_data = False
            server.set_data_deadline(None)
        txn.events += [("stripped", s) for s in txn.held]
        if txn.held and settings.policy.notify_sender and txn.sender:
            await self._notify(server, txn, content)
        self._finish(server, txn, f"relayed {r.code}", len(content), message_id)
        return reply_text(r.code, r.message)

    async def _notify(self, server: GuardSMTP, txn: Transaction, content: bytes) -> None:
        """Tell the sender what was stripped, through the same upstream session."""
        up = server.upstream
        if up is None:
            return
        settings = self.ctx.settings
        # The notice is mail the relay sends itself: the list applies to it
        # too. A suppressed (or unreadable) sender gets none; the client's
        # 250 already stands, so skip quietly rather than fail the message.
        try:
            blocked = await verdict.check_address(self.ctx.store, txn.sender)
        except (AddressError, StoreError) as exc:
            log.warning("session=%d sender notice not sent: cannot check <%s>: %s", server.sid, txn.sender, exc)
            return
        if blocked is not None:
            log.info(
                "session=%d sender notice not sent: <%s> is suppressed (%s)", server.sid, txn.sender, blocked.original
            )
            return
        notice = sender_notice(
            txn.sender,
            header_value(content, "Subject"),
            [s.address for s in txn.held],
            self.lang,
            settings.server.hostname,
        )
        try:
            await up.send_message(notice, sender=txn.sender, recipients=[txn.sender])
        except aiosmtplib.SMTPException as exc:
            log.warning("session=%d sender notice not sent: %s", server.sid, describe(exc))
            await self._rset_upstream(server)
        except LOST as exc:
            await self._drop_upstream(server, describe(exc))

    def _finish(self, server: GuardSMTP, txn: Transaction, outcome: str, size: int, message_id: str) -> None:
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
        self.end_transaction(server, message_id)

    async def handle_RSET(self, server: GuardSMTP, session: Session, envelope: Envelope) -> str:
        if server.txn is not None:
            self.end_transaction(server)
            await self._rset_upstream(server)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: GuardSMTP, session: Session, envelope: Envelope) -> str:
        clean = server.txn is None
        self.end_transaction(server)
        up, server.upstream = server.upstream, None
        if up is not None and server.upstream_key is not None and self.ctx.accepting:
            await self.ctx.pool.give(server.upstream_key, up, server.loop.time(), clean=clean)
        else:
            await close_quietly(up)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        # Must be async and return a string (aiosmtpd 1.4.6); 4xx, never a 500.
        log.error("session error: %s: %s", type(error).__name__, error)
        return text(self.lang, "internal")
