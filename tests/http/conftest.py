"""A running relay with its HTTP side, as `serve` starts them (runtime.extras), on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from smtpguard.config import Endpoint, SyncSettings
from smtpguard.http.auth import create_token
from smtpguard.runtime.extras import Extras, start_extras
from smtpguard.runtime.server import Relay

from ..conftest import add_entries
from ..smtp_fixtures import Certs, Upstream, relay_settings
from ..sync import conftest as sync_fixtures
from ..sync.conftest import StubFactory
from ..sync.stub_http import StubRequest, StubResponse

stub = sync_fixtures.stub  # the provider API stub fixture, shared with tests/sync

SECRETS = {"generic": "gen-secret", "mailchimp": "mc-secret", "hubspot": "app-client-secret",
           "lemlist": "lem-secret", "brevo": "brevo-secret"}  # fmt: skip
HUBSPOT_TOKEN = "pat-na1-token"
CONTACTS = {"1246965": "hs.optout@example.com", "51": "bob@example.org"}


@dataclass
class Side:
    relay: Relay
    extras: Extras
    base: str  # http://127.0.0.1:PORT
    write: str  # a write token
    read: str  # a read token

    @property
    def smtp_port(self) -> int:
        return self.relay.endpoints[0].port

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10)


async def crm_stub(stub: StubFactory) -> str:
    async def api(req: StubRequest) -> StubResponse:
        if req.headers.get("authorization") != f"Bearer {HUBSPOT_TOKEN}":
            return StubResponse.of_json({"category": "INVALID_AUTHENTICATION"}, 401)
        contact = req.path.rsplit("/", 1)[1]
        if contact not in CONTACTS:
            return StubResponse.of_json({"status": "error", "category": "OBJECT_NOT_FOUND"}, 404)
        return StubResponse.of_json({"id": contact, "properties": {"email": CONTACTS[contact]}})

    return (await stub(api)).url


@pytest.fixture
async def side(tmp_path: Path, upstream: Upstream, certs: Certs, stub: StubFactory) -> AsyncIterator[Side]:
    crm = await crm_stub(stub)
    (tmp_path / "hubspot.token").write_text(HUBSPOT_TOKEN)
    entries = []
    for provider, secret in SECRETS.items():
        (tmp_path / f"{provider}.secret").write_text(secret + "\n")
        extra = {"token_file": tmp_path / "hubspot.token", "base_url": crm} if provider == "hubspot" else {}
        entries.append(SyncSettings(provider, provider, webhook_secret_file=tmp_path / f"{provider}.secret", **extra))  # type: ignore[arg-type]
    settings = relay_settings(tmp_path, upstream, certs, http={"listen": Endpoint("127.0.0.1", 0)})
    settings = replace(settings, sync=tuple(entries))
    await add_entries(settings.store.path, "jane.doe@example.com")
    relay = await Relay.start(settings)
    extras = await start_extras(relay, settings)
    assert extras.http_server is not None
    write = await create_token(relay.ctx.store, "crm-bot", "write")
    read = await create_token(relay.ctx.store, "grafana", "read")
    assert write and read
    yield Side(relay, extras, f"http://127.0.0.1:{extras.http_server.endpoint.port}", write, read)
    await extras.stop()
    await relay.stop(deadline=2)


async def open_session(side: Side) -> aiosmtplib.SMTP:
    """An SMTP session past MAIL FROM, over real TCP."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=side.smtp_port, start_tls=False, timeout=10)
    await client.connect()
    await client.login("alice", "s3cret")
    await client.mail("alice@corp.example")
    return client
