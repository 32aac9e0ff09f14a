from __future__ import annotations

import aiosmtplib
import pytest

from .conftest import RelayFactory
from .smtp_fixtures import Upstream

MSG = (
    b"From: alice@corp.example\r\nTo: bob@ok.example, jane.doe@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m1@corp.example>\r\n\r\nHello\r\n"
)


async def test_reject_mode_passthrough(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    port = relay.endpoints[0].port
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    await client.login("alice", "s3cret")
    await client.mail("alice@corp.example")
    r = await client.rcpt("bob@ok.example")
    assert r.code == 250
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
        await client.rcpt("Jane.Doe+news@Example.com")
    assert exc.value.code == 550
    assert "Jane.Doe+news@Example.com" in exc.value.message
    assert "2026-10-03" in exc.value.message and "lemlist" in exc.value.message
    r = await client.data(MSG)
    assert r.code == 250 and "queued as Q1" in r.message
    await client.quit()
    assert len(upstream.received) == 1
    got = upstream.received[0]
    assert got.rcpt_tos == ["bob@ok.example"]
    assert got.user == "alice"
    assert got.content == MSG
