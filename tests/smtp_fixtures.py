"""A real upstream SMTP server for tests, and a relay wired to it.

The upstream is aiosmtpd on loopback with real TLS (trustme), real AUTH,
and answers chosen per test (refuse a recipient, fail DATA, go silent).
It records exactly what it received, so tests assert both sides.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from smtpguard.config import (
    Endpoint,
    PolicySettings,
    ServerSettings,
    Settings,
    StoreSettings,
    UpstreamSettings,
)
from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    user: str | None


@dataclass
class Upstream:
    """Knobs a test can turn, and what the server saw."""

    users: dict[str, str] = field(default_factory=lambda: {"alice": "s3cret", "relay": "relaypw"})
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str | None = None  # e.g. "554 5.7.1 Spam"
    data_delay: float = 0.0
    hangup_at_mail: int = 0  # hang up, without a reply, on the next N MAIL commands
    hangup_at_rcpt: set[str] = field(default_factory=set)  # hang up, without a reply, at RCPT to these
    refuse_rset: str | None = None  # e.g. "500 5.5.1 no" (the session is left as it was)
    received: list[Received] = field(default_factory=list)
    rcpt_seen: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    rsets: int = 0  # RSET commands seen
    connections: int = 0  # sessions opened
    open_sessions: int = 0  # sessions still connected
    live: list[SMTP] = field(default_factory=list)  # the connected sessions
    port: int = 0
    server: asyncio.Server | None = None

    def drop_sessions(self) -> None:
        """Hang up on every connected client, as a server with an idle timeout does."""
        for proto in list(self.live):
            if proto.transport is not None:
                proto.transport.close()

    # aiosmtpd handler hooks
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.hangup_at_mail:
            self.hangup_at_mail -= 1
            assert server.transport is not None
            server.transport.close()  # a server that timed the idle session out just now
            return "421 4.4.2 gone"  # never reaches the client: the connection is closed
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.append(address)
        if address in self.hangup_at_rcpt:
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 gone"  # never reaches the client
        if address in self.refuse_rcpt:
            reply = self.refuse_rcpt[address]
            if reply.startswith("2"):  # e.g. 252: accepted all the same
                envelope.rcpt_tos.append(address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.rsets += 1
        return self.refuse_rset or "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        user = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b"", user)
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        login = data.login.decode()
        if self.users.get(login) == data.password.decode():
            self.logins.append(login)
            return AuthResult(success=True, auth_data=LoginPassword(data.login, b""))
        return AuthResult(success=False, handled=False, message="535 5.7.8 upstream says: bad credentials")


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.ca_file = tmp / "ca.pem"
        self.cert_file = tmp / "cert.pem"
        self.key_file = tmp / "key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert_file), append=True)
        cert.private_key_pem.write_to_path(str(self.key_file))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


class _CountingSMTP(SMTP):
    """Keeps `Upstream.connections` / `open_sessions` up to date."""

    counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.counted:  # called again with the TLS transport after STARTTLS
            self.counted = True
            self.event_handler.connections += 1
            self.event_handler.open_sessions += 1
            self.event_handler.live.append(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.event_handler.open_sessions -= 1
        if self in self.event_handler.live:
            self.event_handler.live.remove(self)
        super().connection_lost(exc)


async def serve_smtp(
    handler: Any, *, smtp_class: type[SMTP] = SMTP, ssl: ssl.SSLContext | None = None, **options: Any
) -> tuple[asyncio.Server, int]:
    """aiosmtpd on 127.0.0.1:<free port>, a `smtp_class(handler, **options)` per connection; the server, its port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: smtp_class(handler, loop=loop, **options), "127.0.0.1", 0, ssl=ssl)
    return server, server.sockets[0].getsockname()[1]


async def start_upstream(up: Upstream, certs: Certs, security: str = "starttls") -> Upstream:
    tls = certs.server_context()
    up.server, up.port = await serve_smtp(
        up,
        smtp_class=_CountingSMTP,
        ssl=tls if security == "tls" else None,
        hostname="upstream.test",
        enable_SMTPUTF8=True,
        authenticator=up.authenticate,
        auth_require_tls=security != "tls",
        tls_context=tls if security == "starttls" else None,
        require_starttls=security == "starttls",
    )
    return up


def with_sections(s: Settings, **sections: dict[str, Any]) -> Settings:
    """`s` with fields of its sections replaced: `with_sections(s, policy={"mode": "strip"})`."""
    for name, values in sections.items():
        s = replace(s, **{name: replace(getattr(s, name), **values)})
    return s


def settings_for(store: Path, upstream: UpstreamSettings, /, **sections: dict[str, Any]) -> Settings:
    """Settings for a relay on 127.0.0.1:<free port> in front of `upstream`; `sections` replace fields."""
    server = ServerSettings(listen=Endpoint("127.0.0.1", 0), hostname="relay.test", timeout=30)
    s = Settings(
        server=server, upstream=upstream, policy=PolicySettings(), store=StoreSettings(store), matching=MatchRules()
    )
    return with_sections(s, **sections)


def relay_settings(tmp: Path, up: Upstream, certs: Certs, **sections: dict[str, Any]) -> Settings:
    """Settings for a relay on 127.0.0.1:<free port> in front of `up`."""
    upstream = UpstreamSettings(host="localhost", port=up.port, security="starttls", ca_file=certs.ca_file, timeout=10)
    return settings_for(tmp / "list.db", upstream, **sections)


async def start_relay(settings: Settings) -> Relay:
    return await Relay.start(settings)


class StartedRelays:
    """The relays a fixture started, stopped together when its test ends."""

    def __init__(self) -> None:
        self.relays: list[Relay] = []

    def __len__(self) -> int:
        return len(self.relays)

    async def start(self, settings: Settings) -> Relay:
        relay = await Relay.start(settings)
        self.relays.append(relay)
        return relay

    async def stop_all(self) -> None:
        for relay in self.relays:
            await relay.stop(deadline=2)


async def raw_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    """Send one command line, return the whole (possibly multi-line) reply."""
    writer.write(line + b"\r\n")
    reply = b""
    while True:
        got = await asyncio.wait_for(reader.readline(), 10)
        reply += got
        if got[3:4] != b"-":
            return reply
