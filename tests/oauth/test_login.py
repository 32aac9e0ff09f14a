"""`account login|status|logout` logic with a scripted terminal, against the stub identity provider."""

from __future__ import annotations

import re
import time

import pytest
import requests

from smtpguard.oauth.account import OAuthAccount
from smtpguard.oauth.errors import SignInRequired
from smtpguard.oauth.login import Flow, Prompter, sign_in, sign_out, status
from smtpguard.oauth.setup import setup_steps
from smtpguard.oauth.tokens import TokenStore

from ..smtp_fixtures import Certs
from .conftest import ALICE, browse
from .stub_idp import StubIdP


class Terminal:
    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)

    def last_url(self) -> str:
        urls = re.findall(r"https://\S+", "\n".join(self.lines))
        return str(urls[-1])

    def paste(self, prompt: str) -> str:
        """The user opened the address elsewhere; the browser ended on a page that does not load."""
        reply = requests.get(self.last_url(), verify=str(self.certs.ca_file), allow_redirects=False, timeout=10)
        assert reply.status_code == 302
        return reply.headers["Location"]

    def prompter(self) -> Prompter:
        return Prompter(say=self.say, ask=self.paste, open_browser=lambda url: browse(url, self.certs))


@pytest.mark.parametrize("flow", ["device", "browser", "paste"])
def test_microsoft_flows(flow: Flow, ms_account: OAuthAccount, store: TokenStore, certs: Certs) -> None:
    term = Terminal(certs)
    assert sign_in(ms_account, store, flow, term.prompter(), timeout=30) == ALICE
    now = time.time()
    st = status(ms_account, store)
    assert st.signed_in and st.who == ALICE
    assert st.access_expires_at and st.access_expires_at > now + 3000
    assert st.saved_at and abs(st.saved_at - now) < 60
    if flow == "paste":
        assert "http%3A%2F%2Flocalhost&" in term.last_url()  # the registered redirect, no port
    assert sign_out(ms_account, store) and not status(ms_account, store).signed_in


@pytest.mark.parametrize("flow", ["browser", "paste"])
def test_google_flows(flow: Flow, google_account: OAuthAccount, store: TokenStore, certs: Certs) -> None:
    term = Terminal(certs)
    assert sign_in(google_account, store, flow, term.prompter(), timeout=30) == ALICE
    assert "redirect_uri=http%3A%2F%2F127.0.0.1" in term.last_url()
    assert status(google_account, store).signed_in


def test_blocked_device_code_points_to_the_browser_flow(
    idp: StubIdP, ms_account: OAuthAccount, store: TokenStore, certs: Certs
) -> None:
    idp.deny_device = True
    with pytest.raises(SignInRequired, match="authorization_declined.*use --flow browser"):
        sign_in(ms_account, store, "device", Terminal(certs).prompter())


def test_google_has_no_device_flow(google_account: OAuthAccount, store: TokenStore, certs: Certs) -> None:
    with pytest.raises(ValueError, match="--flow browser"):
        sign_in(google_account, store, "device", Terminal(certs).prompter())


def test_app_only_checks_the_secret_and_stores_nothing(
    idp: StubIdP, app_account: OAuthAccount, store: TokenStore, certs: Certs
) -> None:
    assert sign_in(app_account, store, "device", Terminal(certs).prompter()) == "app app-client"
    assert idp.grants_seen == ["client_credentials"]
    assert status(app_account, store).signed_in and store.names() == []


def test_setup_steps_name_what_an_admin_must_do() -> None:
    delegated = setup_steps("microsoft")
    for must in (
        "http://localhost",
        "Allow public client flows",
        "SMTP.Send",
        "-SmtpClientAuthenticationDisabled $false",
    ):
        assert must in delegated
    assert "New-ServicePrincipal" in setup_steps("microsoft", app_only=True)
    assert "Desktop app" in setup_steps("google") and "https://mail.google.com/" in setup_steps("google")
    with pytest.raises(ValueError, match="microsoft or google"):
        setup_steps("yahoo")
