"""Microsoft sign-in and refresh through MSAL against the stub identity provider (offline, HTTPS)."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import parse_qsl, urlsplit

import pytest

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.errors import AuthorizationRefused, ProviderUnavailable, SignInRequired
from smtpguard.oauth.http import RefusedHost
from smtpguard.oauth.loopback import RedirectCatcher, parse_redirect
from smtpguard.oauth.microsoft import MicrosoftApp, MicrosoftDelegated
from smtpguard.oauth.tokens import TokenStore

from ..smtp_fixtures import Certs
from .conftest import ALICE, browse
from .stub_idp import DEVICE_GRANT, MS_SCOPE, StubIdP


def device_sign_in(account: OAuthAccount, store: TokenStore) -> MicrosoftDelegated:
    client = MicrosoftDelegated(account, store)
    flow = client.start_device_flow()
    assert "ABCD-EFGH" in flow["message"]
    assert client.finish_device_flow(flow) == ALICE
    return client


def live_refresh_tokens(idp: StubIdP) -> set[str]:
    return set(idp.refresh)


def test_device_flow_after_pending(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    idp.pending_polls = 1
    client = device_sign_in(ms_account, store)
    assert idp.grants_seen == [DEVICE_GRANT, DEVICE_GRANT]
    token = client.token()
    assert idp.validate(token.access_token, ALICE)
    assert idp.grants_seen == [DEVICE_GRANT, DEVICE_GRANT]  # served from the cache, no refresh
    assert MS_SCOPE in next(iter(idp.access.values())).scope.split()
    assert idp.hosts_seen and all(h.startswith("127.0.0.1:") for h in idp.hosts_seen)


def test_device_code_declined(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    idp.deny_device = True
    client = MicrosoftDelegated(ms_account, store)
    with pytest.raises(SignInRequired, match="authorization_declined"):
        client.finish_device_flow(client.start_device_flow())
    assert store.read("alice") is None


def test_browser_flow_with_pkce(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore, certs: Certs) -> None:
    client = MicrosoftDelegated(ms_account, store)
    with RedirectCatcher() as catcher:
        flow = client.start_browser_flow(catcher.redirect_uri())
        assert "code_challenge_method=S256" in flow["auth_uri"]
        browse(flow["auth_uri"], certs)
        params = catcher.wait(timeout=10)
    assert client.finish_browser_flow(flow, params) == ALICE
    assert idp.grants_seen == ["authorization_code"]
    assert idp.validate(client.token().access_token, ALICE)
    # a restart: a new client reads the encrypted cache and needs no sign-in
    assert idp.validate(MicrosoftDelegated(ms_account, store).token().access_token, ALICE)


def test_pasted_redirect_with_wrong_state_is_refused(
    idp: StubIdP, ms_account: OAuthAccount, store: TokenStore, certs: Certs
) -> None:
    client = MicrosoftDelegated(ms_account, store)
    with RedirectCatcher() as catcher:
        flow = client.start_browser_flow(catcher.redirect_uri())
        browse(flow["auth_uri"], certs)
        params = catcher.wait(timeout=10)
    forged = parse_redirect(f"http://localhost:1/?code={params['code']}&state=forged")
    with pytest.raises(AuthorizationRefused, match="sign-in answer refused"):
        client.finish_browser_flow(flow, forged)
    assert store.read("alice") is None
    with pytest.raises(ValueError, match="paste the whole address"):
        parse_redirect("http://localhost:1/")


def test_pkce_is_enforced_by_the_stub(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    """The stub really checks the verifier: a code redeemed with a wrong one is refused."""
    client = MicrosoftDelegated(ms_account, store)
    flow = client.start_browser_flow("http://localhost:9")
    query = dict(parse_qsl(urlsplit(flow["auth_uri"]).query))
    _, headers, _ = idp.handle("GET", f"/{idp.tenant}/oauth2/v2.0/authorize", query, {})
    params = parse_redirect(headers["Location"])
    flow["code_verifier"] = "not-the-verifier"
    with pytest.raises(SignInRequired, match="PKCE"):
        client.finish_browser_flow(flow, params)


def test_sign_in_as_someone_else_is_not_kept(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    idp.signed_in_user = "mallory@contoso.test"
    client = MicrosoftDelegated(ms_account, store)
    with pytest.raises(AuthorizationRefused, match="signed in as mallory@contoso.test, not alice@contoso.test"):
        client.finish_device_flow(client.start_device_flow())
    assert store.read("alice") is None
    with pytest.raises(SignInRequired, match="not signed in"):
        client.token()


def test_silent_refresh_near_expiry_persists_rotated_refresh_token(
    idp: StubIdP, ms_account: OAuthAccount, store: TokenStore
) -> None:
    idp.access_lifetime = 240  # under MSAL's 5-minute margin: the next use refreshes
    client = device_sign_in(ms_account, store)
    (first_rt,) = live_refresh_tokens(idp)
    idp.access_lifetime = 3600
    token = client.token()
    assert idp.grants_seen[-1] == "refresh_token"
    assert token.fresh() and idp.validate(token.access_token, ALICE)
    (rotated,) = live_refresh_tokens(idp)
    saved = (store.read("alice") or b"").decode()
    assert rotated in saved and first_rt not in saved
    # the stub rotates strictly: only a client that stored the newest refresh token can refresh again
    again = MicrosoftDelegated(ms_account, store).token(force_refresh=True)
    assert idp.validate(again.access_token, ALICE)


def test_revoked_refresh_says_sign_in_again(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    client = device_sign_in(ms_account, store)
    idp.revoke_user(ALICE)
    with pytest.raises(SignInRequired, match="invalid_grant: AADSTS50173") as refused:
        client.token(force_refresh=True)
    assert refused.value.command == "smtpguard account login alice"


def test_identity_provider_down_is_transient(idp: StubIdP, ms_account: OAuthAccount, store: TokenStore) -> None:
    device_sign_in(ms_account, store)
    idp.outage = True  # 503 from the token endpoint
    with pytest.raises(ProviderUnavailable, match="failing"):
        MicrosoftDelegated(ms_account, store).token(force_refresh=True)
    client = MicrosoftDelegated(ms_account, store)
    idp.outage = False
    client.token()  # discovery done while up
    idp.stop()  # then nothing listens at all
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        client.token(force_refresh=True)
    assert json.loads(store.read("alice") or b"{}")["RefreshToken"]  # the sign-in is kept for later


def test_login_elsewhere_is_picked_up_by_a_running_client(
    idp: StubIdP, ms_account: OAuthAccount, store: TokenStore
) -> None:
    running = device_sign_in(ms_account, store)
    idp.revoke_user(ALICE)
    with pytest.raises(SignInRequired):
        running.token(force_refresh=True)
    idp.revoked.clear()
    device_sign_in(ms_account, store)  # `smtpguard account login alice` in another process
    assert idp.validate(running.token(force_refresh=True).access_token, ALICE)


def test_client_credentials(idp: StubIdP, app_account: OAuthAccount) -> None:
    app = MicrosoftApp(app_account)
    token = app.token()
    assert idp.validate(token.access_token, "anyone@contoso.test")
    assert app.token() == token  # kept in memory while fresh
    assert app.token(force_refresh=True) != token
    assert idp.grants_seen == ["client_credentials", "client_credentials"]
    with pytest.raises(AuthorizationRefused, match="invalid_client") as refused:
        MicrosoftApp(replace(app_account, client_secret="wrong")).token()
    assert not isinstance(refused.value, SignInRequired)


def test_only_loopback_and_https(ms_account: OAuthAccount, store: TokenStore) -> None:
    with pytest.raises(RefusedHost):
        MicrosoftDelegated(replace(ms_account, authority="https://login.microsoftonline.com/x"), store).token()
    with pytest.raises(ValueError):
        MicrosoftDelegated(replace(ms_account, authority="http://127.0.0.1:1/x"), store).token()
