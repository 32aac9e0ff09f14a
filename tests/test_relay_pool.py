"""Upstream sessions of the relay's own account are reused across client sessions."""

from __future__ import annotations

import asyncio

from smtpguard.runtime.server import Relay

from .conftest import RelayFactory
from .relay_helpers import SENDER, aio, message, wait_for
from .smtp_fixtures import Upstream


async def send_one(relay: Relay, to: str, mid: str, *, quit: bool = True, login: tuple[str, str] | None = None) -> None:
    c = await aio(relay, login=login)
    errors, reply = await c.sendmail(SENDER, [to], message(to=to, mid=mid))
    assert errors == {} and "queued as" in reply
    if quit:
        await c.quit()
    else:
        c.close()  # the client just hangs up


async def test_one_upstream_session_serves_successive_clients(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    await send_one(relay, "a@ok.example", "m1")
    await send_one(relay, "b@ok.example", "m2", quit=False)
    await asyncio.sleep(0.1)  # the hang-up reaches the relay
    await send_one(relay, "c@ok.example", "m3")
    assert [r.rcpt_tos for r in upstream.received] == [["a@ok.example"], ["b@ok.example"], ["c@ok.example"]]
    assert upstream.connections == 1 and upstream.open_sessions == 1 and len(relay.ctx.pool) == 1
    await relay.stop(deadline=2)  # a stop closes the pooled session
    assert await wait_for(lambda: upstream.open_sessions == 0)


async def test_a_transaction_left_open_is_reset_before_reuse(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    c = await aio(relay, login=None)
    await c.mail(SENDER)
    await c.rcpt("a@ok.example")
    await c.quit()  # gave up before DATA
    await send_one(relay, "b@ok.example", "m2")  # no "503 nested MAIL" from the upstream
    assert [r.rcpt_tos for r in upstream.received] == [["b@ok.example"]]
    assert upstream.connections == 1


async def test_a_pooled_session_the_upstream_closed_is_replaced(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    await send_one(relay, "a@ok.example", "m1")
    upstream.drop_sessions()  # the upstream's idle timeout, while the session sat in the pool
    await send_one(relay, "b@ok.example", "m2")  # the client sees nothing of it
    assert [r.rcpt_tos for r in upstream.received] == [["a@ok.example"], ["b@ok.example"]]
    assert upstream.connections == 2


async def test_a_pooled_session_lost_at_mail_is_retried_once(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    await send_one(relay, "a@ok.example", "m1")
    upstream.hangup_at_mail = 1  # the pooled session dies just as it is reused
    await send_one(relay, "b@ok.example", "m2")  # retried on a fresh session, unseen by the client
    assert [r.rcpt_tos for r in upstream.received] == [["a@ok.example"], ["b@ok.example"]]
    assert upstream.connections == 2
    # A fresh session that fails the same way is not retried: the client hears it.
    await relay.ctx.pool.close()
    upstream.hangup_at_mail = 1
    c = await aio(relay, login=None)
    reply = await c.execute_command(b"MAIL FROM:<" + SENDER.encode() + b">")
    assert reply.code == 451 and reply.message.startswith("4.4.2 ")
    c.close()
    assert len(upstream.received) == 2


async def test_passthrough_sessions_are_never_shared(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()  # passthrough: each upstream session carries one user's login
    await send_one(relay, "a@ok.example", "m1", login=("alice", "s3cret"))
    await send_one(relay, "b@ok.example", "m2", login=("alice", "s3cret"))
    assert upstream.connections == 2 and upstream.logins == ["alice", "alice"]
    assert await wait_for(lambda: upstream.open_sessions == 0)
    assert len(relay.ctx.pool) == 0
