"""Issue 7/8 fixes held over a real relay: reload mid-transaction, an upstream
lost at RCPT, AUTH out of step, strip mode's notice and headers, odd upstream
replies, and password guessing."""

from __future__ import annotations

import asyncio
import base64
import email
import ipaddress
import logging
import string
import subprocess
import sys
from dataclasses import replace
from email import policy as email_policy
from pathlib import Path

import pytest

from smtpguard import replies
from smtpguard.smtp import auth as auth_module

from .conftest import RelayFactory
from .relay_helpers import SENDER, Raw, local_relay, message
from .smtp_fixtures import Certs, Upstream


async def _send(raw: Raw, content: bytes) -> str:
    assert (await raw.cmd("DATA")).startswith("354")
    return await raw.cmd(content.decode().replace("\r\n.", "\r\n..") + ".")


# -- issue 7: the settings of a transaction are the ones at MAIL ------------------------------


async def test_reload_between_rcpt_and_data_keeps_the_mode(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(policy={"mode": "strip", "notify_sender": False}, server={"auth": "none"})
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<jane.doe@example.com>")).startswith("250 2.1.5")  # held (strip)
    s = relay.ctx.settings
    await relay.reload(replace(s, policy=replace(s.policy, mode="reject-message", language="fr")))
    reply = await _send(raw, message())
    assert reply.startswith("250 "), reply  # strip, as at MAIL: not reject-message's 550
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]
    # The next transaction takes the new settings.
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<jane.doe@example.com>")).startswith("250")
    reply = await _send(raw, message())
    assert reply.startswith("550-5.7.1 Message non envoyé"), reply
    await raw.close()


# -- issue 8 item 14: the upstream lost at RCPT ---------------------------------------------


@pytest.mark.parametrize("mode", ["reject", "strip"])
async def test_upstream_lost_at_rcpt_makes_data_451(make_relay: RelayFactory, upstream: Upstream, mode: str) -> None:
    relay = await make_relay(policy={"mode": mode}, server={"auth": "none"})
    upstream.hangup_at_rcpt = {"carol@ok.example"}
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    first = "bob@ok.example" if mode == "reject" else "jane.doe@example.com"  # relayed / held
    assert (await raw.cmd(f"RCPT TO:<{first}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<carol@ok.example>")).startswith("451 4.4.2")
    reply = await _send(raw, message())
    assert reply.startswith("451 4.4.2"), reply
    assert "do-not-contact" not in reply
    await raw.close()
    assert upstream.received == []


# -- issue 8 item 17: no credential in the logs ---------------------------------------------


async def test_auth_out_of_step_never_logs_the_password(
    make_relay: RelayFactory, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="mail.log")  # aiosmtpd logs client lines at DEBUG and INFO
    relay = await make_relay()
    password = "Tr0ub4dor-and-3"
    encoded = base64.b64encode(password.encode()).decode()
    raw = await Raw.open(relay, login=None)
    # A client that sends its answers without waiting: the AUTH fails at
    # once, so the lines meant as answers arrive as commands.
    assert (await raw.cmd("AUTH LOGIN !!notbase64")).startswith("501")
    assert (await raw.cmd(encoded)).startswith("500")
    assert (await raw.cmd(password)).startswith("500")
    assert (await raw.cmd("AUTH XOAUTH9 " + encoded)).startswith("504")
    assert (await raw.cmd(encoded)).startswith("500")
    # Inside AUTH LOGIN: an answer that is not base64.
    assert (await raw.cmd("AUTH LOGIN")).startswith("334")
    assert (await raw.cmd("alice")).startswith("501")
    assert (await raw.cmd("AUTH LOGIN " + base64.b64encode(b"alice").decode())).startswith("334")
    assert (await raw.cmd(password + "!")).startswith("501")
    await raw.close()
    assert caplog.records  # aiosmtpd did log the session
    logged = caplog.text.lower()  # aiosmtpd upper-cases what it takes for a command
    assert password.lower() not in logged and encoded.lower() not in logged
    assert "not shown" in caplog.text


# -- issue 8 items 15, 16: strip mode -------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    ["jane.doe%example.com@corp.example", "example.com!jane.doe@corp.example", '"jane.doe@example.com"@corp.example',
     "alice@[192.0.2.1]", "alice@192.0.2.1"],
)  # fmt: skip
async def test_strip_sends_no_notice_to_a_routing_sender(
    make_relay: RelayFactory, upstream: Upstream, sender: str
) -> None:
    relay = await make_relay(policy={"mode": "strip"}, server={"auth": "none"})
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<jane.doe@example.com>")).startswith("250")
    assert (await _send(raw, message())).startswith("250 ")
    await raw.close()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]  # the message, no notice


async def test_strip_removes_the_recipient_from_every_recipient_field(
    make_relay: RelayFactory, upstream: Upstream
) -> None:
    relay = await make_relay(policy={"mode": "strip", "notify_sender": False}, server={"auth": "none"})
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    for rcpt in ("bob@ok.example", "carol@ok.example", "jane.doe@example.com", "x@blocked.example"):
        assert (await raw.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
    content = (
        f"From: {SENDER}\r\n"
        "To: bob@ok.example; Jane.Doe@example.com\r\n"
        "Cc: carol@ok.example x@blocked.example\r\n"
        "Bcc: jane.doe@example.com\r\n"
        "Resent-To: Bob <bob@ok.example>, jane.doe@example.com\r\n"
        "Resent-Cc: x@blocked.example\r\n"
        "Subject: fields\r\n\r\nbody\r\n"
    ).encode()
    assert (await _send(raw, content)).startswith("250 ")
    await raw.close()
    (sent,) = upstream.received
    assert sent.rcpt_tos == ["bob@ok.example", "carol@ok.example"]
    head = sent.content.split(b"\r\n\r\n")[0].lower()
    assert b"jane.doe" not in head and b"blocked.example" not in head
    parsed = email.message_from_bytes(sent.content, policy=email_policy.default)
    assert str(parsed["To"]) == "bob@ok.example" and str(parsed["Cc"]) == "carol@ok.example"
    assert str(parsed["Resent-To"]) == "Bob <bob@ok.example>" and parsed["Bcc"] is None


# -- issue 8, fragile ---------------------------------------------------------------------


async def test_upstream_252_is_relayed_and_recorded(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    upstream.refuse_rcpt["vrfy@ok.example"] = "252 2.1.5 Cannot VRFY user, but will accept message"
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<vrfy@ok.example>")).startswith("252 2.1.5")
    assert (await _send(raw, message(to="vrfy@ok.example"))).startswith("250 ")
    await raw.close()
    assert [r.rcpt_tos for r in upstream.received] == [["vrfy@ok.example"]]


async def test_refused_rset_drops_the_upstream_session(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    upstream.refuse_rset = "500 5.5.1 not now"
    assert (await raw.cmd("RSET")).startswith("250")
    assert upstream.rsets == 1
    # That upstream session may still hold the transaction: it is not used again.
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert upstream.connections == 2
    await raw.close()


async def test_second_starttls_is_refused_without_a_traceback(
    make_relay: RelayFactory, upstream: Upstream, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await make_relay(server={"auth": "none", "tls_cert": certs.cert_file, "tls_key": certs.key_file})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.endpoints[0].port)
    raw = Raw(reader, writer)
    assert (await raw.reply()).startswith("220")
    assert "STARTTLS" in await raw.cmd("EHLO client.test")
    assert (await raw.cmd("STARTTLS")).startswith("220")
    await writer.start_tls(certs.client_context())
    assert (await raw.cmd("EHLO client.test")).startswith("250")
    assert (await raw.cmd("STARTTLS")).startswith("503 5.5.1")
    assert (await raw.cmd("NOOP")).startswith("250")  # the session goes on, still encrypted
    assert (await raw.cmd("QUIT")).startswith("221")
    await raw.close()
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


@pytest.mark.parametrize(("limit", "shown"), [(2_000, "2 KB"), (500_000, "500 KB"), (25_000_000, "25 MB")])
async def test_size_refusal_shows_a_sensible_limit(
    make_relay: RelayFactory, upstream: Upstream, limit: int, shown: str
) -> None:
    relay = await make_relay(server={"auth": "none", "max_message_size": limit})
    raw = await Raw.open(relay, login=None)
    reply = await raw.cmd(f"MAIL FROM:<{SENDER}> SIZE={limit + 1}")
    assert reply.startswith("552 5.3.4") and f"(the limit is {shown})" in reply, reply
    await raw.close()


# -- issue 8 items 7, 8: password guessing, trust re-judged -----------------------------------


# With workers, each process counts only the connections it took: each allows its share (5 -> 3 with 2).
@pytest.mark.parametrize(("workers", "allowed"), [(1, auth_module.FAILURES_ALLOWED), (2, 3)])
async def test_local_password_guessing_is_throttled_and_logged_for_fail2ban(
    make_relay: RelayFactory,
    upstream: Upstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    allowed: int,
) -> None:
    monkeypatch.setattr(auth_module, "FAILURE_DELAY", 0.0)
    relay = await local_relay(make_relay, tmp_path, workers=workers)
    caplog.set_level(logging.WARNING, logger="smtpguard.relay")

    def plain(user: str, password: str) -> str:
        return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()

    for attempt in range(allowed):
        raw = await Raw.open(relay, login=None)  # a new connection each time: the count is per address
        assert (await raw.cmd(plain("bob.sales", f"guess{attempt}"))).startswith("535 5.7.8")
        await raw.close()
    raw = await Raw.open(relay, login=None)
    # Even the right password is not checked now: guessing gets nowhere.
    assert (await raw.cmd(plain("bob.sales", "hunter2"))).startswith("454 4.7.0")
    await raw.close()
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth failed:")]
    assert failed[0] == "auth failed: user=bob.sales client=127.0.0.1 mechanism=PLAIN"
    assert len(failed) == allowed
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.getMessage().startswith("auth failed:"))
    assert "hunter2" not in caplog.text and "guess" not in caplog.text


def test_fail2ban_filter_matches_the_logged_line() -> None:
    filt = Path(__file__).parent.parent / "examples" / "fail2ban" / "filter.d" / "smtpguard.conf"
    text = filt.read_text()
    failregex = next(line for line in text.splitlines() if line.startswith("failregex"))
    pattern = failregex.split("=", 1)[1].strip().replace("<HOST>", r"(?P<host>\S+)")
    import re

    line = "2026-12-01 10:00:00 WARNING smtpguard.relay: auth failed: user=bob client=192.0.2.7 mechanism=LOGIN"
    m = re.search(pattern, line)
    assert m is not None and m.group("host") == "192.0.2.7"


async def test_reload_narrowing_trusted_networks_applies_to_open_sessions(
    make_relay: RelayFactory, upstream: Upstream
) -> None:
    relay = await make_relay(server={"auth": "none"})
    raw = await Raw.open(relay, login=None)
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
    assert (await raw.cmd("RSET")).startswith("250")
    s = relay.ctx.settings
    narrowed = (ipaddress.ip_network("10.9.0.0/16"),)
    await relay.reload(replace(s, server=replace(s.server, trusted_networks=narrowed)))
    assert (await raw.cmd(f"MAIL FROM:<{SENDER}>")).startswith("530 5.7.0")
    await raw.close()


# -- issue 7: nothing at import time ----------------------------------------------------------


def test_importing_the_relay_runs_no_scrypt_and_patches_nothing() -> None:
    code = (
        "import hashlib, inspect\n"
        "def boom(*a, **k): raise SystemExit('scrypt ran at import')\n"
        "hashlib.scrypt = boom\n"
        "import aiosmtpd.smtp\n"
        "import smtpguard.passwords, smtpguard.runtime.server, smtpguard.smtp.handler\n"
        "assert aiosmtpd.smtp.inspect is inspect, 'aiosmtpd patched at import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout


def test_every_fixed_reply_is_in_both_languages() -> None:
    fixed = [v for v in vars(replies).values() if isinstance(v, replies.Reply)]
    assert len(fixed) >= 20
    for reply in fixed:
        assert reply.en and reply.fr
        fields = {f for text in (reply.en, reply.fr) for _, f, _, _ in string.Formatter().parse(text) if f}
        values = dict.fromkeys(fields, "x")
        en, fr = reply.say("en", **values), reply.say("fr", **values)
        assert en[:3] == fr[:3] == str(int(reply.code)) and en.split()[1] == reply.enhanced
