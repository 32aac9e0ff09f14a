"""The relay with OAuth upstreams, end to end: a real client over TCP -> the relay (auth = "local")
-> XOAUTH2 to an upstream that trusts only tokens the stub identity provider issued.

Sign-in goes through the real CLI (`smtpguard account login`) with the configuration file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from typer.testing import CliRunner

from smtpguard import config
from smtpguard.cli import app
from smtpguard.config import Endpoint, ServerSettings, Settings, UpstreamSettings
from smtpguard.passwords import hash_password
from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import open_store

from ..smtp_fixtures import Certs
from .conftest import ALICE
from .stub_idp import StubIdP
from .xoauth2_upstream import XOAuth2Upstream

SALES = "sales@contoso.test"
SMTP_AUTH_DISABLED = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox"
MESSAGE = f"From: {ALICE}\r\nTo: bob@example.com\r\nSubject: hi\r\nMessage-ID: <1@contoso.test>\r\n\r\nhello\r\n"


def write_config(tmp: Path, idp: StubIdP, certs: Certs, upstream_port: int = 25) -> Path:
    (tmp / "app-secret").write_text("app-secret\n")
    path = tmp / "smtpguard.toml"
    path.write_text(
        f"""
[server]
auth = "local"

[upstream]
host = "localhost"
port = {upstream_port}
ca_file = "{certs.ca_file}"

[store]
path = "{tmp / "list.db"}"

[oauth]
state_dir = "{tmp / "state"}"
provider = "microsoft"
client_id = "pub-client"
authority = "{idp.authority}"
ca_file = "{certs.ca_file}"

[oauth.alice]
mailbox = "{ALICE}"

[oauth.relay]
mode = "oauth-app"
mailbox = "{SALES}"
client_id = "app-client"
client_secret_file = "{tmp / "app-secret"}"

[credentials]
users = {{ sales = "oauth-app", carol = "oauth-app" }}
"""
    )
    return path


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


Start = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def start(
    tmp_path: Path, idp: StubIdP, certs: Certs, xoauth2_upstream: XOAuth2Upstream
) -> AsyncIterator[tuple[Path, Start]]:
    """(config file, start()): users alice (oauth, bound), sales (oauth-app, bound), carol (oauth-app, unbound)."""
    path = write_config(tmp_path, idp, certs)
    started: list[Relay] = []

    async def go(**credentials: object) -> Relay:
        loaded = config.load(path)
        settings: Settings = replace(
            loaded,
            server=ServerSettings(listen=Endpoint("127.0.0.1", 0), hostname="relay.test", auth="local", timeout=30),
            upstream=UpstreamSettings(host="localhost", port=xoauth2_upstream.port, ca_file=certs.ca_file, timeout=10),
            credentials=replace(loaded.credentials, **credentials),  # type: ignore[arg-type]
        )
        store = await open_store(settings.store.path, MatchRules())
        try:
            for name, addresses in (("alice", [ALICE]), ("sales", [SALES]), ("carol", [])):
                await store.set_user(name, hash_password(f"pw-{name}"))
                await store.set_user_addresses(name, addresses)
        finally:
            await store.close()
        relay = await Relay.start(settings)
        started.append(relay)
        return relay

    yield path, go
    for relay in started:
        await relay.stop(deadline=2)


async def client(relay: Relay, user: str) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.endpoints[0].port, timeout=15, start_tls=False)
    await c.connect()
    await c.login(user, f"pw-{user}")
    return c


async def send(relay: Relay, user: str, sender: str) -> aiosmtplib.SMTPResponse | aiosmtplib.SMTPResponseException:
    """One message from `user` as `sender`: the relay's final answer, or the refusal."""
    c = await client(relay, user)
    try:
        _, reply = await c.sendmail(sender, ["bob@example.com"], MESSAGE)
        await c.quit()  # the relay pools its upstream session at once
        return aiosmtplib.SMTPResponse(250, reply)
    except aiosmtplib.SMTPResponseException as exc:
        c.close()
        return exc


async def login_alice(path: Path) -> str:
    code, out = await asyncio.to_thread(
        cli, "account", "login", "alice", "--provider", "microsoft", "--flow", "device", "--config", str(path)
    )
    assert code == 0, out
    return out


async def signed_in(start: tuple[Path, Start]) -> Relay:
    """The relay started after alice signed in (device flow)."""
    path, go = start
    await login_alice(path)
    return await go()


async def test_device_login_via_the_cli_then_relayed_with_xoauth2(
    start: tuple[Path, Start], idp: StubIdP, xoauth2_upstream: XOAuth2Upstream, tmp_path: Path
) -> None:
    path, go = start
    out = await login_alice(path)
    assert f"signed in: alice as {ALICE}" in out
    code, status = cli("account", "status", "alice", "--config", str(path))
    assert code == 0 and "signed in" in status and ALICE in status
    relay = await go()
    reply = await send(relay, "alice", ALICE)
    assert isinstance(reply, aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.logins == [ALICE]
    assert xoauth2_upstream.delivered == [(ALICE, ["bob@example.com"])]
    _, listing = cli("account", "list", "--config", str(path))
    code, app_login = cli("account", "login", "relay", "--config", str(path))
    assert code == 0 and "app credential accepted: relay" in app_login
    shown = out + status + listing + app_login
    assert idp.issued and not [t for t in idp.issued if t in shown]  # tokens are never printed


async def test_app_only_relay_and_sessions_are_pooled_per_credential(
    start: tuple[Path, Start], xoauth2_upstream: XOAuth2Upstream, idp: StubIdP
) -> None:
    relay = await signed_in(start)
    assert isinstance(await send(relay, "sales", SALES), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.logins == [SALES]  # the app's token, user= the bound sender
    assert "client_credentials" in idp.grants_seen
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.logins == [SALES, ALICE]  # never the pooled sales session for alice
    assert isinstance(await send(relay, "sales", SALES), aiosmtplib.SMTPResponse)
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.logins == [SALES, ALICE]  # each reused its own pooled session
    assert xoauth2_upstream.delivered == [(SALES, ["bob@example.com"]), (ALICE, ["bob@example.com"])] * 2


async def test_a_token_expired_mid_session_is_refreshed_for_the_next_message(
    start: tuple[Path, Start], xoauth2_upstream: XOAuth2Upstream, idp: StubIdP, tmp_path: Path
) -> None:
    relay = await signed_in(start)
    relay.ctx.pool.size = 0  # every message opens a new upstream session
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    idp.expire_access_tokens()  # the relay still believes its token has an hour left
    idp.access_lifetime = 200  # from now on under the 5-minute margin: refreshed before each connection
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.refused == 1  # the stale token, then one forced refresh
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.refused == 1 and idp.grants_seen.count("refresh_token") >= 3
    assert len(xoauth2_upstream.delivered) == 4
    # The whole state directory holds none of the tokens the stub issued, in any form.
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    everything = b"".join(p.read_bytes() for p in files)
    assert len(idp.issued) >= 6 and files
    assert [t for t in idp.issued if t.encode() in everything or t.split("-", 1)[1].encode() in everything] == []


async def test_revoked_sign_in_gets_a_4xx_naming_the_command_and_nothing_is_sent(
    start: tuple[Path, Start], xoauth2_upstream: XOAuth2Upstream, idp: StubIdP
) -> None:
    relay = await signed_in(start)
    idp.revoke_user(ALICE)
    reply = await send(relay, "alice", ALICE)
    assert isinstance(reply, aiosmtplib.SMTPResponseException)
    assert reply.code == 454 and "4.7.0" in reply.message
    assert "smtpguard account login alice" in reply.message
    assert xoauth2_upstream.delivered == [] and xoauth2_upstream.logins == []


async def test_not_signed_in_and_identity_provider_down_are_temporary(
    start: tuple[Path, Start], xoauth2_upstream: XOAuth2Upstream, idp: StubIdP
) -> None:
    path, go = start
    relay = await go()
    reply = await send(relay, "alice", ALICE)  # never signed in
    assert isinstance(reply, aiosmtplib.SMTPResponseException)
    assert reply.code == 454 and "smtpguard account login alice" in reply.message
    await login_alice(path)
    idp.access_lifetime = 200  # every use refreshes
    await login_alice(path)
    idp.outage = True
    for user, sender in (("alice", ALICE), ("sales", SALES)):
        reply = await send(relay, user, sender)
        assert isinstance(reply, aiosmtplib.SMTPResponseException)
        assert reply.code == 451 and reply.message.startswith("4.4.3"), reply.message
    idp.outage = False
    assert isinstance(await send(relay, "alice", ALICE), aiosmtplib.SMTPResponse)
    assert xoauth2_upstream.delivered == [(ALICE, ["bob@example.com"])]


async def test_sender_binding_refuses_other_senders_before_the_upstream(
    start: tuple[Path, Start], xoauth2_upstream: XOAuth2Upstream, idp: StubIdP, tmp_path: Path
) -> None:
    relay = await signed_in(start)
    grants, saved = list(idp.grants_seen), (tmp_path / "state" / "oauth" / "alice.tok").read_bytes()
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.endpoints[0].port, timeout=15, start_tls=False)
    await c.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
        await c.login("alice", "not-her-password")
    c.close()
    assert wrong.value.code == 535  # and the tokens were not touched:
    assert idp.grants_seen == grants and (tmp_path / "state" / "oauth" / "alice.tok").read_bytes() == saved
    reply = await send(relay, "alice", "bob@contoso.test")
    assert isinstance(reply, aiosmtplib.SMTPResponseException)
    assert reply.code == 553 and reply.message.startswith("5.7.1") and ALICE in reply.message
    reply = await send(relay, "sales", ALICE)  # the app could send as anyone: only sales's own address
    assert isinstance(reply, aiosmtplib.SMTPResponseException) and reply.code == 553
    reply = await send(relay, "carol", "carol@contoso.test")  # oauth-app without addresses: refused
    assert isinstance(reply, aiosmtplib.SMTPResponseException)
    assert reply.code == 553 and "smtpguard user add carol --address" in reply.message
    assert xoauth2_upstream.logins == [] and xoauth2_upstream.delivered == []
    assert isinstance(await send(relay, "alice", ALICE.upper()), aiosmtplib.SMTPResponse)  # case does not matter


async def test_config_check_refreshes_and_logs_in_with_xoauth2(
    tmp_path: Path, idp: StubIdP, certs: Certs, xoauth2_upstream: XOAuth2Upstream
) -> None:
    path = write_config(tmp_path, idp, certs, xoauth2_upstream.port)
    assert (await asyncio.to_thread(cli, "init", "--config", str(path)))[0] == 0  # config check wants the list
    code, out = await asyncio.to_thread(cli, "config", "check", "--config", str(path))
    assert code == 1 and "oauth alice (microsoft, oauth): token refresh FAILED: not signed in" in out
    assert "run: smtpguard account login alice" in out
    await login_alice(path)
    refreshes = idp.grants_seen.count("refresh_token")
    code, out = await asyncio.to_thread(cli, "config", "check", "--config", str(path))
    assert code == 0, out
    assert f"oauth alice (microsoft, oauth): XOAUTH2 login as {ALICE}: ok" in out
    assert f"oauth relay (microsoft, oauth-app): XOAUTH2 login as {SALES}: ok" in out
    assert idp.grants_seen.count("refresh_token") == refreshes + 1  # a real refresh, not the cached token
    assert xoauth2_upstream.logins == [SALES, ALICE, SALES] and xoauth2_upstream.delivered == []
    assert not [t for t in idp.issued if t in out]


class Throttling(XOAuth2Upstream):
    """Exchange Online's answer past 30 messages a minute for one mailbox."""

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [stub]"


async def test_throttling_is_relayed_with_its_words_and_stays_temporary(
    tmp_path: Path, idp: StubIdP, certs: Certs
) -> None:
    up = await Throttling(idp).start(certs)
    path = write_config(tmp_path, idp, certs)
    await login_alice(path)
    loaded = config.load(path)
    settings = replace(
        loaded,
        server=ServerSettings(listen=Endpoint("127.0.0.1", 0), hostname="relay.test", auth="local", timeout=30),
        upstream=UpstreamSettings(host="localhost", port=up.port, ca_file=certs.ca_file, timeout=10),
    )
    store = await open_store(settings.store.path, MatchRules())
    await store.set_user("alice", hash_password("pw-alice"))
    await store.close()
    relay = await Relay.start(settings)
    try:
        reply = await send(relay, "alice", ALICE)
    finally:
        await relay.stop(deadline=2)
        assert up.server is not None
        up.server.close()
    assert isinstance(reply, aiosmtplib.SMTPResponseException)
    assert reply.code == 432 and "sender thread limit exceeded" in reply.message
    assert up.logins == [ALICE] and up.delivered == []


class SmtpAuthDisabled(XOAuth2Upstream):
    """Exchange Online when SMTP AUTH is off for the mailbox: every token is refused."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        self.refused += 1
        return AuthResult(success=False, handled=False, message=SMTP_AUTH_DISABLED)


async def test_refused_tokens_and_a_refused_app_are_temporary_and_say_what_to_do(
    tmp_path: Path, idp: StubIdP, certs: Certs
) -> None:
    up = await SmtpAuthDisabled(idp).start(certs)
    path = write_config(tmp_path, idp, certs, up.port)
    (tmp_path / "app-secret").write_text("wrong-secret\n")
    await login_alice(path)
    settings = replace(
        config.load(path),
        server=ServerSettings(listen=Endpoint("127.0.0.1", 0), hostname="relay.test", auth="local", timeout=30),
    )
    store = await open_store(settings.store.path, MatchRules())
    for name, address in (("alice", ALICE), ("sales", SALES)):
        await store.set_user(name, hash_password(f"pw-{name}"))
        await store.set_user_addresses(name, [address])
    await store.close()
    relay = await Relay.start(settings)
    try:
        refused_token = await send(relay, "alice", ALICE)
        refused_app = await send(relay, "sales", SALES)
    finally:
        await relay.stop(deadline=2)
        assert up.server is not None
        up.server.close()
    assert isinstance(refused_token, aiosmtplib.SMTPResponseException) and refused_token.code == 454
    assert "5.7.139" in refused_token.message and "smtpguard account login alice" in refused_token.message
    assert up.refused == 2  # the token, then once more after a forced refresh
    assert isinstance(refused_app, aiosmtplib.SMTPResponseException) and refused_app.code == 454
    assert "invalid_client" in refused_app.message and up.delivered == []


def test_user_add_refuses_an_app_only_user_without_a_sender_binding(tmp_path: Path, idp: StubIdP, certs: Certs) -> None:
    """carol sends with the app-only credential: `user add` says at once that she needs --address."""
    path = write_config(tmp_path, idp, certs)
    r = CliRunner().invoke(app, ["user", "add", "carol", "--password-stdin", "--config", str(path)], input="pw\n")
    assert r.exit_code == 2 and "give the addresses carol may send from with --address" in r.output
    code, _ = cli("user", "list", "--config", str(path))
    assert code == 0
    r = CliRunner().invoke(
        app, ["user", "add", "carol", "--password-stdin", "--address", "carol@contoso.test", "--config", str(path)],
        input="pw\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    code, out = cli("user", "add", "carol", "--any-sender", "--config", str(path))
    assert code == 2 and "--address" in out
    code, out = cli("user", "list", "--config", str(path))
    assert "carol@contoso.test" in out  # the binding was kept
    r = CliRunner().invoke(app, ["user", "add", "alice", "--password-stdin", "--config", str(path)], input="pw\n")
    assert r.exit_code == 0, r.output  # alice signs in as herself (oauth): no binding needed
