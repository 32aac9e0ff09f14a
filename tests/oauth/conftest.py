from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.tokens import TokenStore

from ..smtp_fixtures import Certs
from .stub_idp import StubIdP
from .xoauth2_upstream import XOAuth2Upstream

ALICE = "alice@contoso.test"


@pytest.fixture
def idp(certs: Certs) -> Iterator[StubIdP]:
    stub = StubIdP(certs.server_context()).start()
    yield stub
    stub.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> TokenStore:
    return TokenStore(state_dir)


def _stub_account(certs: Certs, **fields: Any) -> OAuthAccount:
    """An account whose identity provider is the local stub (trusted by the test CA, loopback allowed)."""
    return OAuthAccount(ca_file=certs.ca_file, loopback_only=True, **fields)


@pytest.fixture
def ms_account(idp: StubIdP, certs: Certs) -> OAuthAccount:
    return _stub_account(
        certs, name="alice", provider="microsoft", client_id="pub-client", mailbox=ALICE, authority=idp.authority
    )


@pytest.fixture
def app_account(idp: StubIdP, certs: Certs) -> OAuthAccount:
    app = {"mode": "oauth-app", "client_id": "app-client", "client_secret": "app-secret"}
    return _stub_account(certs, name="relay", provider="microsoft", authority=idp.authority, **app)


@pytest.fixture
def google_account(idp: StubIdP, certs: Certs) -> OAuthAccount:
    urls = {"auth_url": f"{idp.base}/google/authorize", "token_url": f"{idp.base}/google/token"}
    client = {"client_id": "g-client", "client_secret": "g-not-secret"}
    return _stub_account(certs, name="alice", provider="google", mailbox=ALICE, **client, **urls)


@pytest.fixture
async def xoauth2_upstream(idp: StubIdP, certs: Certs) -> AsyncIterator[XOAuth2Upstream]:
    up = await XOAuth2Upstream(idp).start(certs)
    yield up
    assert up.server is not None
    up.server.close()


def browse(url: str, certs: Certs) -> None:
    """The user's browser: open the sign-in page, follow the redirect back to the loopback listener."""
    with requests.Session() as browser:
        browser.trust_env = False
        browser.get(url, verify=str(certs.ca_file), timeout=10).raise_for_status()
