"""When things go wrong: the upstream, the list, the client, and odd input."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import aiosmtplib
import pytest

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import open_store

from .conftest import RelayFactory, add_entries
from .relay_helpers import (
    SENDER,
    Raw,
    aio,
    as_alice,
    as_bytes,
    audit_events,
    blocking_client,
    closed_port,
    in_thread,
    mail_reply,
    message,
    port_of,
    wait_for,
)
from .smtp_fixtures import Upstream


async def start_data(raw: Raw) -> None:
    """MAIL, RCPT to bob@ok.example and DATA on a raw session, each accepted."""
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("DATA")).startswith("354")


# -- the upstream --------------------------------------------------------------------


async def test_upstream_down_auth_none_is_451_at_mail(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"}, upstream={"port": closed_port()})
    code, text = await mail_reply(relay)
    assert code == 451 and text.startswith(b"4.4.1 ") and b"nothing was sent" in text
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await c.mail(SENDER)
    assert refused.value.code == 451
    await c.quit()


async def test_upstream_refuses_one_recipient_verbatim(make_relay: RelayFactory, upstream: Upstream) -> None:
    upstream.refuse_rcpt["ghost@ok.example"] = "550 5.1.1 <ghost@ok.example>: Recipient address rejected: User unknown"
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("ghost@ok.example")
    assert refused.value.code == 550
    assert refused.value.message == "5.1.1 <ghost@ok.example>: Recipient address rejected: User unknown"
    await c.rcpt("carol@ok.example")
    assert (await c.data(message())).code == 250
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example", "carol@ok.example"]]


async def test_upstream_4xx_recipient_is_relayed_as_4xx(make_relay: RelayFactory, upstream: Upstream) -> None:
    upstream.refuse_rcpt["full@ok.example"] = "452 4.2.2 Mailbox full"
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        s.mail(SENDER)
        full = s.rcpt("full@ok.example")
        return full, s.rcpt("bob@ok.example")

    full, ok = await as_alice(relay, session)
    assert full == (452, b"4.2.2 Mailbox full") and ok[0] == 250


async def test_upstream_data_failure_relayed_then_next_message_ok(make_relay: RelayFactory, upstream: Upstream) -> None:
    upstream.data_reply = "554 5.7.1 Message rejected as spam"
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await c.data(message())
    assert failed.value.code == 554 and failed.value.message == "5.7.1 Message rejected as spam"
    assert await wait_for(lambda: upstream.rsets >= 1)
    upstream.data_reply = None
    await c.mail(SENDER)
    await c.rcpt("carol@ok.example")
    r = await c.data(message(mid="m2"))
    assert r.code == 250 and "queued as Q1" in r.message
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["carol@ok.example"]]
    assert upstream.connections == 1  # the same upstream session throughout


async def test_upstream_data_failure_smtplib(make_relay: RelayFactory, upstream: Upstream) -> None:
    upstream.data_reply = "554 5.6.0 Content refused"
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> tuple[int, bytes]:
        try:
            s.sendmail(SENDER, ["bob@ok.example"], message())
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, as_bytes(exc.smtp_error)
        raise AssertionError("DATA should fail")

    assert await as_alice(relay, session) == (554, b"5.6.0 Content refused")
    assert upstream.received == []


async def test_slow_upstream_data_outlasts_client_timeout(make_relay: RelayFactory, upstream: Upstream) -> None:
    """aiosmtpd's per-command timer must not cut the client while the upstream thinks."""
    upstream.data_delay = 2.0
    relay = await make_relay(server={"timeout": 1})
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    r = await c.data(message())
    assert r.code == 250 and "queued as Q1" in r.message
    await c.quit()
    assert len(upstream.received) == 1


async def test_trickled_upload_outlasts_client_timeout(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"timeout": 1})
    raw = await Raw.open(relay)
    await start_data(raw)
    for line in message().split(b"\r\n")[:-1]:
        raw.writer.write((b"." if line.startswith(b".") else b"") + line + b"\r\n")  # dot-stuffed
        await raw.writer.drain()
        await asyncio.sleep(0.25)  # 10 lines: 2.5 s in all, more than the 1 s timeout
    raw.writer.write(b".\r\n")
    assert (await raw.reply()).startswith("250 ")
    await raw.close()
    assert [r.content for r in upstream.received] == [message()]


async def test_idle_client_is_dropped(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"timeout": 1})
    raw = await Raw.open(relay)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert upstream.open_sessions == 1
    data = await asyncio.wait_for(raw.reader.read(), 5)  # the relay closes after 1 s of silence
    assert data.startswith(b"421 4.4.2 ")  # said why, then hung up
    assert await wait_for(lambda: upstream.open_sessions == 0)
    await raw.close()


async def test_client_disconnect_closes_upstream_session(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    assert upstream.open_sessions == 1
    c.close()  # no QUIT: the client just goes away
    assert await wait_for(lambda: upstream.open_sessions == 0)
    assert upstream.received == []
    assert await wait_for(lambda: not relay.ctx.sessions)


async def test_quit_closes_upstream_session(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session() -> None:
        s = blocking_client(port_of(relay))
        s.login("alice", "s3cret")
        s.sendmail(SENDER, ["bob@ok.example"], message())
        s.quit()

    await in_thread(session)
    assert await wait_for(lambda: upstream.open_sessions == 0)
    assert upstream.connections == 1 and len(upstream.received) == 1


# -- the list ----------------------------------------------------------------------------


async def test_unreadable_list_fails_closed(make_relay: RelayFactory, upstream: Upstream, tmp_path: Path) -> None:
    """The list file is damaged on disk while the relay runs: 451 4.3.0, nothing relayed."""
    relay = await make_relay(server={"auth": "none"})
    db = relay.ctx.settings.store.path
    with db.open("r+b") as f:  # keep the header page, ruin the rest
        f.seek(4096)
        size = f.seek(0, 2) - 4096
        f.seek(4096)
        f.write(b"\xa5" * size)

    def session() -> tuple[tuple[int, bytes], tuple[int, bytes], int]:
        s = blocking_client(port_of(relay))
        try:
            s.mail(SENDER)
            first = s.rcpt("bob@ok.example")
            second = s.rcpt("jane.doe@example.com")
            try:
                s.data(message())
            except smtplib.SMTPDataError as exc:
                return first, second, exc.smtp_code
            return first, second, 250
        finally:
            s.quit()

    first, second, data_code = await in_thread(session)
    assert first[0] == 451 and first[1].startswith(b"4.3.0 ") and b"nothing was sent" in first[1]
    assert second[0] == 451
    assert data_code == 503
    assert upstream.rcpt_seen == [] and upstream.received == []


async def test_import_while_running_takes_effect_at_next_rcpt(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    assert (await c.rcpt("new.optout@ok.example")).code == 250
    await add_entries(relay.ctx.settings.store.path, "new.optout@ok.example", "@freshly.example", source="hubspot")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("New.Optout@ok.example")
    assert "hubspot" in refused.value.message
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await c.rcpt("someone@mail.freshly.example")
    # and a removal is seen as quickly
    store = await open_store(relay.ctx.settings.store.path, MatchRules())
    try:
        await store.remove(["jane.doe@example.com"])
    finally:
        await store.close()
    assert (await c.rcpt("jane.doe@example.com")).code == 250
    await c.data(message())
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["new.optout@ok.example", "jane.doe@example.com"]]


# -- limits -------------------------------------------------------------------------------


async def test_max_recipients_is_452(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"max_recipients": 2})
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("a@ok.example")
    await c.rcpt("b@ok.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("c@ok.example")
    assert refused.value.code == 452 and refused.value.message.startswith("4.5.3 ")
    await c.data(message())
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["a@ok.example", "b@ok.example"]]
    assert "c@ok.example" not in upstream.rcpt_seen


async def test_oversize_message_is_552_and_session_goes_on(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"max_message_size": 2048})
    c = await aio(relay)
    assert c.esmtp_extensions.get("size") == "2048"
    big = message() + b"x" * 60 + b"\r\n"
    big = big * 40
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.data(big)
    assert refused.value.code == 552 and refused.value.message.startswith("5.3.4 ")
    assert upstream.received == []
    # the next, smaller message in the same session goes through
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    assert (await c.data(message())).code == 250
    await c.quit()
    assert [r.content for r in upstream.received] == [message()]


async def test_declared_size_too_big_is_552_at_mail(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"max_message_size": 2048})

    def session(s: smtplib.SMTP) -> tuple[int, bytes]:
        try:
            s.sendmail(SENDER, ["bob@ok.example"], b"x" * 5000)  # smtplib declares SIZE=5000
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code, exc.smtp_error
        raise AssertionError("MAIL should be refused")

    code, text = await as_alice(relay, session)
    assert code == 552 and text.startswith(b"5.3.4 ")
    assert upstream.received == []


# -- addresses ----------------------------------------------------------------------------


async def test_malformed_and_routed_recipients(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    raw = await Raw.open(relay)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob>")).startswith("501 5.1.3 ")
    assert (await raw.cmd("RCPT TO:<bob@>")).startswith("553 ")
    assert (await raw.cmd("RCPT TO:<x@exa_mple.com>")).startswith("501 5.1.3 ")
    assert (await raw.cmd("RCPT TO:")).startswith("501 ")
    # a source route is ignored, the final address is what counts
    routed = await raw.cmd("RCPT TO:<@a.example,@b.example:jane.doe@example.com>")
    assert routed.startswith("550 5.7.1 ") and "2026-10-03" in routed
    for path in ("user%ok.example@relay.example", "ok.example!user@relay.example", "user@[192.0.2.1]"):
        reply = await raw.cmd(f"RCPT TO:<{path}>")
        assert reply.startswith("553 5.7.1 "), reply
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("QUIT")).startswith("221")
    await raw.close()
    assert upstream.rcpt_seen == ["bob@ok.example"]


async def test_malformed_sender_is_5xx_not_451(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    raw = await Raw.open(relay)
    reply = await raw.cmd("MAIL FROM:<not an address>")
    assert reply[:1] == "5" and reply[4:5] == "5", reply
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("QUIT")).startswith("221")
    await raw.close()


async def test_null_sender_is_relayed(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        return s.sendmail("<>", ["bob@ok.example", "jane.doe@example.com"], message())

    refused = await as_alice(relay, session)
    assert list(refused) == ["jane.doe@example.com"]
    assert [(r.mail_from, r.rcpt_tos) for r in upstream.received] == [("<>", ["bob@ok.example"])]
    events = await audit_events(relay)
    assert [(e.sender, e.recipient) for e in events] == [("", "jane.doe@example.com")]


async def test_smtputf8_addresses(make_relay: RelayFactory, upstream: Upstream) -> None:
    await_blocked = "müller@bücher.example"
    relay = await make_relay(blocked=("jane.doe@example.com", await_blocked))
    msg = "From: jörg@bücher.example\r\nTo: zoë@bücher.example\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    c = await aio(relay)
    assert "smtputf8" in c.esmtp_extensions
    await c.mail("jörg@bücher.example", options=["SMTPUTF8"], encoding="utf-8")
    assert (await c.rcpt("zoë@bücher.example", encoding="utf-8")).code == 250
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("MÜLLER@xn--bcher-kva.example", encoding="utf-8")  # same entry, ACE domain
    assert refused.value.code == 550
    assert (await c.data(msg)).code == 250
    await c.quit()
    assert [(r.mail_from, r.rcpt_tos, r.content) for r in upstream.received] == [
        ("jörg@bücher.example", ["zoë@bücher.example"], msg)
    ]


async def test_smtputf8_smtplib(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        return s.sendmail(
            "jörg@bücher.example",
            ["zoë@bücher.example"],
            b"Subject: x\r\n\r\nx\r\n",
            mail_options=["SMTPUTF8"],
        )

    assert await as_alice(relay, session) == {}
    assert [(r.mail_from, r.rcpt_tos) for r in upstream.received] == [("jörg@bücher.example", ["zoë@bücher.example"])]


# -- pipelining ---------------------------------------------------------------------------


async def test_pipelined_transaction(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    raw = await Raw.open(relay)
    assert "250-PIPELINING" in raw.ehlo
    raw.writer.write(
        f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<bob@ok.example>\r\nRCPT TO:<jane.doe@example.com>\r\n"
        "RCPT TO:<carol@ok.example>\r\nDATA\r\n".encode()
    )
    replies = [await raw.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == ["250", "250", "550", "250", "354"]
    raw.writer.write(message() + b".\r\nQUIT\r\n")
    assert (await raw.reply()).startswith("250 ")
    assert (await raw.reply()).startswith("221")
    await raw.close()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example", "carol@ok.example"]]


# -- the upstream hangs up between messages --------------------------------------------------


async def test_upstream_dropped_between_messages_reconnects(make_relay: RelayFactory, upstream: Upstream) -> None:
    """With the relay's own upstream login (auth none/local) a new upstream session is transparent."""
    relay = await make_relay(server={"auth": "none"})
    c = await aio(relay, login=None)
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    upstream.drop_sessions()
    assert await wait_for(lambda: upstream.open_sessions == 0)
    await asyncio.sleep(0.05)
    await c.sendmail(SENDER, ["carol@ok.example"], message(mid="m2"))
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"], ["carol@ok.example"]]
    assert upstream.connections == 2


async def test_passthrough_upstream_dropped_never_sends_unauthenticated(
    make_relay: RelayFactory, upstream: Upstream
) -> None:
    relay = await make_relay()
    c = await aio(relay)
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    upstream.drop_sessions()
    assert await wait_for(lambda: upstream.open_sessions == 0)
    await asyncio.sleep(0.05)
    with pytest.raises(aiosmtplib.SMTPResponseException) as lost:
        await c.mail(SENDER)
    assert lost.value.code == 421 and lost.value.message.startswith("4.4.2 ")
    assert await wait_for(lambda: not relay.ctx.sessions)  # the relay hung up: the client reconnects
    c.close()
    c = await aio(relay)  # and logs in again
    await c.sendmail(SENDER, ["carol@ok.example"], message(mid="m2"))
    await c.quit()
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [
        ("alice", ["bob@ok.example"]),
        ("alice", ["carol@ok.example"]),
    ]


async def test_rset_mid_transaction(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        s.mail(SENDER)
        s.rcpt("dave@ok.example")
        s.rset()
        return s.sendmail(SENDER, ["bob@ok.example"], message())

    assert await as_alice(relay, session) == {}
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]
    assert upstream.rsets == 1


async def test_concurrent_sessions_do_not_mix(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    async def one(i: int) -> None:
        c = await aio(relay)
        await c.mail(f"user{i}@corp.example")
        await c.rcpt(f"to{i}@ok.example")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await c.rcpt("jane.doe@example.com")
        await asyncio.sleep(0.01 * (5 - i))
        await c.data(message(mid=f"c{i}"))
        await c.quit()

    await asyncio.gather(*(one(i) for i in range(5)))
    got = sorted(
        (r.mail_from, tuple(r.rcpt_tos), f"<c{r.mail_from[4]}@" in r.content.decode()) for r in upstream.received
    )
    assert got == [(f"user{i}@corp.example", (f"to{i}@ok.example",), True) for i in range(5)]
    events = await audit_events(relay)
    assert sorted(e.sender for e in events) == [f"user{i}@corp.example" for i in range(5)]
    assert all(e.message_id == f"<c{e.sender[4]}@corp.example>" for e in events)


async def test_upstream_lost_during_data_is_451_not_250(make_relay: RelayFactory, upstream: Upstream) -> None:
    upstream.data_delay = 0.5
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")

    async def hang_up() -> None:
        await asyncio.sleep(0.2)
        upstream.drop_sessions()

    dropper = asyncio.create_task(hang_up())
    with pytest.raises(aiosmtplib.SMTPDataError) as lost:
        await c.data(message())
    await dropper
    assert lost.value.code == 451 and lost.value.message.startswith("4.4.2 ")
    c.close()


async def test_long_line_then_next_message(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    raw = await Raw.open(relay)
    await start_data(raw)
    raw.writer.write(b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
    assert (await raw.reply())[:1] == "5"
    assert upstream.received == []
    await start_data(raw)
    raw.writer.write(b"Subject: short\r\n\r\nok\r\n.\r\n")
    assert (await raw.reply()).startswith("250 ")
    await raw.close()
    assert [r.content for r in upstream.received] == [b"Subject: short\r\n\r\nok\r\n"]


async def test_bare_lf_dot_does_not_end_data(make_relay: RelayFactory, upstream: Upstream) -> None:
    """SMTP smuggling: a bare-LF "\\n.\\n" must not end the message (or start another)."""
    relay = await make_relay()
    raw = await Raw.open(relay)
    await start_data(raw)
    raw.writer.write(
        b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<jane.doe@example.com>\r\n.\r\n"
    )
    assert (await raw.reply()).startswith("250 ")
    assert (await raw.cmd("QUIT")).startswith("221")
    await raw.close()
    assert len(upstream.received) == 1 and upstream.received[0].rcpt_tos == ["bob@ok.example"]
    assert "jane.doe@example.com" not in upstream.rcpt_seen


async def test_8bitmime_body_passes_unchanged(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    body = "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
    body += "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln – à bientôt\r\n"
    msg = body.encode()

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        assert s.has_extn("8bitmime")
        return s.sendmail(SENDER, ["bob@ok.example"], msg, mail_options=["BODY=8BITMIME"])

    assert await as_alice(relay, session) == {}
    assert [r.content for r in upstream.received] == [msg]


async def test_stop_lets_a_transaction_in_flight_finish(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    busy = await aio(relay)
    idle = await aio(relay)
    await busy.mail(SENDER)
    await busy.rcpt("bob@ok.example")
    stopping = asyncio.create_task(relay.stop(deadline=5))
    await asyncio.sleep(0.2)
    r = await busy.data(message())  # accepted while the relay is stopping
    assert r.code == 250
    await stopping
    assert len(upstream.received) == 1
    with pytest.raises(aiosmtplib.SMTPException):  # the idle session was told 421 and closed
        await idle.noop()
    busy.close()
    idle.close()
    with pytest.raises(OSError):  # no longer listening
        await asyncio.open_connection("127.0.0.1", port_of(relay))
