"""The four policy modes, end to end, and the audit trail they leave."""

from __future__ import annotations

import email
import smtplib
from email import policy as email_policy

import aiosmtplib
import pytest

from .conftest import RelayFactory
from .relay_helpers import SENDER, aio, as_alice, audit_events, message, smtplib_data
from .smtp_fixtures import Upstream

# -- reject --------------------------------------------------------------------


async def test_reject_names_address_date_and_source_aiosmtplib(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay)
    await c.mail(SENDER)
    assert (await c.rcpt("bob@ok.example")).code == 250
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("jane.doe@example.com")
    assert refused.value.code == 550
    text = refused.value.message
    assert text.startswith("5.7.1 ")
    assert "jane.doe@example.com" in text and "2026-10-03" in text and "lemlist" in text
    # A domain entry blocks its subdomains too.
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as sub:
        await c.rcpt("x@sales.blocked.example")
    assert sub.value.code == 550 and "x@sales.blocked.example" in sub.value.message
    assert "blocked.example" in sub.value.message and "2026-10-03" in sub.value.message
    assert (await c.rcpt("carol@ok.example")).code == 250
    r = await c.data(message())
    assert r.code == 250
    await c.quit()

    assert len(upstream.received) == 1
    got = upstream.received[0]
    assert got.rcpt_tos == ["bob@ok.example", "carol@ok.example"]
    assert got.mail_from == SENDER and got.user == "alice"
    assert got.content == message()  # passed on byte for byte (dot-stuffing undone both ways)
    assert "jane.doe@example.com" not in upstream.rcpt_seen

    events = await audit_events(relay)
    assert [(e.action, e.recipient, e.entry, e.source) for e in events] == [
        ("rejected", "jane.doe@example.com", "jane.doe@example.com", "lemlist"),
        ("rejected", "x@sales.blocked.example", "@blocked.example", "lemlist"),
    ]
    for e in events:
        assert e.sender == SENDER and e.user == "alice" and e.client == "127.0.0.1"
        assert e.message_id == "<m1@corp.example>"


async def test_reject_smtplib(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        s.mail(SENDER)
        refused = s.rcpt("Jane.Doe+promo@EXAMPLE.com")
        ok = s.rcpt("bob@ok.example")
        done = s.data(message())
        return refused, ok, done

    refused, ok, done = await as_alice(relay, session)
    assert refused[0] == 550 and b"5.7.1" in refused[1]
    assert b"Jane.Doe+promo@EXAMPLE.com" in refused[1] and b"2026-10-03" in refused[1] and b"lemlist" in refused[1]
    assert ok[0] == 250 and done[0] == 250 and b"queued as Q1" in done[1]
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]


async def test_reject_every_recipient_refused_smtplib_sendmail(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        try:
            s.sendmail(SENDER, ["jane.doe@example.com", "a@blocked.example"], message())
        except smtplib.SMTPRecipientsRefused as exc:
            return dict(exc.recipients)
        return {}

    refused = await as_alice(relay, session)
    assert set(refused) == {"jane.doe@example.com", "a@blocked.example"}
    assert all(code == 550 for code, _ in refused.values())
    assert upstream.received == [] and upstream.rcpt_seen == []
    events = await audit_events(relay)
    assert sorted(e.recipient for e in events) == ["a@blocked.example", "jane.doe@example.com"]
    assert {e.action for e in events} == {"rejected"}


# -- reject-message ----------------------------------------------------------------


async def test_reject_message_lists_everyone_and_sends_nothing(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "reject-message"})
    c = await aio(relay)
    await c.mail(SENDER)
    for rcpt in ("bob@ok.example", "jane.doe@example.com", "x@sales.blocked.example"):
        assert (await c.rcpt(rcpt)).code == 250
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.data(message(to="bob@ok.example, jane.doe@example.com", cc="x@sales.blocked.example"))
    assert refused.value.code == 550
    lines = refused.value.message.split("\n")
    assert len(lines) >= 3 and all(line.startswith("5.7.1 ") for line in lines)
    assert any("jane.doe@example.com" in ln and "2026-10-03" in ln and "lemlist" in ln for ln in lines)
    assert any("x@sales.blocked.example" in ln and "2026-10-03" in ln and "lemlist" in ln for ln in lines)
    assert not any("bob@ok.example" in ln for ln in lines)
    assert upstream.received == []
    assert "jane.doe@example.com" not in upstream.rcpt_seen  # never even offered upstream

    # The same session goes on: the next message (fixed) is delivered.
    await c.mail(SENDER)
    assert (await c.rcpt("bob@ok.example")).code == 250
    r = await c.data(message(mid="m2"))
    assert r.code == 250
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]
    assert b"<m2@corp.example>" in upstream.received[0].content

    events = await audit_events(relay)
    assert [(e.action, e.recipient, e.entry) for e in events] == [
        ("rejected", "jane.doe@example.com", "jane.doe@example.com"),
        ("rejected", "x@sales.blocked.example", "@blocked.example"),
    ]
    assert all(e.message_id == "<m1@corp.example>" and e.user == "alice" for e in events)


async def test_reject_message_smtplib_sees_multiline_550(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "reject-message"})
    code, text = await smtplib_data(relay, ["jane.doe@example.com", "bob@ok.example"], message())
    assert code == 550 and b"jane.doe@example.com" in text and b"2026-10-03" in text
    assert upstream.received == []


# -- strip ---------------------------------------------------------------------------


async def test_strip_rewrites_headers_and_notifies_sender(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "strip"})
    c = await aio(relay)
    await c.mail(SENDER)
    for rcpt in ("bob@ok.example", "jane.doe@example.com", "carol@ok.example", "x@blocked.example"):
        assert (await c.rcpt(rcpt)).code == 250
    r = await c.data(
        message(
            to='Bob <bob@ok.example>, "Doe, Jane" <jane.doe@example.com>',
            cc="carol@ok.example, x@blocked.example",
        )
    )
    assert r.code == 250
    await c.quit()

    assert len(upstream.received) == 2
    sent, notice = upstream.received
    assert sent.rcpt_tos == ["bob@ok.example", "carol@ok.example"]
    assert sent.user == "alice"
    headers = email.message_from_bytes(sent.content, policy=email_policy.default)
    assert "jane.doe@example.com" not in str(headers["To"]) and "bob@ok.example" in str(headers["To"])
    assert str(headers["Cc"]) == "carol@ok.example"
    assert b"Hello," in sent.content and b".dot line" in sent.content

    assert notice.rcpt_tos == [SENDER] and notice.mail_from == SENDER
    note = email.message_from_bytes(notice.content, policy=email_policy.default)
    body = note.get_content()
    assert "jane.doe@example.com" in body and "x@blocked.example" in body
    assert "Quarterly offer" in str(note["Subject"])
    assert "bob@ok.example" not in body

    events = await audit_events(relay)
    assert [(e.action, e.recipient) for e in events] == [
        ("stripped", "jane.doe@example.com"),
        ("stripped", "x@blocked.example"),
    ]
    assert all(e.message_id == "<m1@corp.example>" and e.sender == SENDER for e in events)


async def test_strip_without_rewrite_or_notice(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "strip", "rewrite_headers": False, "notify_sender": False})
    msg = message(to="bob@ok.example, jane.doe@example.com")
    code, _ = await smtplib_data(relay, ["bob@ok.example", "jane.doe@example.com"], msg)
    assert code == 250
    assert len(upstream.received) == 1  # no notice
    assert upstream.received[0].rcpt_tos == ["bob@ok.example"]
    assert upstream.received[0].content == msg  # headers untouched


async def test_strip_nobody_left_refuses_and_sends_nothing(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "strip"})
    c = await aio(relay)
    await c.mail(SENDER)
    assert (await c.rcpt("jane.doe@example.com")).code == 250
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.data(message(to="jane.doe@example.com"))
    assert refused.value.code == 550 and "5.7.1" in refused.value.message
    assert "jane.doe@example.com" in refused.value.message
    # and the session still works
    await c.mail(SENDER)
    await c.rcpt("bob@ok.example")
    assert (await c.data(message())).code == 250
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]  # no notice, nothing to jane
    events = await audit_events(relay)
    assert [(e.action, e.recipient) for e in events] == [("stripped", "jane.doe@example.com")]


# -- monitor -----------------------------------------------------------------------------


async def test_monitor_relays_everything_and_logs(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "monitor"})

    def session(s: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
        return s.sendmail(SENDER, ["bob@ok.example", "jane.doe@example.com", "y@blocked.example"], message())

    assert await as_alice(relay, session) == {}
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example", "jane.doe@example.com", "y@blocked.example"]]
    events = await audit_events(relay)
    assert [(e.action, e.recipient, e.entry, e.source) for e in events] == [
        ("monitored", "jane.doe@example.com", "jane.doe@example.com", "lemlist"),
        ("monitored", "y@blocked.example", "@blocked.example", "lemlist"),
    ]
    assert all(e.user == "alice" and e.client == "127.0.0.1" and e.message_id == "<m1@corp.example>" for e in events)


async def test_french_refusal(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"language": "fr"})
    c = await aio(relay)
    await c.mail(SENDER)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await c.rcpt("jane.doe@example.com")
    assert refused.value.code == 550 and "Pas d'envoi à jane.doe@example.com" in refused.value.message
    await c.quit()
