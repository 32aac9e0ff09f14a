"""Gateway mode, fast: DSN parameters, the loop-prevention header, who is trusted, settings,
and the gateway listener over real TCP in front of the fixture upstream (which has no DSN)."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smtpguard.config import ConfigError, Endpoint, GatewaySettings, NextHopSettings, from_mapping
from smtpguard.runtime.safety import relay_problems
from smtpguard.runtime.server import Relay
from smtpguard.smtp import dsn
from smtpguard.smtp.gateway import (
    LOOP_HEADER,
    cert_trusted,
    loop_value,
    peer_names,
    stamp,
    strip_loop_headers,
    verify_loop_value,
)

from .conftest import RelayFactory
from .relay_helpers import Raw, port_of
from .smtp_fixtures import Certs, Upstream

SECRET = b"a-deployment-secret-of-some-length"


# -- DSN parameters -------------------------------------------------------------------------


def test_dsn_parameters_are_taken_checked_and_the_rest_kept() -> None:
    assert dsn.take("SIZE=10 ret=hdrs ENVID=Q+2B1 BODY=8BITMIME", dsn.MAIL_KEYS) == (
        "SIZE=10 BODY=8BITMIME",
        ("RET=HDRS", "ENVID=Q+2B1"),
    )
    assert dsn.take("NOTIFY=success,delay ORCPT=rfc822;jane+2Bx@example.com", dsn.RCPT_KEYS) == (
        "",
        ("NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;jane+2Bx@example.com"),
    )
    assert dsn.take("NOTIFY=NEVER", dsn.MAIL_KEYS) == ("NOTIFY=NEVER", ())  # not a MAIL parameter: aiosmtpd's 555


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ("NOTIFY=NEVER,SUCCESS", "NOTIFY must be"),
        ("NOTIFY=SOMETIMES", "NOTIFY must be"),
        ("NOTIFY=SUCCESS,SUCCESS", "NOTIFY must be"),
        ("NOTIFY", "NOTIFY needs a value"),
        ("ORCPT=jane@example.com", "ORCPT must be"),
        ("ORCPT=rfc822;jane+zz@example.com", "ORCPT must be"),
        ("ORCPT=rfc822;a=b@example.com", "ORCPT must be"),
        ("ORCPT=rfc822;" + "a" * 501, "ORCPT must be"),
        ("NOTIFY=NEVER NOTIFY=NEVER", "given twice"),
    ],
)
def test_bad_rcpt_dsn_parameters_are_named(params: str, why: str) -> None:
    with pytest.raises(dsn.DsnError, match=why):
        dsn.take(params, dsn.RCPT_KEYS)


@pytest.mark.parametrize("params", ["RET=ALL", "ENVID=" + "x" * 101, "ENVID=a=b", "RET=FULL RET=HDRS"])
def test_bad_mail_dsn_parameters_are_refused(params: str) -> None:
    with pytest.raises(dsn.DsnError):
        dsn.take(params, dsn.MAIL_KEYS)


class _Hop:
    def __init__(self, *extensions: str) -> None:
        self.extensions = extensions

    def supports_extension(self, extension: str) -> bool:
        return extension in self.extensions


def test_dsn_parameters_go_only_to_a_next_hop_that_advertises_dsn() -> None:
    taken = ("NOTIFY=NEVER", "ORCPT=rfc822;a@b.example")
    assert dsn.forwardable(taken, _Hop("dsn", "size")) == list(taken)
    assert dsn.forwardable(taken, _Hop("size")) == []


# -- the loop-prevention header -------------------------------------------------------------


def test_loop_header_verifies_only_for_this_message_and_secret() -> None:
    value = loop_value(SECRET, "<m1@corp.example>", "a@corp.example", ["B@x.example", "c@y.example"], now=1e9)
    assert value.startswith("v=1; t=1000000000; m=")
    assert verify_loop_value(value, SECRET, "<m1@corp.example>", "a@corp.example", ["c@y.example", "b@x.example"])
    assert not verify_loop_value(value, SECRET, "<m2@corp.example>", "a@corp.example", ["b@x.example", "c@y.example"])
    assert not verify_loop_value(value, SECRET, "<m1@corp.example>", "a@corp.example", ["b@x.example"])
    assert not verify_loop_value(value, b"another secret entirely!", "<m1@corp.example>", "a@corp.example", [])
    later = value.replace("t=1000000000", "t=1000000001")
    assert not verify_loop_value(later, SECRET, "<m1@corp.example>", "a@corp.example", ["b@x.example", "c@y.example"])
    assert not verify_loop_value("v=1; t=x; m=", SECRET, "", "", [])


def test_every_incoming_loop_header_is_removed_before_ours_is_added() -> None:
    forged = (
        b"Subject: hi\r\n"
        b"x-smtpguard-checked: v=1; t=1; m=forged\r\n"
        b"X-SMTPGUARD-CHECKED  :\r\n\tv=1; t=2;\r\n m=folded\r\n"
        b"To: b@x.example\r\n\r\nbody\r\nX-Smtpguard-Checked: in the body stays\r\n"
    )
    assert strip_loop_headers(forged) == (
        b"Subject: hi\r\nTo: b@x.example\r\n\r\nbody\r\nX-Smtpguard-Checked: in the body stays\r\n"
    )
    out = stamp(forged, "v=1; t=3; m=ours")
    assert out.startswith(f"{LOOP_HEADER}: v=1; t=3; m=ours\r\nSubject: hi\r\nTo:".encode())
    assert b"forged" not in out and b"folded" not in out


# -- who is trusted ---------------------------------------------------------------------------

ORG_CERT: dict[str, Any] = {
    "subject": ((("organizationName", "Corp"),), (("commonName", "relay.corp.example"),)),
    "subjectAltName": (("DNS", "Mail.Corp.Example."), ("IP Address", "192.0.2.1")),
}


def test_certificate_names_come_from_the_subject_and_the_dns_sans() -> None:
    assert peer_names(ORG_CERT) == {"relay.corp.example", "mail.corp.example"}
    assert peer_names(None) == set() and peer_names({}) == set()
    gw = GatewaySettings(client_cert_names=("mail.corp.example",))
    assert cert_trusted(ORG_CERT, gw)
    assert not cert_trusted(ORG_CERT, replace(gw, client_cert_names=("corp.example",)))  # no suffix match
    assert not cert_trusted(ORG_CERT, replace(gw, client_cert_names=()))
    assert not cert_trusted({"subject": ((("organizationName", "mail.corp.example"),),)}, gw)


# -- settings ---------------------------------------------------------------------------------


def gateway_toml(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    secret = tmp_path / "loop.secret"
    secret.write_bytes(SECRET)
    table: dict[str, Any] = {"listen": "0.0.0.0:25", "networks": ["10.1.0.0/16"], "loop_secret_file": str(secret)}
    table["next_hop"] = {"host": "corp-com.mail.protection.outlook.com"}
    return {"gateway": table | keys}


def test_gateway_settings_parse(tmp_path: Path) -> None:
    s = from_mapping(gateway_toml(tmp_path, listen=["0.0.0.0:25", "[::]:2526"], next_hops=[{"host": "b", "port": 587}]))
    assert s.gateway.listen == (Endpoint("0.0.0.0", 25), Endpoint("::", 2526))
    assert s.gateway.networks == (ipaddress.ip_network("10.1.0.0/16"),)
    assert [h.host for h in s.gateway.hops] == ["corp-com.mail.protection.outlook.com", "b"]
    assert s.gateway.hops[0] == NextHopSettings(host="corp-com.mail.protection.outlook.com")  # TLS, verified, port 25
    assert relay_problems(s) == []


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"next_hop": {"host": "h", "port": 70000}}, "[gateway.next_hop] port must be 1-65535, got 70000"),
        ({"next_hop": {"host": "h", "client_cert": "/c.pem"}}, "client_cert and client_key go together"),
        ({"next_hop": {"host": "h", "username": "u"}}, "username needs password_file"),
        ({"next_hop": {"port": 25}}, "[gateway.next_hop] host is missing"),
        ({"next_hops": [{"host": "h", "tls": 1}]}, "[gateway] next_hops[0]: unknown key tls"),
        ({"loop_secret_file": ""}, "loop_secret_file is needed"),
        ({"client_cert_names": ["mail.corp.example"]}, "client_cert_names needs client_ca_file"),
        ({"listen": 25}, "[gateway] listen must be a string or a list"),
    ],
)
def test_bad_gateway_settings_name_the_key(tmp_path: Path, keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(gateway_toml(tmp_path, **keys))
    assert message in str(err.value)


def test_no_next_hop_is_refused(tmp_path: Path) -> None:
    data = gateway_toml(tmp_path)
    del data["gateway"]["next_hop"]
    with pytest.raises(ConfigError, match="needs a next hop"):
        from_mapping(data)


@pytest.mark.parametrize(
    ("networks", "problem"),
    [
        (["0.0.0.0/0"], "would take mail from anyone"),
        (["0.0.0.0/1", "128.0.0.0/1"], "would take mail from anyone"),
        (["::/0"], "would take mail from anyone"),
        ([], "neither networks nor client_cert_names"),
    ],
)
def test_a_gateway_open_to_strangers_is_refused(tmp_path: Path, networks: list[str], problem: str) -> None:
    problems = relay_problems(from_mapping(gateway_toml(tmp_path, networks=networks)))
    assert any(problem in p for p in problems), problems


def test_a_short_or_missing_loop_secret_is_refused(tmp_path: Path) -> None:
    s = from_mapping(gateway_toml(tmp_path))
    assert s.gateway.loop_secret_file is not None
    s.gateway.loop_secret_file.write_text("short\n")
    assert any("at least 16 bytes" in p for p in relay_problems(s))
    s.gateway.loop_secret_file.unlink()
    assert any("No such file" in p for p in relay_problems(s))


# -- the gateway listener in front of the fixture upstream -----------------------------------


async def open_raw(relay: Relay, index: int) -> Raw:
    """A bare session on listener `index` (0: submission, 1: the gateway), after EHLO."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay, index))
    raw = Raw(reader, writer)
    assert (await raw.reply()).startswith("220 ")
    raw.ehlo = await raw.cmd("EHLO org.test")
    return raw


@pytest.fixture
async def gateway(make_relay: RelayFactory, tmp_path: Path, upstream: Upstream, certs: Certs) -> Relay:
    """Submission on endpoints[0] (auth none, loopback trusted), the gateway on endpoints[1]."""
    secret = tmp_path / "loop.secret"
    secret.write_bytes(SECRET)
    hop = NextHopSettings(host="localhost", port=upstream.port, ca_file=certs.ca_file, timeout=10)
    gw = {
        "listen": (Endpoint("127.0.0.1", 0),),
        "networks": (ipaddress.ip_network("127.0.0.0/8"),),
        "loop_secret_file": secret,
        "next_hop": hop,
    }
    return await make_relay(gateway=gw, server={"auth": "none"})


async def test_gateway_takes_dsn_parameters_and_drops_them_for_a_next_hop_without_dsn(
    gateway: Relay, upstream: Upstream
) -> None:
    raw = await open_raw(gateway, 1)
    try:
        assert "DSN" in raw.ehlo and "AUTH" not in raw.ehlo
        assert (await raw.cmd("MAIL FROM:<a@corp.example> RET=HDRS ENVID=abc+2B1 BODY=8BITMIME")).startswith("250")
        ok = await raw.cmd("RCPT TO:<bob@ok.example> NOTIFY=FAILURE ORCPT=rfc822;jane.doe@example.com")
        assert ok.startswith("250"), ok
        refused = await raw.cmd("RCPT TO:<jane.doe@example.com> NOTIFY=NEVER ORCPT=rfc822;bob@ok.example")
        assert refused.startswith("550 5.7.1 Not sent to jane.doe@example.com"), refused
        assert (await raw.cmd("RCPT TO:<carl@ok.example> NOTIFY=NEVER,DELAY")).startswith("501 5.5.4 Bad DSN")
        assert (await raw.cmd("DATA")).startswith("354")
        sent = await raw.cmd(f"{LOOP_HEADER}: v=1; t=1; m=forged\r\nSubject: x\r\n\r\nhello\r\n.")
        assert sent.startswith("250"), sent
        assert (await raw.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA==")).startswith("502 5.5.1")
    finally:
        await raw.close()
    [got] = upstream.received
    assert got.rcpt_tos == ["bob@ok.example"] and upstream.rcpt_seen == ["bob@ok.example"]
    assert got.content.count(b"X-Smtpguard-Checked:") == 1 and b"forged" not in got.content


async def test_the_submission_listener_still_refuses_dsn_parameters(gateway: Relay) -> None:
    raw = await open_raw(gateway, 0)
    try:
        assert "DSN" not in raw.ehlo
        assert (await raw.cmd("MAIL FROM:<a@corp.example> RET=HDRS")).startswith("555")
        assert (await raw.cmd("MAIL FROM:<a@corp.example>")).startswith("250")
        assert (await raw.cmd("RCPT TO:<bob@ok.example> NOTIFY=NEVER")).startswith("555")
    finally:
        await raw.close()


async def test_a_client_outside_the_gateway_networks_is_refused_at_mail(
    make_relay: RelayFactory, tmp_path: Path, upstream: Upstream, gateway: Relay
) -> None:
    gateway.ctx.settings = replace(
        gateway.ctx.settings,
        gateway=replace(gateway.ctx.settings.gateway, networks=(ipaddress.ip_network("10.0.0.0/8"),)),
    )
    raw = await open_raw(gateway, 1)
    try:
        refused = await raw.cmd("MAIL FROM:<a@corp.example>")
        assert refused.startswith("550 5.7.1 This gateway takes mail only from the organisation's own mail servers")
        assert "127.0.0.1" in refused
    finally:
        await raw.close()
    assert upstream.connections == 0


def test_config_show_prints_next_hops_as_tables_that_load_back(tmp_path: Path) -> None:
    import tomllib

    from smtpguard.cli.configuration import show_lines

    data = gateway_toml(
        tmp_path, next_hops=[{"host": "backup.example", "port": 587, "username": "u", "password_file": "/p"}]
    )
    settings = from_mapping(data)
    shown = tomllib.loads("\n".join(show_lines(settings, everything=False)))
    assert shown["gateway"]["next_hops"][0]["host"] == "backup.example"
    assert from_mapping(shown).gateway == settings.gateway


async def test_config_check_reaches_each_next_hop(upstream: Upstream, certs: Certs) -> None:
    from smtpguard.smtp.nexthop import probe_next_hops

    said: list[str] = []
    good = NextHopSettings(host="localhost", port=upstream.port, ca_file=certs.ca_file, timeout=5)
    assert await probe_next_hops((good,), "gw.test", said.append)
    assert said == [
        f"next hop localhost:{upstream.port} security=starttls: ok, TLS TLSv1.3, no DSN (parameters dropped)"
    ]
    unverified = replace(good, ca_file=None)  # the fixture's private CA is not in the system store
    assert not await probe_next_hops((unverified,), "gw.test", said.append)
    assert "CERTIFICATE_VERIFY_FAILED" in said[-1]


@pytest.mark.parametrize("listener", [0, 1])
async def test_mail_and_rcpt_without_an_argument_get_a_syntax_reply(gateway: Relay, listener: int) -> None:
    raw = await open_raw(gateway, listener)
    try:
        assert (await raw.cmd("MAIL")).startswith("501 ")
        assert (await raw.cmd("RCPT")).startswith("503 ")  # aiosmtpd: MAIL first
        assert (await raw.cmd("MAIL FROM:<a@corp.example> BOGUS=1")).startswith("555 ")
        assert (await raw.cmd("NOOP")).startswith("250")
    finally:
        await raw.close()


async def test_a_gateway_port_in_use_is_named(gateway: Relay) -> None:
    taken = port_of(gateway, 1)
    settings = replace(
        gateway.ctx.settings, gateway=replace(gateway.ctx.settings.gateway, listen=(Endpoint("127.0.0.1", taken),))
    )
    settings = replace(settings, server=replace(settings.server, listen=Endpoint("127.0.0.1", 0)))
    with pytest.raises(ConfigError, match=rf"\[gateway\] cannot listen on 127.0.0.1:{taken}"):
        await Relay.start(settings)


async def test_the_next_hops_timeout_bounds_its_data_reply(
    make_relay: RelayFactory, tmp_path: Path, upstream: Upstream, certs: Certs
) -> None:
    """[gateway.next_hop] timeout = 1, [upstream] timeout = 10: a next hop silent after the dot costs 1 s, not 10."""
    secret = tmp_path / "loop.secret"
    secret.write_bytes(SECRET)
    hop = NextHopSettings(host="localhost", port=upstream.port, ca_file=certs.ca_file, timeout=1)
    gw = {"listen": (Endpoint("127.0.0.1", 0),), "networks": (ipaddress.ip_network("127.0.0.0/8"),),
          "loop_secret_file": secret, "next_hop": hop}  # fmt: skip
    relay = await make_relay(gateway=gw, server={"auth": "none"})
    assert relay.ctx.settings.upstream.timeout == 10
    upstream.data_delay = 5.0
    raw = await open_raw(relay, 1)
    try:
        assert (await raw.cmd("MAIL FROM:<a@corp.example>")).startswith("250")
        assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
        assert (await raw.cmd("DATA")).startswith("354")
        started = asyncio.get_running_loop().time()
        reply = await asyncio.wait_for(raw.cmd("Subject: x\r\n\r\nhello\r\n."), 8)
        waited = asyncio.get_running_loop().time() - started
    finally:
        await raw.close()
    assert reply.startswith("451"), reply  # never 250: the next hop did not say it took the message
    assert waited < 4, waited
