"""Google: loopback redirect and pasted redirect with PKCE, refresh, refusals (stub identity provider)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.errors import AuthorizationRefused, ProviderUnavailable, SignInRequired
from smtpguard.oauth.google import GoogleAuth
from smtpguard.oauth.loopback import RedirectCatcher, parse_redirect
from smtpguard.oauth.tokens import TokenStore

from ..smtp_fixtures import Certs
from .conftest import ALICE, browse
from .stub_idp import StubIdP


def loopback_sign_in(account: OAuthAccount, store: TokenStore, certs: Certs) -> GoogleAuth:
    client = GoogleAuth(account, store)
    with RedirectCatcher() as catcher:
        pending = client.start(catcher.redirect_uri("127.0.0.1"))
        assert "access_type=offline" in pending.url and "code_challenge_method=S256" in pending.url
        browse(pending.url, certs)
        assert client.finish(pending, catcher.wait(timeout=10)) == ALICE
    return client


def test_loopback_sign_in_then_cached_token(
    idp: StubIdP, google_account: OAuthAccount, store: TokenStore, certs: Certs
) -> None:
    client = loopback_sign_in(google_account, store, certs)
    token = client.token()
    assert idp.validate(token.access_token, ALICE)
    assert client.token() == token
    assert idp.grants_seen == ["authorization_code"]


def test_pasted_redirect(idp: StubIdP, google_account: OAuthAccount, store: TokenStore) -> None:
    """Headless: the user opens the address elsewhere and pastes back where the browser ended."""
    client = GoogleAuth(google_account, store)
    pending = client.start("http://127.0.0.1:1")
    _, headers, _ = idp.handle("GET", "/google/authorize", dict(parse_qsl(urlsplit(pending.url).query)), {})
    client.finish(pending, parse_redirect(headers["Location"]))
    assert idp.validate(client.token().access_token, ALICE)


def test_refresh_near_expiry_and_rotation(
    idp: StubIdP, google_account: OAuthAccount, store: TokenStore, certs: Certs
) -> None:
    idp.access_lifetime = 120
    client = loopback_sign_in(google_account, store, certs)
    (first_rt,) = idp.refresh
    token = client.token()
    assert idp.grants_seen == ["authorization_code", "refresh_token"]
    (rotated,) = idp.refresh
    saved = json.loads(store.read("alice") or b"{}")
    assert saved["refresh_token"] == rotated != first_rt
    assert saved["access_token"] == token.access_token


def test_refusals(idp: StubIdP, google_account: OAuthAccount, store: TokenStore, certs: Certs) -> None:
    client = GoogleAuth(google_account, store)
    with pytest.raises(SignInRequired, match="not signed in"):
        client.token()
    pending = client.start("http://127.0.0.1:1")
    with pytest.raises(AuthorizationRefused, match="access_denied"):
        client.finish(pending, {"error": "access_denied", "state": pending.state})
    with pytest.raises(AuthorizationRefused, match="state"):
        client.finish(pending, {"code": "x", "state": "forged"})
    loopback_sign_in(google_account, store, certs)
    idp.revoke_user(ALICE)
    with pytest.raises(SignInRequired, match="invalid_grant"):
        client.token(force_refresh=True)
    idp.revoked.clear()
    idp.outage = True
    with pytest.raises(ProviderUnavailable):
        client.token(force_refresh=True)
    idp.stop()
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        client.token(force_refresh=True)
