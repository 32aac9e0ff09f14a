"""The three auth modes (passthrough, local, none), AUTH PLAIN and LOGIN, both clients."""

from __future__ import annotations

import base64
import ipaddress
import smtplib
from pathlib import Path

import aiosmtplib
import pytest

from .conftest import RelayFactory
from .relay_helpers import (
    SENDER,
    aio,
    as_bytes,
    blocking_client,
    closed_port,
    in_thread,
    local_relay,
    mail_reply,
    message,
    port_of,
)
from .smtp_fixtures import Upstream

# -- passthrough ---------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_passthrough_aiosmtplib(make_relay: RelayFactory, upstream: Upstream, mechanism: str) -> None:
    relay = await make_relay()
    c = await aio(relay, login=None)
    assert "auth" in c.esmtp_extensions  # offered in clear on loopback
    auth = c.auth_plain if mechanism == "PLAIN" else c.auth_login
    r = await auth("alice", "s3cret")
    assert r.code == 235
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    await c.quit()
    assert upstream.logins == ["alice"]
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("alice", ["bob@ok.example"])]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response", [True, False])
async def test_passthrough_smtplib(
    make_relay: RelayFactory, upstream: Upstream, mechanism: str, initial_response: bool
) -> None:
    relay = await make_relay()

    def session() -> tuple[int, bytes]:
        s = blocking_client(port_of(relay))
        try:
            s.user, s.password = "alice", "s3cret"
            authobject = s.auth_plain if mechanism == "PLAIN" else s.auth_login
            code, text = s.auth(mechanism, authobject, initial_response_ok=initial_response)
            s.sendmail(SENDER, ["bob@ok.example"], message())
            return code, text
        finally:
            s.quit()

    code, _ = await in_thread(session)
    assert code == 235
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("alice", ["bob@ok.example"])]


async def test_passthrough_wrong_password_relays_upstream_535(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()

    def session() -> tuple[int, bytes, int]:
        s = blocking_client(port_of(relay))
        try:
            try:
                s.login("alice", "wrong")
            except smtplib.SMTPAuthenticationError as exc:
                code, text = (
                    exc.smtp_code,
                    as_bytes(exc.smtp_error),
                )
            else:
                raise AssertionError("login should fail")
            mail_code = s.mail(SENDER)[0]
            return code, text, mail_code
        finally:
            s.quit()

    code, text, mail_code = await in_thread(session)
    assert code == 535 and text == b"5.7.8 upstream says: bad credentials"
    assert mail_code == 530  # still not logged in
    assert upstream.logins == [] and upstream.received == []


async def test_passthrough_wrong_password_aiosmtplib_then_right(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await c.auth_plain("alice", "nope")
    assert refused.value.code == 535 and "upstream says: bad credentials" in refused.value.message
    assert (await c.auth_plain("alice", "s3cret")).code == 235
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    await c.quit()
    assert [r.user for r in upstream.received] == ["alice"]


async def test_passthrough_upstream_down_at_auth_is_454(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(upstream={"port": closed_port()})
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await c.auth_plain("alice", "s3cret")
    assert refused.value.code == 454 and refused.value.message.startswith("4.7.0 ")
    await c.quit()
    assert upstream.received == []


async def test_passthrough_without_auth_is_530_at_mail(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await c.mail(SENDER)
    assert refused.value.code == 530 and refused.value.message.startswith("5.7.0 ")
    await c.quit()
    assert upstream.received == [] and upstream.connections == 0


async def test_auth_garbage_is_501(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay()
    c = await aio(relay, login=None)
    r = await c.execute_command(b"AUTH", b"PLAIN", b"!!!notbase64")
    assert r.code == 501
    r = await c.execute_command(b"AUTH", b"PLAIN", base64.b64encode(b"only-one-part"))
    assert r.code == 501
    await c.quit()
    assert upstream.logins == []


# -- local -------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_local_auth_logs_in_upstream_as_relay(
    make_relay: RelayFactory, upstream: Upstream, tmp_path: Path, mechanism: str
) -> None:
    relay = await local_relay(make_relay, tmp_path)

    def session() -> tuple[int, dict[str, tuple[int, bytes]]]:
        s = blocking_client(port_of(relay))
        try:
            s.user, s.password = "bob.sales", "hunter2"
            code, _ = s.auth(mechanism, s.auth_plain if mechanism == "PLAIN" else s.auth_login)
            return code, s.sendmail("bob@corp.example", ["carol@ok.example", "jane.doe@example.com"], message())
        finally:
            s.quit()

    code, refused = await in_thread(session)
    assert code == 235
    assert list(refused) == ["jane.doe@example.com"] and refused["jane.doe@example.com"][0] == 550
    assert upstream.logins == ["relay"]
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("relay", ["carol@ok.example"])]


async def test_local_auth_wrong_password_is_535(make_relay: RelayFactory, upstream: Upstream, tmp_path: Path) -> None:
    relay = await local_relay(make_relay, tmp_path)
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await c.auth_plain("bob.sales", "wrong")
    assert refused.value.code == 535
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await c.auth_login("nobody", "hunter2")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as unauth:
        await c.mail(SENDER)
    assert unauth.value.code == 530
    await c.quit()
    assert upstream.received == [] and upstream.logins == []


async def test_local_auth_loopback_client_must_still_log_in(
    make_relay: RelayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    """trusted_networks only lets clients skip AUTH when auth = "none"."""
    relay = await local_relay(make_relay, tmp_path)
    c = await aio(relay, login=None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await c.mail(SENDER)
    assert refused.value.code == 530
    await c.quit()
    assert upstream.received == [] and upstream.logins == []


# -- none ------------------------------------------------------------------------------------


async def test_none_trusted_loopback_relays_without_auth(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})

    def session() -> tuple[bool, dict[str, tuple[int, bytes]]]:
        s = blocking_client(port_of(relay))
        try:
            advertised = s.has_extn("auth")
            return advertised, s.sendmail(SENDER, ["bob@ok.example", "jane.doe@example.com"], message())
        finally:
            s.quit()

    advertised, refused = await in_thread(session)
    assert advertised is False
    assert list(refused) == ["jane.doe@example.com"]
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [(None, ["bob@ok.example"])]


async def test_none_with_relay_account_upstream(make_relay: RelayFactory, upstream: Upstream, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("relaypw")
    relay = await make_relay(server={"auth": "none"}, upstream={"username": "relay", "password_file": pw})
    c = await aio(relay, login=None)
    assert "auth" not in c.esmtp_extensions
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    await c.quit()
    assert [(r.user, r.rcpt_tos) for r in upstream.received] == [("relay", ["bob@ok.example"])]


async def test_none_untrusted_client_is_530(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none", "trusted_networks": (ipaddress.ip_network("10.9.0.0/16"),)})
    code, text = await mail_reply(relay)
    assert code == 530 and text.startswith(b"5.7.0 ")
    assert upstream.received == [] and upstream.connections == 0
