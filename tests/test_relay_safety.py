"""Never an open relay, never passwords in clear: configurations the relay refuses.

Nothing here binds a non-loopback address: `relay_problems` is pure, and
`Relay.start` is only called once `relay_problems` has been seen to refuse
(and with a TEST-NET address that could not be bound anyway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smtpguard.config import Endpoint, Settings
from smtpguard.runtime.safety import relay_problems
from smtpguard.runtime.server import Relay, RelayRefused

from .conftest import RelayFactory
from .relay_helpers import SENDER, aio, message
from .smtp_fixtures import Certs, Upstream, relay_settings

LAN = Endpoint("192.0.2.10", 2525)  # TEST-NET-1: never bound here
ANY = Endpoint("0.0.0.0", 2525)
NETS = ipaddress.ip_network


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(tmp_path: Path, upstream: Upstream, certs: Certs) -> SettingsFor:
    """Relay settings over the test upstream, with these `[server]` keys."""
    return lambda **server: relay_settings(tmp_path, upstream, certs, server=server)


@pytest.mark.parametrize("catch_all", ["0.0.0.0/0", "::/0"])
@pytest.mark.parametrize("listen", [Endpoint("127.0.0.1", 2525), ANY])
def test_auth_none_with_catch_all_network(settings_for: SettingsFor, catch_all: str, listen: Endpoint) -> None:
    s = settings_for(auth="none", listen=listen, trusted_networks=(NETS("127.0.0.0/8"), NETS(catch_all)))
    problems = relay_problems(s)
    assert len(problems) >= 1 and catch_all in problems[0] and "anyone" in problems[0]


def test_auth_none_public_listener_only_loopback_trusted(settings_for: SettingsFor) -> None:
    s = settings_for(auth="none", listen=ANY)
    problems = relay_problems(s)
    assert len(problems) == 1 and "0.0.0.0:2525" in problems[0] and "trusted_networks" in problems[0]
    # the same with the LAN listed is a sane office set-up
    lan = replace(s, server=replace(s.server, trusted_networks=(NETS("127.0.0.0/8"), NETS("192.168.10.0/24"))))
    assert relay_problems(lan) == []


def test_auth_none_public_smtps_listener_only_loopback_trusted(settings_for: SettingsFor, certs: Certs) -> None:
    s = settings_for(
        auth="none",
        smtps_listen=Endpoint("0.0.0.0", 465),
        tls_cert=certs.cert_file,
        tls_key=certs.key_file,
    )
    assert any("0.0.0.0:465" in p for p in relay_problems(s))


@pytest.mark.parametrize("auth", ["passthrough", "local"])
def test_password_auth_off_loopback_needs_tls(settings_for: SettingsFor, certs: Certs, auth: str) -> None:
    s = settings_for(auth=auth, listen=ANY)
    problems = relay_problems(s)
    assert len(problems) == 1 and "in clear" in problems[0] and auth in problems[0]
    with_tls = replace(s, server=replace(s.server, tls_cert=certs.cert_file, tls_key=certs.key_file))
    assert relay_problems(with_tls) == []


def test_loopback_defaults_are_fine(settings_for: SettingsFor) -> None:
    for auth in ("passthrough", "local", "none"):
        assert relay_problems(settings_for(auth=auth)) == []


@pytest.mark.parametrize(
    "server",
    [
        {"auth": "none", "trusted_networks": (NETS("0.0.0.0/0"),)},
        {"auth": "none", "listen": LAN},
        {"auth": "passthrough", "listen": LAN},
    ],
)
async def test_start_refuses_before_binding(settings_for: SettingsFor, server: dict[str, Any]) -> None:
    s = settings_for(**server)
    assert relay_problems(s), "must be refused before Relay.start could bind anything"
    with pytest.raises(RelayRefused) as refused:
        await Relay.start(s)
    assert str(refused.value).startswith("refusing to start: ")
    assert not s.store.path.exists()  # refused before even opening the list


async def test_reload_refuses_unsafe_settings_and_keeps_running(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"auth": "none"})
    old = relay.ctx.settings
    bad = replace(old, server=replace(old.server, trusted_networks=(NETS("0.0.0.0/0"),)))
    with pytest.raises(RelayRefused):
        await relay.reload(bad)
    assert relay.ctx.settings is old
    c = await aio(relay, login=None)
    await c.sendmail(SENDER, ["bob@ok.example"], message())
    await c.quit()
    assert len(upstream.received) == 1
