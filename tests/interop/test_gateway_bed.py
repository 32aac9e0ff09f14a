"""Self-tests of the gateway test bed (gateway_bed.py), with a tiny stand-in where smtpguard's gateway will be.

swaks -> ORG Postfix -> stand-in on GATEWAY_PORT (refuses one address at RCPT, forwards
the rest with aiosmtplib, presenting the gateway certificate) -> NEXTHOP Postfix -> maildir.
What they show is what the gateway's own interop tests will rely on: a refusal at
RCPT becomes a DSN in the sender's maildir, a gateway that is down leaves the mail in
ORG's queue until a flush, NEXTHOP checks the client certificate.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from .gateway_bed import ALLOWED, GATEWAY_NAME, ORG_NAME, SENDER, SUPPRESSED, BedMark, GatewayBed, bed_message
from .mailpostfix import flat
from .mta import LOOPBACK, swaks

pytestmark = pytest.mark.interop

REFUSAL = f"550 5.7.1 <{SUPPRESSED}>: suppressed test text"


def message() -> tuple[str, list[str]]:
    return bed_message("gwbed", "Hello through the gateway bed.")


@dataclass
class StandIn:
    """What the gateway will be, at its simplest: refuse at RCPT, forward the rest, 250 only after NEXTHOP's."""

    bed: GatewayBed
    refuse: dict[str, str]
    starttls: bool = True
    server: asyncio.Server | None = None
    sessions: list[SMTP] = field(default_factory=list)
    client_cns: list[str] = field(default_factory=list)  # CN of the certificate ORG presented, per message

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = self.bed.certs.server_context(self.bed.certs.gateway, ask_client_cert=True) if self.starttls else None

        def factory() -> SMTP:
            proto = SMTP(self, loop=loop, hostname=GATEWAY_NAME, tls_context=tls, require_starttls=False)
            self.sessions.append(proto)
            return proto

        self.server = await loop.create_server(factory, LOOPBACK, self.bed.gateway_port)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        for proto in self.sessions:  # ORG may keep a connection cached: a stopped gateway hangs up
            if proto.transport is not None:
                proto.transport.close()
        self.sessions.clear()
        await server.wait_closed()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = (session.ssl or {}).get("peercert") or {}
        self.client_cns += [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"]
        certs = self.bed.certs
        ctx = ssl.create_default_context(cafile=str(certs.ca_file))
        ctx.load_cert_chain(certs.gateway.cert_file, certs.gateway.key_file)
        try:
            await aiosmtplib.send(
                envelope.original_content or b"",
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=LOOPBACK,
                port=self.bed.nexthop.port,
                start_tls=True,
                tls_context=ctx,
                timeout=10,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.1 next hop unavailable: {type(exc).__name__}"
        return "250 2.0.0 Ok: forwarded"


@pytest.fixture
async def stand_in(gateway_bed: GatewayBed) -> AsyncIterator[StandIn]:
    gw = StandIn(gateway_bed, {SUPPRESSED: REFUSAL})
    await gw.start()
    yield gw
    await gw.stop()


async def test_refusal_at_rcpt_bounces_to_the_sender_and_the_rest_is_delivered_once(
    gateway_bed: GatewayBed, bed_mark: BedMark, stand_in: StandIn
) -> None:
    bed, mark = gateway_bed, bed_mark
    token, body = message()
    run = await swaks(bed.org.port, "--from", SENDER, "--to", f"{ALLOWED},{SUPPRESSED}", *body)
    assert run.returncode == 0, f"{run}\n{bed.diagnostics(mark)}"  # ORG takes it; the refusal comes later

    [bounce] = await bed.org.wait_messages(1, mark.org, to=SENDER)
    await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    await bed.org.wait_queue_empty()  # ORG is done with the message: no later copy can come
    await bed.nexthop.wait_queue_empty()
    ctx = bed.diagnostics(mark)

    [delivered] = bed.nexthop.messages(mark.nexthop)
    assert (delivered.delivered_to, delivered.mail_from, delivered.subject) == (ALLOWED, SENDER, token), ctx
    assert token in delivered.body
    # The stand-in saw ORG's client certificate; NEXTHOP saw the gateway's, and says so.
    assert stand_in.client_cns == [ORG_NAME], ctx
    assert GATEWAY_NAME in bed.nexthop.client_cert_subjects(mark.nexthop), ctx
    assert f'Client CN "{GATEWAY_NAME}"' in delivered.header("Received")[0], ctx

    assert bounce.is_bounce() and bounce.mail_from == "", ctx  # a DSN, from the null sender
    [report] = bounce.dsn()
    assert (report.final_recipient, report.action, report.status) == (SUPPRESSED, "failed", "5.7.1"), ctx
    assert REFUSAL in report.diagnostic, ctx
    assert REFUSAL in flat(bounce.body), ctx  # the words the sender reads
    assert bed.org.messages(mark.org) == [bounce], ctx  # nothing else landed at ORG


async def test_gateway_down_keeps_the_mail_queued_until_flushed(
    gateway_bed: GatewayBed, bed_mark: BedMark, stand_in: StandIn
) -> None:
    bed, mark = gateway_bed, bed_mark
    await stand_in.stop()
    token, body = message()
    run = await swaks(bed.org.port, "--from", SENDER, "--to", ALLOWED, *body)
    assert run.returncode == 0, f"{run}\n{bed.diagnostics(mark)}"
    reason = await bed.org.wait_deferred(ALLOWED)
    assert "Connection refused" in reason, bed.diagnostics(mark)
    [queued] = bed.org.queued()
    assert (queued.sender, queued.addresses) == (SENDER, (ALLOWED,))
    assert queued.queue_id in bed.org.queue_listing()  # `postqueue -p` shows it too

    await stand_in.start()
    bed.org.flush()
    await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    await bed.org.wait_queue_empty()
    await bed.nexthop.wait_queue_empty()
    [delivered] = bed.nexthop.messages(mark.nexthop)
    assert delivered.subject == token, bed.diagnostics(mark)
    assert bed.org.messages(mark.org) == [], bed.diagnostics(mark)  # no bounce, no delay notice


async def test_nexthop_down_gives_451_and_the_mail_waits_at_org(
    gateway_bed: GatewayBed, bed_mark: BedMark, stand_in: StandIn
) -> None:
    bed, mark = gateway_bed, bed_mark
    bed.nexthop.stop()
    try:
        token, body = message()
        run = await swaks(bed.org.port, "--from", SENDER, "--to", ALLOWED, *body)
        assert run.returncode == 0, f"{run}\n{bed.diagnostics(mark)}"
        reason = await bed.org.wait_deferred(ALLOWED)
        assert "451 4.4.1 next hop unavailable" in reason, bed.diagnostics(mark)
    finally:
        bed.nexthop.start()  # same port as before
    bed.org.flush()
    [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    await bed.org.wait_queue_empty()
    await bed.nexthop.wait_queue_empty()
    assert len(bed.nexthop.messages(mark.nexthop)) == 1 and delivered.subject == token, bed.diagnostics(mark)


async def nexthop_swaks(bed: GatewayBed, *tls: str) -> tuple[int, list[str]]:
    _, body = message()
    run = await swaks(bed.nexthop.port, "--from", SENDER, "--to", ALLOWED, "--tls", *tls, *body)
    return run.returncode, run.errors()


async def test_nexthop_checks_the_client_certificate(gateway_bed: GatewayBed, bed_mark: BedMark) -> None:
    bed, mark = gateway_bed, bed_mark
    certs = bed.certs

    def cert(pair: str) -> tuple[str, ...]:
        kp = getattr(certs, pair)
        return ("--tls-cert", str(kp.cert_file), "--tls-key", str(kp.key_file))

    # Pinned (the default): the gateway's certificate only.
    assert await nexthop_swaks(bed, *cert("gateway")) == (0, [])
    [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
    assert f'Client CN "{GATEWAY_NAME}", Issuer' in delivered.header("Received")[0]
    refused = "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"
    assert await nexthop_swaks(bed) == (24, [refused])
    assert await nexthop_swaks(bed, *cert("stranger")) == (24, [refused])  # same CA, not pinned
    # Required: any certificate of the bed's CA; none at all ends the session.
    bed.set_nexthop_client_cert("require")
    try:
        assert await nexthop_swaks(bed, *cert("stranger")) == (0, [])
        code, errors = await nexthop_swaks(bed)
        assert code != 0 and "No client certificate presented" in " ".join(errors)
    finally:
        bed.set_nexthop_client_cert("pinned")
    assert bed.nexthop.client_cert_subjects(mark.nexthop) == [GATEWAY_NAME, "intruder.example", "intruder.example"]
    await bed.nexthop.wait_queue_empty()
    assert len(bed.nexthop.messages(mark.nexthop)) == 2, bed.diagnostics(mark)


async def test_nexthop_refuses_what_its_own_table_says(gateway_bed: GatewayBed, bed_mark: BedMark) -> None:
    bed, certs = gateway_bed, gateway_bed.certs
    bed.nexthop.configure({}, {"recipient_access": f"{ALLOWED} REJECT 5.7.1 tenant says no\n"})
    tls = ("--tls-cert", str(certs.gateway.cert_file), "--tls-key", str(certs.gateway.key_file))
    code, errors = await nexthop_swaks(bed, *tls)
    assert code == 24 and errors == [f"554 5.7.1 <{ALLOWED}>: Recipient address rejected: tenant says no"]


async def test_org_requiring_tls_waits_for_a_gateway_that_offers_it(
    make_gateway_bed: Callable[..., GatewayBed],
) -> None:
    bed = make_gateway_bed(org_tls="encrypt", nexthop_client_cert="require")
    mark = bed.mark()
    plain = StandIn(bed, {}, starttls=False)
    await plain.start()
    try:
        token, body = message()
        run = await swaks(bed.org.port, "--from", SENDER, "--to", ALLOWED, *body)
        assert run.returncode == 0, f"{run}\n{bed.diagnostics(mark)}"
        assert "TLS is required, but was not offered" in await bed.org.wait_deferred(ALLOWED)
    finally:
        await plain.stop()
    tls = StandIn(bed, {})
    await tls.start()
    try:
        bed.org.flush()
        [delivered] = await bed.nexthop.wait_messages(1, mark.nexthop, to=ALLOWED)
        await bed.org.wait_queue_empty()
    finally:
        await tls.stop()
    assert delivered.subject == token and tls.client_cns == [ORG_NAME], bed.diagnostics(mark)
    assert "TLS connection established to 127.0.0.1" in bed.org.log_text(mark.org.log_offset)
