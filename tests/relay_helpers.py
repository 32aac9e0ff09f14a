"""Shared pieces of the relay tests: clients, messages, the audit trail.

Every test talks to a real `Relay` over TCP with a real client — stdlib
`smtplib` (blocking, so run in a thread) or `aiosmtplib` — in front of the
real fixture upstream, and checks what the client heard *and* what the
upstream received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import smtplib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from smtpguard.passwords import hash_password
from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import Event, open_store

from .conftest import add_entries
from .smtp_fixtures import Certs, Upstream, relay_settings

T = TypeVar("T")

SENDER = "alice@corp.example"


def message(to: str = "bob@ok.example", cc: str = "", subject: str = "Quarterly offer", mid: str = "m1") -> bytes:
    lines = [f"From: Alice <{SENDER}>", f"To: {to}"]
    if cc:
        lines.append(f"Cc: {cc}")
    lines += [
        f"Subject: {subject}",
        f"Message-ID: <{mid}@corp.example>",
        "",
        "Hello,",
        ".dot line",
        "Bye",
        "",
    ]
    return "\r\n".join(lines).encode()


def as_bytes(text: bytes | str) -> bytes:
    """smtplib's exceptions carry the server's text as bytes, or str when it made it up."""
    return text if isinstance(text, bytes) else text.encode()


def port_of(relay: Relay, index: int = 0) -> int:
    return relay.endpoints[index].port


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def aio(
    relay: Relay, *, login: tuple[str, str] | None = ("alice", "s3cret"), index: int = 0, **kw: Any
) -> aiosmtplib.SMTP:
    """A connected aiosmtplib client (plain, no STARTTLS unless asked), logged in if `login`."""
    kw.setdefault("start_tls", False)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(relay, index), timeout=10, **kw)
    await client.connect()
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if login is not None:
        await client.login(*login)
    return client


def blocking_client(port: int, **kw: Any) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10, **kw)
    s.ehlo("client.test")
    return s


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking smtplib conversation without blocking the relay's loop."""
    return await asyncio.to_thread(fn, *args)


async def as_alice(relay: Relay, talk: Callable[[smtplib.SMTP], T]) -> T:
    """An smtplib conversation logged in as alice (in a thread); QUIT whatever `talk` does."""

    def session() -> T:
        s = blocking_client(port_of(relay))
        try:
            s.login("alice", "s3cret")
            return talk(s)
        finally:
            s.quit()

    return await in_thread(session)


async def audit_events(relay: Relay) -> list[Event]:
    """Stop the relay (which flushes the audit writer) and read the trail back."""
    await relay.stop(deadline=2)
    store = await open_store(relay.ctx.settings.store.path, MatchRules())
    try:
        return await store.events()
    finally:
        await store.close()


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


@asynccontextmanager
async def relay_for(
    up: Upstream,
    tmp: Path,
    certs: Certs,
    blocked: tuple[str, ...] = ("jane.doe@example.com",),
    **sections: dict[str, Any],
) -> AsyncIterator[Relay]:
    """A relay in front of a custom upstream (the `make_relay` fixture uses the default one)."""
    settings = relay_settings(tmp, up, certs, **sections)
    await add_entries(settings.store.path, *blocked)
    relay = await Relay.start(settings)
    try:
        yield relay
    finally:
        await relay.stop(deadline=2)
        if up.server is not None:
            up.server.close()


class Raw:
    """A bare SMTP conversation over asyncio streams, for what clients won't send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ehlo = ""

    @classmethod
    async def open(cls, relay: Relay, *, login: tuple[str, str] | None = ("alice", "s3cret")) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay))
        raw = cls(reader, writer)
        assert (await raw.reply()).startswith("220 ")
        raw.ehlo = await raw.cmd("EHLO client.test")
        if login is not None:
            blob = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode()).decode()
            assert (await raw.cmd(f"AUTH PLAIN {blob}")).startswith("235 ")
        return raw

    async def reply(self) -> str:
        """One (possibly multi-line) reply, lines joined with \\n."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode("utf-8", "replace")
            if not line:
                raise ConnectionError("closed by the relay")
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def mail_reply(relay: Relay) -> tuple[int, bytes]:
    """What a plain client without AUTH hears for its MAIL FROM (smtplib, in a thread)."""

    def session() -> tuple[int, bytes]:
        s = blocking_client(port_of(relay))
        try:
            return s.mail(SENDER)
        finally:
            s.quit()

    return await in_thread(session)


async def local_relay(make_relay: Callable[..., Awaitable[Relay]], tmp_path: Path, **server: object) -> Relay:
    """A relay with `auth = "local"` (account bob.sales / hunter2) sending as the upstream's `relay` account."""
    store = await open_store(tmp_path / "list.db", MatchRules())
    try:
        await store.set_user("bob.sales", hash_password("hunter2"))
    finally:
        await store.close()
    pw = tmp_path / "upstream.pw"
    pw.write_text("relaypw\n")
    return await make_relay(server={"auth": "local", **server}, upstream={"username": "relay", "password_file": pw})


async def smtplib_data(relay: Relay, rcpts: list[str], content: bytes) -> tuple[int, bytes]:
    """Log in as alice with smtplib, have every recipient accepted, send; the DATA reply."""

    def session() -> tuple[int, bytes]:
        s = blocking_client(port_of(relay))
        try:
            s.login("alice", "s3cret")
            s.mail(SENDER)
            for rcpt in rcpts:
                assert s.rcpt(rcpt)[0] == 250
            return s.data(content)
        finally:
            s.quit()

    return await in_thread(session)
