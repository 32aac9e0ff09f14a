"""TLS towards the client (STARTTLS, implicit TLS) and towards the upstream."""

from __future__ import annotations

import smtplib
from pathlib import Path

import aiosmtplib
import pytest

from smtpguard.config import Endpoint
from smtpguard.runtime.server import server_tls_context

from .conftest import RelayFactory
from .relay_helpers import SENDER, aio, blocking_client, in_thread, mail_reply, message, port_of, relay_for
from .smtp_fixtures import Certs, Upstream, start_upstream


def _tls(certs: Certs) -> dict[str, object]:
    return {"tls_cert": certs.cert_file, "tls_key": certs.key_file}


async def test_starttls_on_loopback_smtplib(make_relay: RelayFactory, upstream: Upstream, certs: Certs) -> None:
    relay = await make_relay(server=_tls(certs))

    def session() -> tuple[bool, str, dict[str, tuple[int, bytes]]]:
        s = blocking_client(port_of(relay))
        try:
            offered = s.has_extn("starttls")
            s.starttls(context=certs.client_context())
            s.ehlo("client.test")
            version = s.sock.version() or ""  # type: ignore[union-attr]
            s.login("alice", "s3cret")
            return offered, version, s.sendmail(SENDER, ["bob@ok.example", "jane.doe@example.com"], message())
        finally:
            s.quit()

    offered, version, refused = await in_thread(session)
    assert offered and version.startswith("TLSv1.")
    assert list(refused) == ["jane.doe@example.com"] and refused["jane.doe@example.com"][0] == 550
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("alice", ["bob@ok.example"])]


async def test_starttls_aiosmtplib(make_relay: RelayFactory, upstream: Upstream, certs: Certs) -> None:
    relay = await make_relay(server=_tls(certs))
    c = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port_of(relay),
        start_tls=True,
        tls_context=certs.client_context(),
        timeout=10,
    )
    await c.connect()
    assert c.get_transport_info("sslcontext") is not None
    await c.login("alice", "s3cret")
    errors, _ = await c.sendmail(SENDER, ["bob@ok.example"], message())
    assert errors == {}
    await c.quit()
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("alice", ["bob@ok.example"])]


async def test_implicit_tls_listener_with_auth(make_relay: RelayFactory, upstream: Upstream, certs: Certs) -> None:
    relay = await make_relay(server={**_tls(certs), "smtps_listen": Endpoint("127.0.0.1", 0)})
    smtps = port_of(relay, 1)
    assert smtps != port_of(relay, 0)

    def session() -> tuple[bool, dict[str, tuple[int, bytes]]]:
        s = smtplib.SMTP_SSL("127.0.0.1", smtps, timeout=10, context=certs.client_context())
        try:
            s.ehlo("client.test")
            has_auth = s.has_extn("auth")
            s.login("alice", "s3cret")
            return has_auth, s.sendmail(SENDER, ["bob@ok.example"], message())
        finally:
            s.quit()

    has_auth, refused = await in_thread(session)
    assert has_auth and refused == {}
    # and with aiosmtplib, AUTH LOGIN this time
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtps, use_tls=True, tls_context=certs.client_context(), timeout=10)
    await c.connect()
    await c.ehlo()
    assert (await c.auth_login("alice", "s3cret")).code == 235
    await c.mail(SENDER)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await c.rcpt("jane.doe@example.com")
    await c.rcpt("carol@ok.example")
    assert (await c.data(message())).code == 250
    await c.quit()
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [
        ("alice", ["bob@ok.example"]),
        ("alice", ["carol@ok.example"]),
    ]


async def test_upstream_implicit_tls(tmp_path: Path, certs: Certs) -> None:
    up = await start_upstream(Upstream(), certs, security="tls")
    async with relay_for(up, tmp_path, certs, upstream={"security": "tls"}) as relay:
        c = await aio(relay)
        await c.sendmail(SENDER, ["bob@ok.example"], message())
        await c.quit()
    assert [(r.user, r.rcpt_tos) for r in up.received] == [("alice", ["bob@ok.example"])]


async def test_upstream_plain_security_none(tmp_path: Path, certs: Certs) -> None:
    up = await start_upstream(Upstream(), certs, security="none")
    async with relay_for(up, tmp_path, certs, server={"auth": "none"}, upstream={"security": "none"}) as relay:
        c = await aio(relay, login=None)
        await c.sendmail(SENDER, ["bob@ok.example"], message())
        await c.quit()
    assert [(r.user, r.rcpt_tos) for r in up.received] == [(None, ["bob@ok.example"])]


async def test_starttls_required_is_not_downgraded(tmp_path: Path, certs: Certs) -> None:
    """security = "starttls" against a server without STARTTLS: refuse, don't send in clear."""
    up = await start_upstream(Upstream(), certs, security="none")
    async with relay_for(up, tmp_path, certs, server={"auth": "none"}) as relay:
        c = await aio(relay, login=None)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await c.mail(SENDER)
        assert refused.value.code == 451 and refused.value.message.startswith("4.4.1 ")
        await c.quit()
    assert up.received == []


async def test_untrusted_upstream_cert_passthrough_454(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(upstream={"ca_file": None})  # the trustme CA is not in the system store
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await c.auth_plain("alice", "s3cret")
    assert refused.value.code == 454
    await c.quit()
    assert upstream.logins == [] and upstream.received == []


async def test_untrusted_upstream_cert_auth_none_451(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"}, upstream={"ca_file": None})
    code, text = await mail_reply(relay)
    assert code == 451 and text.startswith(b"4.4.1 ")
    assert upstream.received == [] and upstream.logins == []


async def test_verify_off_is_an_explicit_choice(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"}, upstream={"ca_file": None, "verify": False})
    c = await aio(relay, login=None)
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    await c.quit()
    assert [r.rcpt_tos for r in upstream.received] == [["bob@ok.example"]]


async def test_off_loopback_sessions_require_starttls_before_auth(make_relay: RelayFactory, certs: Certs) -> None:
    """What a session on a LAN listener would be built with (no non-loopback bind in tests)."""
    relay = await make_relay(server=_tls(certs))
    settings = relay.ctx.settings
    tls = server_tls_context(settings)
    lan = relay._factory(settings, tls, Endpoint("192.0.2.10", 587), False)()
    assert lan.require_starttls is True and lan._auth_require_tls is True
    local = relay._factory(settings, tls, Endpoint("127.0.0.1", 2525), False)()
    assert local.require_starttls is False and local._auth_require_tls is False
    smtps = relay._factory(settings, tls, Endpoint("192.0.2.10", 465), True)()
    assert smtps._auth_require_tls is False and smtps.tls_context is None
