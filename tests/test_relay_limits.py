"""Whole-session limit: a client trickling bytes cannot hold a session for ever."""

from __future__ import annotations

import asyncio

import pytest

from smtpguard.smtp import session as session_module

from .conftest import RelayFactory
from .smtp_fixtures import Upstream, raw_command


async def test_session_limit_spares_a_transaction_then_closes(
    make_relay: RelayFactory, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "SESSION_LIMIT", 1.0)
    monkeypatch.setattr(session_module, "SESSION_LIMIT_RECHECK", 0.2)
    relay = await make_relay(server={"auth": "none"})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.endpoints[0].port)

    assert (await reader.readline()).startswith(b"220")
    assert (await raw_command(reader, writer, b"EHLO trickle.test")).startswith(b"250")
    assert (await raw_command(reader, writer, b"MAIL FROM:<alice@corp.example>")).startswith(b"250")
    assert (await raw_command(reader, writer, b"RCPT TO:<bob@ok.example>")).startswith(b"250")
    assert (await raw_command(reader, writer, b"DATA")).startswith(b"354")
    # Past the limit, in the middle of the message: not cut.
    for part in (b"Subject: slow\r\n", b"\r\n", b"one\r\n", b"two\r\n"):
        writer.write(part)
        await asyncio.sleep(0.4)
    assert (await raw_command(reader, writer, b".")).startswith(b"250 ")
    assert len(upstream.received) == 1
    # The transaction is over: the next check of the limit ends the session.
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest == b"421 4.4.2 Session too long, please reconnect\r\n"
    writer.close()
