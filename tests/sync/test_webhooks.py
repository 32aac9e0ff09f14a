"""Webhook receivers, fed each provider's documented payload, authenticated the way
the provider does it, applied to a real SQLite store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from smtpguard.suppression.addresses import address_key
from smtpguard.suppression.store import SQLiteStore, open_store
from smtpguard.sync.connectors import Http, hubspot_lookup
from smtpguard.sync.replay import ReplayCache
from smtpguard.sync.sync import Applied, Lookup, process_webhook
from smtpguard.sync.webhooks import (
    WebhookInvalid,
    WebhookRefused,
    WebhookRequest,
    WebhookSource,
    receive,
)

from .conftest import RULES, StubFactory, keys, seed
from .stub_http import StubRequest, StubResponse

NOW = 1_764_619_200.0  # 2025-12-01T20:00:00Z
URL = "https://relay.example.com/webhooks/"


def k(text: str) -> str:
    return address_key(text, RULES)


async def deliver(
    store: SQLiteStore,
    source: WebhookSource,
    request: WebhookRequest,
    replay: ReplayCache,
    *,
    now: float = NOW,
    lookup: Lookup | None = None,
) -> Applied:
    return await process_webhook(store, source, request, rules=RULES, replay=replay, now=now, lookup=lookup)


# --- generic JSON (signed) -----------------------------------------------------------

GENERIC = WebhookSource("crm", "generic", "generic-secret")


def generic_request(body: bytes, *, stamp: int = int(NOW), secret: str = "generic-secret") -> WebhookRequest:
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Smtpguard-Timestamp": str(stamp),
               "X-Smtpguard-Signature": f"sha256={mac}"}  # fmt: skip
    return WebhookRequest("POST", URL + "crm", headers, body)


async def test_generic_signed_unsubscribe_and_resubscribe(store: SQLiteStore) -> None:
    replay = ReplayCache()
    body = json.dumps({"events": [{"action": "unsubscribe", "email": "Jane.Doe@Example.com", "reason": "form"}]})
    applied = await deliver(store, GENERIC, generic_request(body.encode()), replay)
    assert (applied.added, applied.removed) == (1, 0)
    hit = await store.match([k("jane.doe@example.com")])
    assert hit is not None and (hit.source, hit.reason) == ("crm", "form")

    again = json.dumps({"action": "resubscribe", "email": "jane.doe@example.com"}).encode()
    applied = await deliver(store, GENERIC, generic_request(again, stamp=int(NOW) + 5), replay, now=NOW + 5)
    assert (applied.added, applied.removed) == (0, 1)
    assert await keys(store) == set()


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (generic_request(b'{"action":"unsubscribe","email":"a@example.com"}', secret="forged"), "bad signature"),
        (generic_request(b'{"action":"unsubscribe","email":"a@example.com"}', stamp=int(NOW) - 301), "stale timestamp"),
        (generic_request(b'{"action":"unsubscribe","email":"a@example.com"}', stamp=int(NOW) + 301), "stale timestamp"),
        (WebhookRequest("POST", URL + "crm", {}, b'{"action":"unsubscribe","email":"a@example.com"}'), "unsigned"),
    ],
)
async def test_generic_refuses_forged_stale_and_unsigned(
    store: SQLiteStore, request_: WebhookRequest, why: str
) -> None:
    with pytest.raises(WebhookRefused, match=why):
        await deliver(store, GENERIC, request_, ReplayCache())
    assert await keys(store) == set()


async def test_generic_replayed_signed_request_is_refused(store: SQLiteStore) -> None:
    replay = ReplayCache()
    request = generic_request(b'{"action":"unsubscribe","email":"a@example.com"}')
    await deliver(store, GENERIC, request, replay)
    await store.remove([k("a@example.com")])
    with pytest.raises(WebhookRefused, match="signature already used"):
        await deliver(store, GENERIC, request, replay, now=NOW + 30)
    assert await keys(store) == set()


def test_generic_bad_payload_after_good_signature_is_invalid() -> None:
    with pytest.raises(WebhookInvalid, match="not JSON"):
        receive(GENERIC, generic_request(b"<xml/>"), now=NOW, replay=ReplayCache())
    with pytest.raises(WebhookInvalid, match="unknown action"):
        receive(GENERIC, generic_request(b'{"action":"delete","email":"a@b.com"}'), now=NOW, replay=ReplayCache())


# --- Mailchimp (secret in the URL, form-encoded) --------------------------------------

MAILCHIMP = WebhookSource("mailchimp", "mailchimp", "mc-secret")
MC_URL = URL + "mailchimp?secret=mc-secret"

# Mailchimp's documented audience webhook payloads.
MC_UNSUBSCRIBE = {
    "type": "unsubscribe", "fired_at": "2009-03-26 21:40:57", "data[action]": "unsub", "data[reason]": "manual",
    "data[id]": "8a25ff1d98", "data[list_id]": "a6b5da1054", "data[email]": "api+unsub@mailchimp.com",
    "data[email_type]": "html", "data[merges][EMAIL]": "api+unsub@mailchimp.com", "data[merges][FNAME]": "Mailchimp",
    "data[merges][LNAME]": "API", "data[merges][INTERESTS]": "Group1,Group2", "data[ip_opt]": "10.20.10.30",
    "data[campaign_id]": "cb398d21d2",
}  # fmt: skip
MC_SUBSCRIBE = {
    "type": "subscribe", "fired_at": "2009-03-26 21:35:57", "data[id]": "8a25ff1d98", "data[list_id]": "a6b5da1054",
    "data[email]": "api@mailchimp.com", "data[email_type]": "html", "data[merges][EMAIL]": "api@mailchimp.com",
    "data[merges][FNAME]": "Mailchimp", "data[merges][LNAME]": "API", "data[merges][INTERESTS]": "Group1,Group2",
    "data[ip_opt]": "10.20.10.30", "data[ip_signup]": "10.20.10.30",
}  # fmt: skip
MC_CLEANED = {
    "type": "cleaned", "fired_at": "2009-03-26 22:01:00", "data[list_id]": "a6b5da1054",
    "data[campaign_id]": "4fjk2ma9xd", "data[reason]": "hard", "data[email]": "api+cleaned@mailchimp.com",
}  # fmt: skip


def form(fields: dict[str, str], url: str = MC_URL) -> WebhookRequest:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "MailChimp"}
    return WebhookRequest("POST", url, headers, urlencode(fields).encode())


async def test_mailchimp_validation_get_is_answered(store: SQLiteStore) -> None:
    applied = await deliver(store, MAILCHIMP, WebhookRequest("GET", MC_URL, {"User-Agent": "MailChimp"}), ReplayCache())
    assert applied.note == "Mailchimp validation request" and applied.added == 0
    with pytest.raises(WebhookRefused, match="wrong secret"):
        await deliver(store, MAILCHIMP, WebhookRequest("GET", URL + "mailchimp?secret=guess", {}), ReplayCache())


async def test_mailchimp_unsubscribe_retry_and_resubscribe(store: SQLiteStore) -> None:
    replay = ReplayCache()
    first = await deliver(store, MAILCHIMP, form(MC_UNSUBSCRIBE), replay)
    assert first.added == 1
    assert await keys(store, "mailchimp") == {k("api+unsub@mailchimp.com")}

    # Mailchimp retries the same delivery: 200, nothing changes.
    await store.remove([k("api+unsub@mailchimp.com")])
    retry = await deliver(store, MAILCHIMP, form(MC_UNSUBSCRIBE), replay, now=NOW + 60)
    assert retry.note == "duplicate delivery" and (retry.added, retry.removed) == (0, 0)
    assert await keys(store) == set()

    await deliver(store, MAILCHIMP, form(MC_CLEANED), replay)
    assert await keys(store, "mailchimp") == {k("api+cleaned@mailchimp.com")}
    # api@ is the same mailbox as api+cleaned@ (sub-address tags are ignored): the re-subscribe removes it.
    gone = await deliver(store, MAILCHIMP, form(MC_SUBSCRIBE), replay)
    assert gone.removed == 1 and await keys(store) == set()


async def test_mailchimp_resubscribe_removes_only_its_own_entry(store: SQLiteStore) -> None:
    await seed(store, "manual", "api@mailchimp.com")
    replay = ReplayCache()
    applied = await deliver(store, MAILCHIMP, form(MC_SUBSCRIBE), replay)
    assert (applied.removed, applied.unchanged) == (0, 1)
    assert await keys(store, "manual") == {k("api@mailchimp.com")}


@pytest.mark.parametrize("url", [URL + "mailchimp", URL + "mailchimp?secret=mc-secreT"])
async def test_mailchimp_without_the_secret_is_refused(store: SQLiteStore, url: str) -> None:
    with pytest.raises(WebhookRefused):
        await deliver(store, MAILCHIMP, form(MC_UNSUBSCRIBE, url), ReplayCache())
    assert await keys(store) == set()


def test_mailchimp_ignores_deleted_contacts_and_profile_updates() -> None:
    replay = ReplayCache()
    deleted = receive(MAILCHIMP, form({**MC_UNSUBSCRIBE, "data[action]": "delete"}), now=NOW, replay=replay)
    profile = receive(MAILCHIMP, form({**MC_SUBSCRIBE, "type": "profile"}), now=NOW, replay=replay)
    assert deleted.events == () and profile.events == ()


# --- HubSpot (v3 signature, contact id looked up) --------------------------------------

HUBSPOT = WebhookSource("hubspot", "hubspot", "app-client-secret")
HS_URL = "https://relay.example.com/webhooks/hubspot"


def hubspot_event(object_id: int, value: str, event_id: int = 3816279340) -> dict[str, object]:
    # The documented contact.propertyChange payload, on the opt-out property.
    return {"objectId": object_id, "propertyName": "hs_email_optout", "propertyValue": value,
            "changeSource": "CRM_UI", "eventId": event_id, "subscriptionId": 25, "portalId": 33, "appId": 1160452,
            "occurredAt": 1462216307945, "subscriptionType": "contact.propertyChange", "attemptNumber": 0}  # fmt: skip


def hubspot_request(
    events: list[dict[str, object]], *, at: float = NOW, secret: str = "app-client-secret", url: str = HS_URL
) -> WebhookRequest:
    body = json.dumps(events)
    stamp = str(int(at * 1000))
    # HubSpot's steps: method + URI + body + timestamp, UTF-8, HMAC-SHA256 with the client secret, base64.
    uri = url.replace("%40", "@").replace("%3A", ":")
    digest = hmac.new(secret.encode(), f"POST{uri}{body}{stamp}".encode(), hashlib.sha256).digest()
    headers = {"Content-Type": "application/json", "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
               "X-HubSpot-Request-Timestamp": stamp, "X-HubSpot-Signature-Version": "v1"}  # fmt: skip
    return WebhookRequest("POST", url, headers, body.encode())


@pytest.fixture
async def crm(stub: StubFactory, http: Http) -> Lookup:
    contacts = {"1246965": "jane.doe@example.com", "51": "bob@example.org"}

    async def api(req: StubRequest) -> StubResponse:
        if req.headers.get("authorization") != "Bearer pat-na1-token":
            return StubResponse.of_json({"category": "INVALID_AUTHENTICATION"}, 401)
        contact = req.path.rsplit("/", 1)[1]
        if contact not in contacts:
            return StubResponse.of_json({"status": "error", "category": "OBJECT_NOT_FOUND"}, 404)
        return StubResponse.of_json({"id": contact, "properties": {"email": contacts[contact]}})

    server = await stub(api)
    return hubspot_lookup(http, "pat-na1-token", server.url)


async def test_hubspot_opt_out_is_looked_up_and_added(store: SQLiteStore, crm: Lookup) -> None:
    replay = ReplayCache()
    events = [hubspot_event(1246965, "true"), hubspot_event(404, "true", 2), hubspot_event(51, "false", 3)]
    await seed(store, "hubspot", "bob@example.org")
    applied = await deliver(store, HUBSPOT, hubspot_request(events), replay, lookup=crm)
    assert (applied.added, applied.removed) == (1, 1)  # contact 404 no longer exists: skipped
    assert await keys(store, "hubspot") == {k("jane.doe@example.com")}


async def test_hubspot_uri_is_signed_decoded(store: SQLiteStore, crm: Lookup) -> None:
    url = HS_URL + "?portal=33&contact=a%40b%3Ac"
    applied = await deliver(
        store, HUBSPOT, hubspot_request([hubspot_event(51, "true")], url=url), ReplayCache(), lookup=crm
    )
    assert applied.added == 1


async def test_hubspot_refuses_forged_stale_and_replayed(store: SQLiteStore, crm: Lookup) -> None:
    replay = ReplayCache()
    events = [hubspot_event(1246965, "true")]
    with pytest.raises(WebhookRefused, match="bad signature"):
        await deliver(store, HUBSPOT, hubspot_request(events, secret="guess"), replay, lookup=crm)
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        await deliver(store, HUBSPOT, hubspot_request(events, at=NOW - 6 * 60), replay, lookup=crm)
    assert await keys(store) == set()

    request = hubspot_request(events)
    await deliver(store, HUBSPOT, request, replay, lookup=crm)
    await store.remove([k("jane.doe@example.com")])
    with pytest.raises(WebhookRefused, match="already used"):
        await deliver(store, HUBSPOT, request, replay, lookup=crm, now=NOW + 10)
    assert await keys(store) == set()


# --- lemlist (secret echoed in the body) ---------------------------------------------

LEMLIST = WebhookSource("lemlist", "lemlist", "lem-secret")


def lemlist_request(secret: str | None = "lem-secret", url: str = URL + "lemlist", **fields: str) -> WebhookRequest:
    # lemlist's documented webhook envelope for an emailsUnsubscribed activity.
    payload = {"_id": "act_7RtGsx4Q3kQ9Hc2Ld", "type": "emailsUnsubscribed", "teamId": "tea_xxx",
               "createdAt": "2026-11-30T10:12:03.120Z", "campaignId": "cam_123", "campaignName": "Q4 outbound",
               "sequenceId": "seq_1", "sequenceStep": 1, "stepId": "stp_1", "leadId": "lea_42",
               "leadEmail": "prospect@example.net", "leadFirstName": "Pat", "leadLastName": "Doe",
               "sendUserId": "usr_1", "sendUserEmail": "sales@ours.example", "sendUserName": "Sam",
               "subject": "Quick question", **fields}  # fmt: skip
    if secret is not None:
        payload["secret"] = secret
    return WebhookRequest("POST", url, {"Content-Type": "application/json"}, json.dumps(payload).encode())


async def test_lemlist_unsubscribe_and_retry(store: SQLiteStore) -> None:
    replay = ReplayCache()
    assert (await deliver(store, LEMLIST, lemlist_request(), replay)).added == 1
    assert await keys(store, "lemlist") == {k("prospect@example.net")}
    await store.remove([k("prospect@example.net")])
    retry = await deliver(store, LEMLIST, lemlist_request(), replay, now=NOW + 120)
    assert retry.note == "duplicate delivery" and await keys(store) == set()
    other = await deliver(store, LEMLIST, lemlist_request(type="emailsOpened", _id="act_2"), replay)
    assert other.added == 0 and await keys(store) == set()


async def test_lemlist_secret_in_body_or_url(store: SQLiteStore) -> None:
    with pytest.raises(WebhookRefused, match="wrong secret"):
        await deliver(store, LEMLIST, lemlist_request("guess"), ReplayCache())
    with pytest.raises(WebhookRefused, match="no secret"):
        await deliver(store, LEMLIST, lemlist_request(None), ReplayCache())
    with pytest.raises(WebhookRefused):  # junk without a secret: refused, not "invalid"
        await deliver(store, LEMLIST, WebhookRequest("POST", URL + "lemlist", {}, b"junk"), ReplayCache())
    assert await keys(store) == set()
    applied = await deliver(store, LEMLIST, lemlist_request(None, URL + "lemlist?secret=lem-secret"), ReplayCache())
    assert applied.added == 1


# --- Brevo (bearer, basic auth or URL secret) ------------------------------------------

BREVO = WebhookSource("brevo", "brevo", "brevo-secret")
# Brevo's documented marketing "Unsubscribe" event.
BREVO_UNSUB = {"id": 123456, "camp_id": 12, "email": "reader@example.com", "campaign name": "My First Campaign",
               "date_sent": "2020-10-09 00:00:00", "date_event": "2020-10-09 00:00:00", "event": "unsubscribe",
               "tag": "", "ts_sent": 1604933619, "ts_event": 1604933737, "ts": 1604937337, "list_id": [3, 42],
               "sending_ip": "185.41.28.109"}  # fmt: skip


@pytest.mark.parametrize(
    ("url", "auth"),
    [
        (URL + "brevo", "Bearer brevo-secret"),
        (URL + "brevo", "Basic " + base64.b64encode(b"smtpguard:brevo-secret").decode()),
        (URL + "brevo?secret=brevo-secret", None),
    ],
)
async def test_brevo_unsubscribe_with_each_auth(store: SQLiteStore, url: str, auth: str | None) -> None:
    headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
    request = WebhookRequest("POST", url, headers, json.dumps(BREVO_UNSUB).encode())
    assert (await deliver(store, BREVO, request, ReplayCache())).added == 1
    assert await keys(store, "brevo") == {k("reader@example.com")}


async def test_brevo_batch_and_refusals(store: SQLiteStore) -> None:
    batch = [BREVO_UNSUB, {**BREVO_UNSUB, "email": "two@example.com", "ts_event": 1604933800},
             {**BREVO_UNSUB, "event": "opened", "email": "three@example.com"},
             {"event": "unsubscribed", "email": "trans@example.com", "id": 1, "date": "2020-10-09 00:00:00",
              "message-id": "<x@smtp-relay.mailin.fr>", "ts_event": 1604933654, "subject": "Hi"}]  # fmt: skip
    body = json.dumps(batch).encode()
    for auth in ("Bearer wrong", "Basic !!!", None):
        headers = {"Authorization": auth} if auth else {}
        with pytest.raises(WebhookRefused):
            await deliver(store, BREVO, WebhookRequest("POST", URL + "brevo", headers, body), ReplayCache())
    assert await keys(store) == set()
    request = WebhookRequest("POST", URL + "brevo", {"Authorization": "Bearer brevo-secret"}, body)
    assert (await deliver(store, BREVO, request, ReplayCache())).added == 3


# --- the replay cache -------------------------------------------------------------------


def test_replay_cache_expires_and_stays_bounded() -> None:
    cache = ReplayCache(ttl=10, size=3)
    cache.remember("a", 0)
    assert cache.seen("a", 9.9) and not cache.seen("a", 10)
    for n, key in enumerate("bcde"):
        cache.remember(key, 20 + n)
    assert len(cache) == 3 and not cache.seen("b", 23) and cache.seen("e", 23)


def test_a_source_needs_a_known_provider_and_a_secret() -> None:
    with pytest.raises(ValueError, match="unknown webhook provider"):
        WebhookSource("x", "sendgrid", "s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a secret"):
        WebhookSource("x", "brevo", "")


async def test_an_unsigned_delivery_that_failed_is_applied_on_retry(tmp_path: Path) -> None:
    replay = ReplayCache()
    broken = await open_store(tmp_path / "list.db", RULES)
    await broken.close()  # the store fails: the HTTP side answers 5xx and Mailchimp retries
    with pytest.raises(Exception):  # noqa: B017 - whatever the closed store raises
        await deliver(broken, MAILCHIMP, form(MC_UNSUBSCRIBE), replay)
    store = await open_store(tmp_path / "list.db", RULES)
    try:
        retry = await deliver(store, MAILCHIMP, form(MC_UNSUBSCRIBE), replay, now=NOW + 60)
        assert retry.added == 1 and retry.note == ""
    finally:
        await store.close()
