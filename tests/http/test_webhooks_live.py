"""Webhooks over real HTTP into a running relay, enforced at the next RCPT of an open SMTP session.

Each delivery is the provider's documented payload, signed (or carrying its
secret) the way the provider does it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import aiosmtplib
import httpx
import pytest

from smtpguard.suppression.store import EntryRow, utc_now

from ..sync.test_webhooks import BREVO_UNSUB, MC_SUBSCRIBE, MC_UNSUBSCRIBE, hubspot_event, lemlist_request
from .conftest import SECRETS, Side, open_session


def generic_delivery(address: str, action: str = "unsubscribe", at: int | None = None) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"events": [{"action": action, "email": address, "reason": "preference centre"}]}).encode()
    stamp = str(int(time.time()) if at is None else at)
    mac = hmac.new(SECRETS["generic"].encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Smtpguard-Timestamp": stamp,
            "X-Smtpguard-Signature": "sha256=" + mac}, body  # fmt: skip


def hubspot_delivery(url: str, object_id: int, value: str, at_ms: int | None = None) -> tuple[dict[str, str], bytes]:
    body = json.dumps([hubspot_event(object_id, value)])
    stamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    # HubSpot v3: base64 HMAC-SHA256(client secret, method + URI + body + timestamp).
    digest = hmac.new(SECRETS["hubspot"].encode(), f"POST{url}{body}{stamp}".encode(), hashlib.sha256).digest()
    return {"Content-Type": "application/json", "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
            "X-HubSpot-Request-Timestamp": stamp}, body.encode()  # fmt: skip


async def rcpt_code(client: aiosmtplib.SMTP, address: str) -> int:
    try:
        return (await client.rcpt(address)).code
    except aiosmtplib.SMTPRecipientRefused as exc:
        return exc.code


async def deliver(side: Side, provider: str, address: str) -> httpx.Response:
    """The provider's unsubscribe delivery for `address`."""
    async with side.client() as http:
        if provider == "generic":
            headers, body = generic_delivery(address)
            return await http.post("/webhooks/generic", headers=headers, content=body)
        if provider == "mailchimp":
            form = {**MC_UNSUBSCRIBE, "data[email]": address, "data[merges][EMAIL]": address}
            return await http.post("/webhooks/mailchimp?secret=mc-secret", content=urlencode(form).encode(),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        if provider == "hubspot":
            url = f"{side.base}/webhooks/hubspot"
            headers, body = hubspot_delivery(url, 1246965, "true")
            return await http.post("/webhooks/hubspot", headers=headers, content=body)
        if provider == "lemlist":
            body = lemlist_request(leadEmail=address).body
            return await http.post("/webhooks/lemlist", content=body, headers={"Content-Type": "application/json"})
        return await http.post("/webhooks/brevo", json={**BREVO_UNSUB, "email": address},
                               headers={"Authorization": "Bearer brevo-secret"})  # fmt: skip


ADDRESSES = {"generic": "gen.optout@example.com", "mailchimp": "mc.optout@example.com",
             "hubspot": "hs.optout@example.com", "lemlist": "lem.optout@example.com",
             "brevo": "brevo.optout@example.com"}  # fmt: skip


@pytest.mark.parametrize("provider", list(ADDRESSES))
async def test_a_delivery_is_enforced_at_the_next_rcpt_of_an_open_session(side: Side, provider: str) -> None:
    address = ADDRESSES[provider]
    client = await open_session(side)
    try:
        assert await rcpt_code(client, "bob@ok.example") == 250
        response = await deliver(side, provider, address)
        assert response.status_code == 200, response.text
        assert response.json()["added"] == 1
        assert await rcpt_code(client, address) == 550  # same session, the very next RCPT
    finally:
        await client.quit()
    entry = await side.relay.ctx.store.match([address])
    assert entry is not None and entry.source == provider


async def test_forged_stale_and_replayed_signatures_are_refused(side: Side, caplog: pytest.LogCaptureFixture) -> None:
    async with side.client() as http:
        headers, body = generic_delivery("forged@example.com")
        forged = {**headers, "X-Smtpguard-Signature": "sha256=" + "0" * 64}
        assert (await http.post("/webhooks/generic", headers=forged, content=body)).status_code == 401
        headers, body = generic_delivery("stale@example.com", at=int(time.time()) - 3600)
        assert (await http.post("/webhooks/generic", headers=headers, content=body)).status_code == 401
        headers, body = generic_delivery("replayed@example.com")
        assert (await http.post("/webhooks/generic", headers=headers, content=body)).status_code == 200
        assert (await http.post("/webhooks/generic", headers=headers, content=body)).status_code == 401
        url = f"{side.base}/webhooks/hubspot"
        headers, body = hubspot_delivery(url, 51, "true", at_ms=int((time.time() - 3600) * 1000))
        assert (await http.post("/webhooks/hubspot", headers=headers, content=body)).status_code == 401
        headers, body = hubspot_delivery(url, 51, "true")
        assert (await http.post("/webhooks/hubspot", headers={**headers, "X-HubSpot-Signature-v3": "AAAA"},
                                content=body)).status_code == 401  # fmt: skip
        unauthenticated = await http.post("/webhooks/brevo", json=BREVO_UNSUB)
        assert unauthenticated.status_code == 401
    store = side.relay.ctx.store
    for address in ("forged@example.com", "stale@example.com", "bob@example.org", "reader@example.com"):
        assert await store.match([address]) is None
    assert await store.match(["replayed@example.com"]) is not None
    refusals = [r.getMessage() for r in caplog.records if "refused request from 127.0.0.1" in r.getMessage()]
    assert len(refusals) == 6 and not any("gen-secret" in m or "brevo-secret" in m for m in refusals)


async def test_an_unsigned_retry_is_answered_200_and_changes_nothing(side: Side) -> None:
    store = side.relay.ctx.store
    first = await deliver(side, "lemlist", "retry@example.com")
    assert first.json()["added"] == 1
    # Someone removes the entry by hand between the delivery and lemlist's retry of it.
    await store.remove(["retry@example.com"])
    retry = await deliver(side, "lemlist", "retry@example.com")
    assert retry.status_code == 200
    assert retry.json() == {"added": 0, "removed": 0, "unchanged": 0, "invalid": [], "note": "duplicate delivery"}
    assert await store.match(["retry@example.com"]) is None


async def test_mailchimp_validation_get_is_answered(side: Side) -> None:
    async with side.client() as http:
        assert (await http.get("/webhooks/mailchimp?secret=mc-secret")).status_code == 200
        assert (await http.get("/webhooks/mailchimp")).status_code == 401
        assert (await http.get("/webhooks/nosuch")).status_code == 404


async def test_a_resubscribe_removes_only_that_sources_entry(side: Side) -> None:
    store = side.relay.ctx.store
    # Mailchimp's re-subscribe of api@mailchimp.com must not lift the entry another source put there.
    await store.add_entries([EntryRow("api@mailchimp.com", "address", "api@mailchimp.com", "crm", "asked", utc_now(),
                                      None)])  # fmt: skip
    async with side.client() as http:
        form = urlencode(MC_SUBSCRIBE).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await http.post("/webhooks/mailchimp?secret=mc-secret", content=form, headers=headers)
        assert r.status_code == 200 and r.json()["removed"] == 0
        assert await store.match(["api@mailchimp.com"]) is not None
        # HubSpot: opt out then opt back in removes HubSpot's own entry.
        url = f"{side.base}/webhooks/hubspot"
        headers, body = hubspot_delivery(url, 51, "true")
        assert (await http.post("/webhooks/hubspot", headers=headers, content=body)).json()["added"] == 1
        headers, body = hubspot_delivery(url, 51, "false")
        assert (await http.post("/webhooks/hubspot", headers=headers, content=body)).json()["removed"] == 1
    assert await store.match(["bob@example.org"]) is None
    assert await store.match(["jane.doe@example.com"]) is not None
