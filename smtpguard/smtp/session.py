"""The SMTP protocol side of one client connection: aiosmtpd's SMTP, adjusted.

Every override of aiosmtpd 1.4.6 internals lives here and nowhere else
(`_getaddr`, `push`, `_timeout_cb`, `_reset_timeout`, `data_received`, `connection_made`,
`connection_lost`, `_call_handler_hook`, `smtp_STARTTLS`, `smtp_DATA`, and on the gateway
listener `smtp_AUTH`, `smtp_MAIL`/`smtp_RCPT` (DSN parameters), `__dir__` (what it
builds its per-connection tables from), and a filter on its logger that keeps
passwords out); what the relay *decides* lives in
the handler's modules (auth, transaction, recipient).  See the notes on
aiosmtpd for the behaviours these work around.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, AnyStr, cast

import aiosmtplib
from aiosmtpd.smtp import SMTP, syntax

from smtpguard import replies
from smtpguard.replies import with_enhanced_code
from smtpguard.smtp import dsn
from smtpguard.smtp.context import RelayContext, Transaction
from smtpguard.smtp.maillog import guard_mail_log
from smtpguard.smtp.pool import UpstreamKey
from smtpguard.smtp.spool import Outcome, Spool, receive
from smtpguard.suppression.addresses import PLAIN_MAILBOX

if TYPE_CHECKING:
    from smtpguard.smtp.handler import RelayHandler

_session_ids = itertools.count(1)


def number_sessions(first: int, step: int) -> None:
    """Worker `first` of `step` (runtime/workers.py) numbers first, first+step, ...: unique across workers."""
    global _session_ids
    _session_ids = itertools.count(first, step)


# `<dot-atom@host.name> params`: the path most clients send (see RelaySession._getaddr).
# What follows it must not open a comment or fold a line: aiosmtpd's parser
# reads those as CFWS and drops them, so they take the slow path to agree.
_PLAIN_PATH = re.compile(rf"[ \t]*<({PLAIN_MAILBOX})>[ \t]*((?:[^(\r\n].*)?)", re.S)
# An RFC 2047 encoded-word, loosely: Python's header parser (aiosmtpd, and an
# upstream built on it) would decode `=?utf-8?q?jane.doe?=` to `jane.doe`,
# after the list was checked for the literal text. Never valid in a path.
log = logging.getLogger("smtpguard.relay")
# Python's e-mail parser (aiosmtpd's slow path, and many upstreams) decodes
# RFC 2047 words leniently, even `=??q?=` with an empty charset and shared
# `?`: any `=?` in a path is refused rather than guessed at.
ENCODED_WORD = re.compile(r"=\?")
_MALFORMED = "553 5.1.3 Error: malformed address"  # aiosmtpd's reply when _getaddr gives None
SESSION_LIMIT = 3600.0  # seconds one connection may last, whatever it does
SESSION_LIMIT_RECHECK = 30.0  # then, while a transaction is open, look again this often


def is_trusted(client_ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether the client address is in `trusted_networks` (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(client_ip.split("%")[0])
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return any(ip in n for n in networks)


def writable(transport: asyncio.BaseTransport | None) -> asyncio.WriteTransport | None:
    """The transport, if a reply can still be written to it.

    Duck-typed: uvloop's transports are not asyncio.WriteTransport subclasses,
    and an isinstance test silently skipped every such reply under uvloop.
    """
    if transport is None or transport.is_closing() or not hasattr(transport, "write"):
        return None
    return cast("asyncio.WriteTransport", transport)


_DISPATCHED: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def dispatched(cls: type, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The names of `cls` aiosmtpd looks up by prefix (see `RelaySession.__dir__`), once per class."""
    names = _DISPATCHED.get((cls, prefixes))
    if names is None:
        names = _DISPATCHED[cls, prefixes] = tuple(name for name in dir(cls) if name.startswith(prefixes))
    return names


class RelaySession(SMTP):
    """One client connection: aiosmtpd's protocol with per-connection state and an idle timeout."""

    def __dir__(self) -> Iterable[str]:
        # aiosmtpd 1.4.6 builds its command and AUTH tables from dir() and
        # inspect.getmembers() of the session and of the handler for every
        # connection, reading every property on the way: ~150 µs a connection
        # (4% of the relay's CPU). Listing only the names it looks for gives
        # it the same tables.
        return dispatched(type(self), ("smtp_", "auth_"))

    def __init__(
        self, handler: RelayHandler, ctx: RelayContext, *, implicit_tls: bool = False, gateway: bool = False, **kw: Any
    ) -> None:
        guard_mail_log()
        super().__init__(handler, **kw)
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.gateway = gateway  # the gateway listener: MTAs, no AUTH, DSN (smtp/gateway.py)
        self.dsn_mail: tuple[str, ...] = ()  # DSN parameters of the MAIL / RCPT line being handled
        self.dsn_rcpt: tuple[str, ...] = ()
        self.sid = next(_session_ids)
        self.upstream: aiosmtplib.SMTP | None = None
        # Set when `upstream` is the relay's own account (auth local/none), so
        # it may go back to the pool; `upstream_reused` until its first MAIL.
        self.upstream_key: UpstreamKey | None = None
        self.upstream_reused = False
        self.user = ""
        self.client_ip = ""
        self.txn: Transaction | None = None
        self.in_data = False  # a message is being handed to the upstream
        self.busy = 0  # a hook is running: its reply is not written yet
        self.ehlo_lines = 0  # lines of an EHLO reply still to be pushed as they are
        self._ehlo_reply: list[str] = []
        self._lifetime: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0  # loop time the idle timeout is due (see _reset_timeout)
        self._idle_timer_at = math.inf  # when the live idle timer fires; inf: none live
        self._path_refusal = ""  # our reply for the path _getaddr just refused
        self.message: Spool | None = None  # the message DATA received, while the DATA hook runs

    @property
    def trusted(self) -> bool:
        """In `trusted_networks` as configured *now* (a reload narrowing them applies at once)."""
        return is_trusted(self.client_ip, self.ctx.settings.server.trusted_networks)

    @property
    def lang(self) -> str:
        return self.ctx.settings.policy.language

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer and not self.client_ip:
            self.client_ip = str(peer[0])
        if self not in self.ctx.sessions:  # connection_made runs again after STARTTLS
            server = self.ctx.settings.server
            if (
                len(self.ctx.sessions) >= server.max_connections
                or self.ctx.per_client[self.client_ip] >= server.max_connections_per_client
            ):
                log.warning("connection refused: too many connections (client=%s)", self.client_ip)
                self.say_and_close(replies.TOO_MANY_CONNECTIONS.say(self.lang))
                return
            self.ctx.per_client[self.client_ip] += 1
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
        self.say_and_close(replies.SESSION_TOO_LONG.say(self.lang))

    def say_and_close(self, line: str) -> None:
        """Write one reply line outside any command (timeouts, shutdown), then hang up."""
        transport = writable(self.transport)
        if transport is not None:
            transport.write(line.encode() + b"\r\n")
            transport.close()

    def data_received(self, data: bytes) -> None:
        # aiosmtpd's timer restarts only per command line, so a long upload
        # would be cut mid-DATA; restart it on any byte instead.
        if self._timeout_handle is not None and not self.in_data:
            self._reset_timeout()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self.ctx.sessions:
            self.ctx.sessions.discard(self)
            self.ctx.per_client[self.client_ip] -= 1
            if self.ctx.per_client[self.client_ip] <= 0:
                del self.ctx.per_client[self.client_ip]
        if self._lifetime is not None:
            self._lifetime.cancel()
        handler: RelayHandler = self.event_handler
        clean = self.txn is None and not self.in_data and not self.busy
        handler.end_transaction(self)
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

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels its timer and makes a new one for every command line,
        # and data_received here for every read: ~25 timers a message. Move the
        # deadline instead; a timer that fires before it waits on (_idle_due).
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and self._idle_timer_at <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._idle_due)
        self._idle_timer_at = deadline

    def _idle_due(self) -> None:
        self._idle_timer_at = math.inf
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_due)
            self._idle_timer_at = self._idle_deadline
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        # aiosmtpd just hangs up; say why first (RFC 5321 4.1.1.10 / 3.8).
        transport = writable(self.transport)
        if transport is not None:
            transport.write(replies.IDLE.say(self.lang).encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd offers STARTTLS again once TLS is up, and a second
        # handshake inside the first fails with a logged traceback (RFC 3207:
        # "MUST NOT" be issued twice).
        if self._tls_protocol is not None or self.implicit_tls:
            await self.push("503 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own reads the message line by line into memory (see
        # spool.py); the checks before 354 and the replies after are its own.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = Spool(self.ctx.settings.store.path.parent)  # the state directory, next to the list
        status = ""
        try:
            outcome = await receive(
                self._reader, spool, size_limit=self.data_size_limit, line_limit=self.line_length_limit
            )
            if outcome is Outcome.OK:
                self.message = spool
                status = await self._call_handler_hook("DATA")
        finally:
            self.message = None
            spool.close()  # also when the client vanished mid-DATA (this task is cancelled)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        if outcome is Outcome.TOO_LONG:
            status = "500 Line too long (see RFC5321 4.5.3.1.6)"
        elif outcome is Outcome.TOO_MUCH:
            status = "552 Error: Too much mail data"  # reworded by push()
        elif outcome is Outcome.NO_SPACE:
            status = replies.NO_SPOOL_SPACE.say(self.lang)
        await self.push(status)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            reworded = self._reword(status)
            if reworded is None:
                return
            await super().push(reworded)
        else:
            await super().push(status)

    def _reword(self, status: str) -> str | None:
        """The reply as we send it; None while EHLO lines are being gathered."""
        # aiosmtpd's own size refusals ("552 Error: Too much mail data", at
        # MAIL for SIZE= and after DATA) carry no enhanced code and no advice.
        if status.startswith("552 Error:"):
            status = replies.TOO_BIG.say(self.lang, limit=replies.size_text(self.data_size_limit or 0))
        elif status == _MALFORMED and self._path_refusal:
            status, self._path_refusal = self._path_refusal, ""
        if not status.isascii():
            # Replies that echo the client's address carry its invalid UTF-8
            # bytes as lone surrogates (aiosmtpd decodes with surrogateescape);
            # encoding them would raise, and the client would get a 451
            # "something went wrong" instead of the 5xx meant for it. Show such
            # bytes as \xNN instead.
            status = status.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if self.ehlo_lines:
            # EHLO keyword lines carry no status code; aiosmtpd pushes them one
            # write (one send()) each: gather them into one.
            self.ehlo_lines -= 1
            self._ehlo_reply.append(status)
            if self.ehlo_lines:
                return None
            status, self._ehlo_reply = "\r\n".join(self._ehlo_reply), []
        elif self.session is not None and self.session.extended_smtp:
            status = with_enhanced_code(status)  # we advertise ENHANCEDSTATUSCODES
        return status

    def close_after_reply(self) -> None:
        """Hang up once the reply being returned is written (it is, in this loop step)."""
        transport = self.transport
        if transport is not None:
            self.loop.call_soon(transport.close)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if ENCODED_WORD.search(arg):
            # Refused in every parser path: both would hand on a decoded name.
            shown = arg.strip().split(">", 1)[0].lstrip("<")
            self._path_refusal = replies.ENCODED_WORD.say(self.lang, address=shown)
            return None, None
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

    @property
    def peercert(self) -> dict[str, Any] | None:
        """The client certificate the STARTTLS handshake verified, if any."""
        info = self.session.ssl if self.session is not None else None
        return info.get("peercert") if info else None

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self.gateway:  # trust comes from the network or the certificate, never a password
            await self.push(replies.GATEWAY_NO_AUTH.say(self.lang))
            return
        await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        self.dsn_mail = ()
        if self.gateway:
            taken = await self._dsn_or_refuse(arg, "FROM:", dsn.MAIL_KEYS)
            if taken is None:
                return
            arg, self.dsn_mail = taken
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        self.dsn_rcpt = ()
        if self.gateway:
            taken = await self._dsn_or_refuse(arg, "TO:", dsn.RCPT_KEYS)
            if taken is None:
                return
            arg, self.dsn_rcpt = taken
        await super().smtp_RCPT(arg)

    async def _dsn_or_refuse(
        self, arg: str | None, keyword: str, keys: frozenset[str]
    ) -> tuple[str | None, tuple[str, ...]] | None:
        """`_take_dsn`, or None once a bad DSN parameter has been answered."""
        try:
            return self._take_dsn(arg, keyword, keys)
        except dsn.DsnError as exc:
            await self.push(replies.BAD_DSN.say(self.lang, why=str(exc)))
            return None

    def _take_dsn(self, arg: str | None, keyword: str, keys: frozenset[str]) -> tuple[str | None, tuple[str, ...]]:
        """The line without its DSN parameters (aiosmtpd answers them 555), and those
        parameters checked (DsnError); a line we cannot split goes on as it came."""
        if arg is None or self.session is None or not self.session.extended_smtp:
            return arg, ()
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            return arg, ()
        address, params = self._getaddr(rest)
        self._path_refusal = ""  # aiosmtpd parses the path again and sets it afresh
        if not address or not params or not rest.endswith(params):
            return arg, ()
        others, taken = dsn.take(params, keys)
        return f"{keyword}{rest[: len(rest) - len(params)].rstrip()} {others}".rstrip(), taken

    def set_data_deadline(self, seconds: float | None) -> None:
        """While the upstream takes the message, the client waits: give it time."""
        self._reset_timeout(seconds)
