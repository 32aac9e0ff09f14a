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


async def _banner(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.wait_for(reader.readline(), 5), writer


@pytest.mark.parametrize(
    "limits",
    [
        {"max_connections_per_client": 3, "max_connections": 100},
        {"max_connections_per_client": 50, "max_connections": 3},
    ],
)
async def test_idle_connections_are_capped_with_a_clear_421(
    make_relay: RelayFactory, upstream: Upstream, limits: dict[str, int]
) -> None:
    """Issue 8 item 6: ~1,000 idle sockets locked everyone out. Past the cap a client hears 421 at once,
    and a place freed is a place taken again."""
    relay = await make_relay(server={"auth": "none", **limits})
    port = relay.endpoints[0].port
    held = [await _banner(port) for _ in range(3)]
    assert all(line.startswith(b"220") for line, _ in held)
    refused, writer = await _banner(port)
    assert refused.startswith(b"421 4.7.0 Too many connections"), refused
    writer.close()
    held[0][1].close()
    for _ in range(100):  # the relay notices the hang-up on its next loop turn
        if len(relay.ctx.sessions) < 3:
            break
        await asyncio.sleep(0.01)
    again, writer = await _banner(port)
    assert again.startswith(b"220"), again
    for _, w in [*held[1:], (again, writer)]:
        w.close()
