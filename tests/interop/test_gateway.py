"""smtpguard's gateway mode between two real Postfix instances (gateway_bed.py).

    swaks -> ORG Postfix --relayhost--> smtpguard [gateway] --next hop--> NEXTHOP Postfix -> maildir
                 +-> ORG's local maildir: the bounces (DSN) for corp.example senders

ORG is trusted by the name in its TLS client certificate (not by address: every
peer here is 127.0.0.1); NEXTHOP pins smtpguard's client certificate, like a
Microsoft 365 inbound connector.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtpguard.config import (
    Endpoint,
    GatewaySettings,
    NextHopSettings,
    PolicySettings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from smtpguard.runtime.server import Relay
from smtpguard.smtp.gateway import LOOP_HEADER, verify_loop_value

from ..conftest import add_entries
from ..smtp_fixtures import StartedRelays
from .gateway_bed import ALLOWED, GATEWAY_NAME, ORG_NAME, SENDER, SUPPRESSED, BedMark, GatewayBed, bed_message
from .mailpostfix import flat
from .mta import LOOPBACK, free_port, swaks

pytestmark = pytest.mark.interop

ALSO_SUPPRESSED = "max@blocked.example"
BLOCKED = (SUPPRESSED, "@blocked.example")
SECRET = b"0123456789abcdef-gateway-test-secret"

GatewayFactory = Callable[..., Awaitable[Relay]]


def gateway_settings(bed: GatewayBed, tmp_path: Path, **gateway: Any) -> Settings:
    certs = bed.certs
    secret = tmp_path / "loop.secret"
    secret.write_bytes(SECRET)
    hop = NextHopSettings(
        host=LOOPBACK,
        port=bed.nexthop.port,
        ca_file=certs.ca_file,
        client_cert=certs.gateway.cert_file,
        client_key=certs.gateway.key_file,
        timeout=10,
    )
    gw = GatewaySettings(
        listen=(Endpoint(LOOPBACK, bed.gateway_port),),
        client_cert_names=(ORG_NAME,),
        client_ca_file=certs.ca_file,
        tls_cert=certs.gateway.cert_file,
        tls_key=certs.gateway.key_file,
        loop_secret_file=secret,
        next_hop=hop,
    )
    return Settings(
        server=ServerSettings(listen=Endpoint(LOOPBACK, 0), auth="none", hostname=GATEWAY_NAME, timeout=30),
        policy=PolicySettings(),
        store=StoreSettings(tmp_path / "list.db"),
        gateway=replace(gw, **gateway),
    )


@pytest.fixture
async def start_gateway(gateway_bed: GatewayBed, tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """`await start_gateway(policy=..., **gateway_keys)`: smtpguard on the bed's gateway port."""
    relays = StartedRelays()

    async def start(policy: PolicySettings | None = None, **gateway: Any) -> Relay:
        settings = gateway_settings(gateway_bed, tmp_path, **gateway)
        if policy is not None:
            settings = replace(settings, policy=policy)
        if not settings.store.path.exists():
            await add_entries(settings.store.path, *BLOCKED)
        return await relays.start(settings)

    yield start
    await relays.stop_all()


async def submit(bed: GatewayBed, to: str, *extra: str) -> str:
    token, body = bed_message("gw", "Checked by the gateway.", *extra)
    run = await swaks(bed.org.port, "--from", SENDER, "--to", to, *body)
    assert run.returncode == 0, f"{run}\n{bed.diagnostics()}"  # ORG takes it; the gateway's verdict comes later
    return token


async def test_allowed_delivered_once_suppressed_bounces_with_the_reason(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway()
    token = await submit(bed, f"{ALLOWED},{SUPPRESSED}")

    [bounce] = await bed.org.wait_messages(1, mark.org, to=SENDER)
    await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    await bed.org.wait_queue_empty()
    await bed.nexthop.wait_queue_empty()
    ctx = bed.diagnostics(mark)

    [delivered] = bed.nexthop.messages(mark.nexthop)
    assert (delivered.delivered_to, delivered.mail_from, delivered.subject) == (ALLOWED, SENDER, token), ctx
    # smtpguard presented its certificate; NEXTHOP (pinned fingerprint) checked it and says so.
    assert f'Client CN "{GATEWAY_NAME}"' in delivered.header("Received")[0], ctx
    assert GATEWAY_NAME in bed.nexthop.client_cert_subjects(mark.nexthop), ctx
    [loop] = delivered.header(LOOP_HEADER)
    message_id = delivered.header("Message-ID")[0]
    assert verify_loop_value(loop, SECRET, message_id, SENDER, [ALLOWED]), ctx
    assert not verify_loop_value(loop, b"another deployment's secret!!", message_id, SENDER, [ALLOWED])

    assert bounce.is_bounce() and bounce.mail_from == "", ctx
    [report] = bounce.dsn()
    assert (report.final_recipient, report.action, report.status) == (SUPPRESSED, "failed", "5.7.1"), ctx
    reason = f"Not sent to {SUPPRESSED}: this address is on the do-not-contact list since 2026-10-03"
    assert reason in report.diagnostic and reason in flat(bounce.body), ctx
    assert "source: lemlist" in flat(bounce.body), ctx
    assert bed.org.messages(mark.org) == [bounce], ctx


async def test_reject_message_one_bounce_lists_every_suppressed_recipient(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway(policy=PolicySettings(mode="reject-message", language="fr"))
    await submit(bed, f"{ALLOWED},{SUPPRESSED},{ALSO_SUPPRESSED}")

    [bounce] = await bed.org.wait_messages(1, mark.org, to=SENDER)
    await bed.org.wait_queue_empty()
    ctx = bed.diagnostics(mark)
    assert bed.nexthop.messages(mark.nexthop) == [], ctx  # nobody received it
    text = flat(bounce.body)
    assert "Message non envoyé : ces destinataires sont sur la liste d'exclusion" in text, ctx
    assert f"{SUPPRESSED}: depuis le" in text, ctx  # "on the list" is said once, in the heading
    assert f"{ALSO_SUPPRESSED}: tout le domaine blocked.example" in text, ctx
    assert {r.final_recipient for r in bounce.dsn()} == {ALLOWED, SUPPRESSED, ALSO_SUPPRESSED}, ctx
    assert bed.org.messages(mark.org) == [bounce], ctx


async def test_next_hop_down_keeps_the_mail_queued_then_delivered_once(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway()
    bed.nexthop.stop()
    try:
        token = await submit(bed, ALLOWED)
        reason = await bed.org.wait_deferred(ALLOWED)
        assert "451 4.4.1 The next hop cannot be reached" in reason, bed.diagnostics(mark)
        [queued] = bed.org.queued()
        assert queued.queue_id in bed.org.queue_listing()  # `postqueue -p` shows it
    finally:
        bed.nexthop.start()
    bed.org.flush()
    [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    await bed.org.wait_queue_empty()
    await bed.nexthop.wait_queue_empty()
    ctx = bed.diagnostics(mark)
    assert len(bed.nexthop.messages(mark.nexthop)) == 1 and delivered.subject == token, ctx
    assert bed.org.messages(mark.org) == [], ctx  # no bounce


async def test_next_hops_are_tried_in_order(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    dead = NextHopSettings(host=LOOPBACK, port=free_port(), timeout=2)
    relay = await start_gateway()
    hop = relay.ctx.settings.gateway.next_hop
    assert hop is not None
    relay.ctx.settings = replace(
        relay.ctx.settings, gateway=replace(relay.ctx.settings.gateway, next_hop=dead, next_hops=(hop,))
    )
    token = await submit(bed, ALLOWED)
    [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    assert delivered.subject == token, bed.diagnostics(mark)


async def test_next_hop_refuses_a_certificate_it_does_not_pin(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    bed.set_nexthop_client_cert("pinned", [bed.certs.stranger])  # a connector expecting another certificate
    await start_gateway()
    await submit(bed, ALLOWED)
    [bounce] = await bed.org.wait_messages(1, mark.org, to=SENDER)
    ctx = bed.diagnostics(mark)
    assert "Client host rejected: Access denied" in flat(bounce.body), ctx
    assert bed.nexthop.messages(mark.nexthop) == [], ctx


def org_client_tls(bed: GatewayBed, pair: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(bed.certs.ca_file))
    if pair is not None:
        kp = getattr(bed.certs, pair)
        ctx.load_cert_chain(kp.cert_file, kp.key_file)
    return ctx


async def direct(bed: GatewayBed, pair: str | None) -> aiosmtplib.SMTP:
    """A client of the gateway itself (not through ORG), presenting certs.<pair> or nothing."""
    client = aiosmtplib.SMTP(
        hostname=LOOPBACK, port=bed.gateway_port, start_tls=True, tls_context=org_client_tls(bed, pair), timeout=10
    )
    await client.connect()
    await client.ehlo()  # STARTTLS cleared what the first EHLO said
    return client


@pytest.mark.parametrize("pair", [None, "stranger"])
async def test_a_client_outside_networks_and_names_is_refused(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory, pair: str | None
) -> None:
    bed = gateway_bed
    await start_gateway()
    client = await direct(bed, pair)
    try:
        assert "auth" not in client.esmtp_extensions and "dsn" in client.esmtp_extensions
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(SENDER)
        assert refused.value.code == 550
        assert "5.7.1 This gateway takes mail only from the organisation's own mail servers" in refused.value.message
        assert (await client.execute_command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==")).code == 502
    finally:
        client.close()
    assert bed.nexthop.messages(bed_mark.nexthop) == []


async def test_a_forged_loop_header_is_checked_anyway_and_replaced(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway()
    forged = f"{LOOP_HEADER}: v=1; t=1700000000; m=forged-by-a-salesperson"
    await submit(bed, f"{ALLOWED},{SUPPRESSED}", forged)
    [bounce] = await bed.org.wait_messages(1, mark.org, to=SENDER)
    [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    ctx = bed.diagnostics(mark)
    assert [r.final_recipient for r in bounce.dsn()] == [SUPPRESSED], ctx
    [loop] = delivered.header(LOOP_HEADER)  # the forged one is gone, ours is there
    assert "forged" not in loop and verify_loop_value(
        loop, SECRET, delivered.header("Message-ID")[0], SENDER, [ALLOWED]
    ), ctx


async def test_dsn_parameters_never_carry_an_address_past_the_check(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway()
    client = await direct(bed, "org")
    try:
        for n in range(3):  # several messages on one connection, as an MTA sends them
            await client.mail(SENDER, options=["RET=HDRS", "ENVID=gw+2Btest" + str(n)])
            ok = await client.rcpt(ALLOWED, options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{SUPPRESSED}"])
            assert ok.code == 250
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(SUPPRESSED, options=["NOTIFY=NEVER", f"ORCPT=rfc822;{ALLOWED}"])
            assert refused.value.code == 550 and SUPPRESSED in refused.value.message
            bad = await client.execute_command(b"RCPT TO:<" + ALLOWED.encode() + b"> NOTIFY=SOMETIMES")
            assert bad.code == 501
            body = (
                f"From: {SENDER}\r\nTo: {ALLOWED}\r\nSubject: dsn {n}\r\nMessage-ID: <dsn{n}@corp.example>\r\n\r\nx\r\n"
            )
            assert (await client.data(body.encode())).code == 250
        await client.quit()
    finally:
        client.close()
    # NOTIFY=SUCCESS reached NEXTHOP (it advertises DSN): 3 deliveries and 3 success notices.
    await bed.nexthop.wait_messages(6, mark.nexthop)
    await bed.nexthop.wait_queue_empty()
    ctx = bed.diagnostics(mark)
    got = bed.nexthop.messages(mark.nexthop)
    assert sorted(m.delivered_to for m in got) == [ALLOWED] * 3 + [SENDER] * 3, ctx
    notices = [m for m in got if m.delivered_to == SENDER]
    assert all(m.is_bounce() and [r.action for r in m.dsn()] == ["delivered"] for m in notices), ctx
    assert {r.final_recipient for m in notices for r in m.dsn()} == {ALLOWED}, ctx
    # The ORCPT reached NEXTHOP too, as a label in the report on bob's delivery, never an address mail went to.
    assert all(f"Original-Recipient: rfc822;{SUPPRESSED}" in m.text for m in notices), ctx


async def test_utf8_8bit_and_a_big_attachment_arrive_intact_over_one_connection(
    gateway_bed: GatewayBed, bed_mark: BedMark, start_gateway: GatewayFactory
) -> None:
    bed, mark = gateway_bed, bed_mark
    await start_gateway()
    sender, rcpt = "sälès@corp.example", "bøb@ok.example"
    blob = b"".join(b"%06d " % i + b"x" * 70 + b"\r\n" for i in range(80_000))  # ~6 MB of lines
    bodies = [
        "From: Sälès <sälès@corp.example>\r\nTo: bøb@ok.example\r\nSubject: Café\r\n"
        "Message-ID: <utf8@corp.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nDéjà vu, naïve café.\r\n".encode(),
        b"From: sales@corp.example\r\nTo: bob@ok.example\r\nSubject: big\r\nMessage-ID: <big@corp.example>\r\n\r\n"
        + blob,
    ]
    client = await direct(bed, "org")
    try:
        assert {"8bitmime", "smtputf8", "size"} <= set(client.esmtp_extensions)
        await client.mail(sender, options=["BODY=8BITMIME", "SMTPUTF8"], encoding="utf-8")
        await client.rcpt(rcpt, encoding="utf-8")
        assert (await client.data(bodies[0])).code == 250
        await client.mail(SENDER, options=[f"SIZE={len(bodies[1])}"])
        await client.rcpt(ALLOWED)
        assert (await client.data(bodies[1], timeout=60)).code == 250
        await client.quit()
    finally:
        client.close()
    got = await bed.nexthop.wait_messages(2, mark.nexthop)
    ctx = bed.diagnostics(mark)
    [utf8] = [m for m in got if "Café".encode() in m.message]
    [big] = [m for m in got if m is not utf8]
    # Raw bytes: the maildir keeps the UTF-8 envelope in Return-Path / Delivered-To as sent.
    assert f"Return-Path: <{sender}>\n".encode() in utf8.message, ctx
    assert f"\nDelivered-To: {rcpt}\n".encode() in utf8.message, ctx
    assert utf8.message.endswith(bodies[0].split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")), ctx
    assert (big.delivered_to, big.message.endswith(blob.replace(b"\r\n", b"\n"))) == (ALLOWED, True), ctx
