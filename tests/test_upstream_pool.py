"""The upstream pool with a real upstream: reuse, staleness, dirty sessions, closing."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from smtpguard.config import UpstreamSettings
from smtpguard.smtp.pool import UpstreamPool
from smtpguard.smtp.upstream import connect

from .smtp_fixtures import Certs, Upstream


@pytest.fixture
def settings(upstream: Upstream, certs: Certs) -> UpstreamSettings:
    return UpstreamSettings(host="localhost", port=upstream.port, ca_file=certs.ca_file, timeout=5)


async def test_reuse_only_fresh_sessions_for_the_same_settings(settings: UpstreamSettings, upstream: Upstream) -> None:
    pool = UpstreamPool(size=2, max_idle=30)
    a = await connect(settings, "relay.test")
    await pool.give(settings, a, now=100.0, clean=True)
    assert len(pool) == 1
    assert pool.take(replace(settings, port=1), now=101.0) is None  # other settings (a reload)
    assert len(pool) == 0 and not a.is_connected  # ... and the old session is closed

    b = await connect(settings, "relay.test")
    await pool.give(settings, b, now=200.0, clean=True)
    assert pool.take(settings, now=231.0) is None and not b.is_connected  # idle too long

    c = await connect(settings, "relay.test")
    await pool.give(settings, c, now=300.0, clean=True)
    assert pool.take(settings, now=301.0) is c
    # A reused session works: a whole transaction goes through.
    await c.sendmail("relay@corp.example", ["bob@ok.example"], b"Subject: reused\r\n\r\nhi\r\n")
    assert len(upstream.received) == 1
    await pool.close()
    c.close()


async def test_dirty_session_is_reset_and_pool_size_is_capped(settings: UpstreamSettings, upstream: Upstream) -> None:
    pool = UpstreamPool(size=1)
    dirty = await connect(settings, "relay.test")
    await dirty.mail("relay@corp.example")  # a client vanished mid-transaction
    await pool.give(settings, dirty, now=0.0, clean=False)
    extra = await connect(settings, "relay.test")
    await pool.give(settings, extra, now=0.0, clean=True)  # over size: closed
    assert not extra.is_connected
    again = pool.take(settings, now=1.0)
    assert again is dirty
    await again.mail("relay@corp.example")  # no "nested MAIL": the RSET happened
    await pool.give(settings, again, now=2.0, clean=False)
    await pool.close()  # a stop closes what is idle
    assert len(pool) == 0 and not again.is_connected


async def test_session_closed_by_the_upstream_is_not_reused(settings: UpstreamSettings, upstream: Upstream) -> None:
    pool = UpstreamPool()
    s = await connect(settings, "relay.test")
    await pool.give(settings, s, now=0.0, clean=True)
    upstream.drop_sessions()
    for _ in range(50):  # the close reaches aiosmtplib's protocol on the next loop turns
        if not s.is_connected:
            break
        await asyncio.sleep(0.02)
    assert pool.take(settings, now=1.0) is None
