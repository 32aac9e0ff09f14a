"""ENHANCEDSTATUSCODES: advertised, and then true of every reply (RFC 2034)."""

from __future__ import annotations

import asyncio

from smtpguard.replies import with_enhanced_code

from .conftest import RelayFactory
from .smtp_fixtures import raw_command


def test_with_enhanced_code() -> None:
    assert with_enhanced_code("250 OK") == "250 2.0.0 OK"
    assert with_enhanced_code("503 Error: need RCPT command") == "503 5.5.1 Error: need RCPT command"
    assert with_enhanced_code("550 5.1.1 <x@y>: unknown") == "550 5.1.1 <x@y>: unknown"  # kept
    assert with_enhanced_code("250-first\r\n250 last") == "250-2.0.0 first\r\n250 2.0.0 last"
    assert with_enhanced_code("354 End data with <CR><LF>.<CR><LF>") == "354 End data with <CR><LF>.<CR><LF>"
    assert with_enhanced_code("452 too many") == "452 4.0.0 too many"


async def test_every_reply_after_ehlo_has_an_enhanced_code(make_relay: RelayFactory) -> None:
    relay = await make_relay(server={"auth": "none"})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.endpoints[0].port)
    greeting = await reader.readline()
    assert greeting.startswith(b"220 relay.test ")  # the greeting comes before EHLO: no code
    ehlo = (await raw_command(reader, writer, b"EHLO client.test")).decode().splitlines()
    assert "250-ENHANCEDSTATUSCODES" in ehlo and "250-PIPELINING" in ehlo
    assert ehlo[-1] == "250 HELP" and not any(".0.0" in line for line in ehlo)  # keywords untouched
    assert await raw_command(reader, writer, b"NOOP") == b"250 2.0.0 OK\r\n"
    assert (await raw_command(reader, writer, b"DATA")).startswith(b"503 5.5.1 ")
    assert (await raw_command(reader, writer, b"BOGUS")).startswith(b"500 5.5.2 ")
    assert (await raw_command(reader, writer, b"MAIL FROM:<a@corp.example>")).startswith(b"250 2.")
    assert (await raw_command(reader, writer, b"RCPT TO:<jane.doe@example.com>")).startswith(b"550 5.7.1 ")
    assert await raw_command(reader, writer, b"QUIT") == b"221 2.0.0 Bye\r\n"
    writer.close()
