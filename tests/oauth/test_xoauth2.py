"""End to end: tokens from the broker, XOAUTH2 with aiosmtplib to an upstream that trusts only the stub.

Also: what lies in the state directory afterwards (no token readable, modes 0600).
"""

from __future__ import annotations

import asyncio
import stat
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.broker import TokenBroker
from smtpguard.oauth.errors import ProviderUnavailable, SignInRequired
from smtpguard.oauth.microsoft import MicrosoftDelegated
from smtpguard.oauth.tokens import TokenStore

from ..smtp_fixtures import Certs
from .conftest import ALICE
from .stub_idp import StubIdP
from .test_google import loopback_sign_in
from .xoauth2_upstream import MS_REFUSAL, XOAuth2Upstream

MESSAGE = f"From: {ALICE}\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


async def sign_in(account: OAuthAccount, store: TokenStore) -> None:
    client = MicrosoftDelegated(account, store)
    flow = await asyncio.to_thread(client.start_device_flow)
    await asyncio.to_thread(client.finish_device_flow, flow)


def smtp(upstream: XOAuth2Upstream, certs: Certs) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname="127.0.0.1", port=upstream.port, start_tls=True, tls_context=certs.client_context(), timeout=10
    )


async def test_issued_token_logs_in_and_bogus_is_refused(
    ms_account: OAuthAccount, store: TokenStore, xoauth2_upstream: XOAuth2Upstream, certs: Certs
) -> None:
    await sign_in(ms_account, store)
    token = await TokenBroker(store).access_token(ms_account)
    async with smtp(xoauth2_upstream, certs) as client:
        await client.ehlo()
        assert "xoauth2" in client.server_auth_methods and "plain" not in client.server_auth_methods
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.auth_xoauth2(ALICE, "at-bogus")
        assert refused.value.code == 535 and "5.7.3" in refused.value.message
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.auth_xoauth2("mallory@contoso.test", token)  # alice's token, someone else's name
        reply = await client.auth_xoauth2(ALICE, token)
        assert reply.code == 235
        await client.sendmail(ALICE, ["bob@example.com"], MESSAGE)
    assert xoauth2_upstream.logins == [ALICE]
    assert xoauth2_upstream.delivered == [(ALICE, ["bob@example.com"])]
    assert MS_REFUSAL.startswith("535 5.7.3")


async def test_google_style_refusal_then_google_token(
    google_account: OAuthAccount, store: TokenStore, xoauth2_upstream: XOAuth2Upstream, certs: Certs
) -> None:
    xoauth2_upstream.google_style = True
    await asyncio.to_thread(loopback_sign_in, google_account, store, certs)
    token = await TokenBroker(store).access_token(google_account)
    async with smtp(xoauth2_upstream, certs) as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.auth_xoauth2(ALICE, "at-bogus")
        assert refused.value.code == 535 and "5.7.8" in refused.value.message
        assert (await client.auth_xoauth2(ALICE, token)).code == 235
    assert xoauth2_upstream.refused == 1 and xoauth2_upstream.logins == [ALICE]


async def test_token_generator_and_app_only(
    app_account: OAuthAccount, store: TokenStore, xoauth2_upstream: XOAuth2Upstream, certs: Certs
) -> None:
    """What the relay will do: `oauth_token_generator=` with the app-only credential, user= the sender."""
    broker = TokenBroker(store)

    async def generator() -> str:
        return await broker.access_token(app_account)

    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=xoauth2_upstream.port,
        start_tls=True,
        tls_context=certs.client_context(),
        username="sales@contoso.test",
        oauth_token_generator=generator,
    )
    async with client:
        await client.sendmail("sales@contoso.test", ["bob@example.com"], MESSAGE)
    assert xoauth2_upstream.logins == ["sales@contoso.test"]
    assert store.names() == []  # app-only tokens are never written


async def test_token_expired_mid_session_refresh_once_and_retry(
    idp: StubIdP, ms_account: OAuthAccount, store: TokenStore, xoauth2_upstream: XOAuth2Upstream, certs: Certs
) -> None:
    await sign_in(ms_account, store)
    broker = TokenBroker(store)
    token = await broker.access_token(ms_account)
    idp.expire_access_tokens()  # the relay's cache still believes it has an hour left
    assert await broker.access_token(ms_account) == token
    async with smtp(xoauth2_upstream, certs) as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.auth_xoauth2(ALICE, token)
    fresh = await broker.access_token(ms_account, force_refresh=True)
    assert fresh != token
    async with smtp(xoauth2_upstream, certs) as client:
        assert (await client.auth_xoauth2(ALICE, fresh)).code == 235


async def test_broker_errors_and_concurrent_refresh(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    broker = TokenBroker(store)
    with pytest.raises(SignInRequired, match="not signed in"):
        await broker.access_token(ms_account)
    await sign_in(ms_account, store)
    broker = TokenBroker(store)
    idp.expire_access_tokens()
    tokens = await asyncio.gather(*(broker.access_token(ms_account, force_refresh=True) for _ in range(4)))
    assert all(idp.validate(t, ALICE) for t in tokens)  # serialised: each used the newest refresh token
    idp.stop()
    with pytest.raises(ProviderUnavailable):
        await broker.access_token(ms_account, force_refresh=True)


async def test_no_token_readable_in_the_state_directory(
    idp: StubIdP,
    ms_account: OAuthAccount,
    google_account: OAuthAccount,
    store: TokenStore,
    state_dir: Path,
    certs: Certs,
) -> None:
    idp.access_lifetime = 200  # every use refreshes: many rotations
    await sign_in(ms_account, store)
    broker = TokenBroker(store)
    for _ in range(3):
        await broker.access_token(ms_account)
    gmail = replace(google_account, name="alice-gmail")
    await asyncio.to_thread(loopback_sign_in, gmail, store, certs)
    await broker.access_token(gmail)
    assert len(idp.issued) >= 10 and store.names() == ["alice", "alice-gmail"]
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    everything = b"".join(p.read_bytes() for p in files)
    leaked = [t for t in idp.issued if t.encode() in everything or t.split("-", 1)[1].encode() in everything]
    assert leaked == []
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o600"}
    assert stat.S_IMODE((state_dir / "oauth").stat().st_mode) == 0o700
    # and the store does hold them: the newest of each, decrypted
    assert any(rt.encode() in (store.read("alice") or b"") for rt in idp.refresh)
