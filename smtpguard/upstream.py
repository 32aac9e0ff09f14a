"""The real outgoing server: connect, TLS, AUTH replay, reply mapping (aiosmtplib)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aiosmtplib

from .config import Settings, UpstreamSettings


class UpstreamUnavailable(Exception):
    """Could not reach or set up the upstream session (connect, TLS, EHLO)."""


def client_tls_context(up: UpstreamSettings) -> ssl.SSLContext:
    """Verification on by default; `ca_file` for a private CA."""
    ctx = ssl.create_default_context(cafile=str(up.ca_file) if up.ca_file else None)
    if not up.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def new_client(up: UpstreamSettings, local_hostname: str) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=up.host,
        port=up.port,
        timeout=up.timeout,
        use_tls=up.security == "tls",
        start_tls=up.security == "starttls",
        tls_context=client_tls_context(up) if up.security != "none" else None,
        local_hostname=local_hostname,
    )


async def connect(up: UpstreamSettings, local_hostname: str) -> aiosmtplib.SMTP:
    """An upstream session past greeting, TLS and EHLO, or UpstreamUnavailable."""
    client = new_client(up, local_hostname)
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        client.close()
        raise UpstreamUnavailable(describe(exc)) from None
    return client


def describe(exc: BaseException) -> str:
    """A short log-friendly text of a client-side failure (never credentials)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def reply_text(code: int, message: str) -> str:
    """The upstream's reply, reframed for our client (multi-line kept, no bare CR/LF)."""
    if not 200 <= code <= 599:
        code = 451
    lines = [line.strip("\r") for line in message.split("\n")] or [""]
    out = [f"{code}-{line}" for line in lines[:-1]]
    out.append(f"{code} {lines[-1]}")
    return "\r\n".join(out)


def error_reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return reply_text(exc.code, exc.message)


async def close_quietly(client: aiosmtplib.SMTP | None, *, quit: bool = True) -> None:
    """QUIT politely when we can, close in any case; never raises."""
    if client is None:
        return
    try:
        if quit and client.is_connected:
            await client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


async def probe(settings: Settings, say: Callable[[str], None]) -> bool:
    """`config check`: connect, TLS, EHLO (and a login with the relay's own account)."""
    up = settings.upstream
    say(f"upstream {up.host}:{up.port} security={up.security}: connecting …")
    try:
        client = await connect(up, settings.server.hostname)
    except UpstreamUnavailable as exc:
        say(f"upstream: FAILED: {exc}")
        return False
    ok = True
    try:
        tls = client.get_transport_info("ssl_object")
        say(f"upstream: connected, TLS {tls.version() if tls else 'not used'}")
        exts = sorted(client.esmtp_extensions)
        say(f"upstream: EHLO ok, extensions: {', '.join(exts) or 'none'}")
        if settings.server.auth in ("local", "none") and up.username:
            try:
                await client.login(up.username, settings.upstream_password())
                say(f"upstream: login as {up.username}: ok")
            except aiosmtplib.SMTPException as exc:
                say(f"upstream: login as {up.username}: FAILED: {describe(exc)}")
                ok = False
        elif settings.server.auth == "passthrough":
            auth = client.esmtp_extensions.get("auth", "")
            say(f"upstream: AUTH mechanisms for passthrough: {auth or 'none advertised'}")
    finally:
        await close_quietly(client)
    return ok


_Idle = tuple[float, UpstreamSettings, aiosmtplib.SMTP]  # (idle since, settings, session)


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

    def take(self, up: UpstreamSettings, now: float) -> aiosmtplib.SMTP | None:
        """The freshest idle session for these settings, or None (stale ones are closed)."""
        keep: list[_Idle] = []
        stale: list[_Idle] = []
        for item in self._idle:
            since, settings, client = item
            usable = settings == up and now - since < self.max_idle and client.is_connected
            (keep if usable else stale).append(item)
        for _, _, client in stale:
            client.close()
        found = keep.pop()[2] if keep else None  # the most recently used
        self._idle = keep
        return found

    async def give(self, up: UpstreamSettings, client: aiosmtplib.SMTP, now: float, *, clean: bool) -> None:
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

    def give_soon(self, up: UpstreamSettings, client: aiosmtplib.SMTP, now: float) -> None:
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
