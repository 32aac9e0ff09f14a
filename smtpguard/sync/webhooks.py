"""Webhook receivers: each provider's authentication, and its payload as events.

Pure functions over a `WebhookRequest` (method, the full URL as the provider
called it, headers, raw body): no web framework, no I/O.  `receive()` raises
`WebhookRefused` (the HTTP side answers 401 and logs the reason, never the
secret) or `WebhookInvalid` (400), or returns a `Delivery` whose events
`smtpguard.sync.sync.process_webhook` applies (200).  An unsubscribe adds an
entry under the receiver's source name; a re-subscribe removes that source's
entry only.

Idempotency.  A signed request (generic, HubSpot) with a bad signature, a
timestamp outside the tolerance or a signature already used is refused.  An
unsigned delivery (Mailchimp, lemlist, Brevo: these providers do not sign) is
authenticated by a shared secret; the provider's own retry of the same body is
answered 200 with no change (`Delivery.note == "duplicate delivery"`), since
refusing it would make the provider retry and finally disable the webhook.

Settings to paste in each tool.  BASE is the relay's public HTTPS address,
SOURCE the receiver's source name, SECRET its secret (`openssl rand -hex 32`);
the receiver's URL is BASE/webhooks/SOURCE (the HTTP side's route):

- generic: POST JSON to BASE/webhooks/SOURCE, signed (see `sign_generic`).
- Mailchimp: Audience > Manage audience > Settings > Webhooks > Create new:
  URL `BASE/webhooks/SOURCE?secret=SECRET`; tick "Unsubscribes", "Cleaned
  address" and "Subscribes" (re-subscribes); any sources.  Mailchimp checks
  the URL with a GET first, which is answered 200.
- HubSpot: a private or public app; Webhooks target URL `BASE/webhooks/SOURCE`;
  subscription "Contact > Property change > hs_email_optout" (Opted out of
  all email).  SECRET is the app's client secret (private apps: Auth > Client
  secret), which HubSpot uses for its v3 signature; the receiver also needs an
  access token with `crm.objects.contacts.read` to look the address up.
- lemlist: Settings > Integrations > Webhooks (or `POST /api/hooks`): URL
  `BASE/webhooks/SOURCE`, event `emailsUnsubscribed`, secret SECRET (lemlist
  echoes it in the body; `?secret=SECRET` in the URL works too).
- Brevo: Settings > Webhooks > Add (marketing, event "Unsubscribed";
  transactional works too): URL `BASE/webhooks/SOURCE?secret=SECRET`, or by
  API with `"auth": {"type": "bearer", "token": "SECRET"}`, or basic auth
  `https://smtpguard:SECRET@HOST/webhooks/SOURCE`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from smtpguard.sync.replay import ReplayCache

Provider = Literal["generic", "mailchimp", "hubspot", "lemlist", "brevo"]
PROVIDERS: tuple[str, ...] = get_args(Provider)
Action = Literal["add", "remove"]

SECRET_PARAM = "secret"  # ?secret=... for the providers that cannot sign
GENERIC_SIGNATURE = "X-Smtpguard-Signature"
GENERIC_TIMESTAMP = "X-Smtpguard-Timestamp"
HUBSPOT_SIGNATURE = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP = "X-HubSpot-Request-Timestamp"
HUBSPOT_OPTOUT = "hs_email_optout"
DEFAULT_TOLERANCE = 300.0  # seconds either way; HubSpot documents 5 minutes


class WebhookError(Exception):
    """A webhook request that is not processed; the message says why (never a secret)."""


class WebhookRefused(WebhookError):
    """Not authenticated: no or bad secret or signature, stale timestamp, replay (401)."""


class WebhookInvalid(WebhookError):
    """Authenticated, but the body is not the provider's payload (400)."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    # scheme://host/path?query as the provider called it: HubSpot signs it, so behind a
    # reverse proxy build it from the configured public base URL, not the Host header.
    url: str
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), None)

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.url).query, keep_blank_values=True).get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """Add (unsubscribed) or remove (re-subscribed) one address for one source."""

    action: Action
    source: str
    address: str | None  # None until a HubSpot contact id is looked up
    reason: str = "unsubscribed"
    contact_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    events: tuple[WebhookEvent, ...] = ()
    note: str = ""  # why nothing (or less) happened, for the log
    receipt: str | None = None  # unsigned: remember this key once the events are applied


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One configured receiver: its source name, provider and secret."""

    name: str
    provider: Provider
    secret: str
    tolerance: float = DEFAULT_TOLERANCE
    hubspot_properties: tuple[str, ...] = (HUBSPOT_OPTOUT,)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown webhook provider {self.provider!r} (one of {', '.join(PROVIDERS)})")
        if not self.secret:
            raise ValueError(f"webhook source {self.name!r} needs a secret")


def receive(source: WebhookSource, request: WebhookRequest, *, now: float, replay: ReplayCache) -> Delivery:
    """Authenticate `request` the way `source.provider` does and read its events.

    `now` is Unix time in seconds.  Raises WebhookRefused or WebhookInvalid.
    """
    return _RECEIVERS[source.provider](source, request, now, replay)


# --- shared pieces ---------------------------------------------------------------


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _check_secret(source: WebhookSource, *candidates: str | None) -> None:
    """One of the places the provider can carry the shared secret must hold it."""
    if not any(c is not None and _same(c, source.secret) for c in candidates):
        given = any(c is not None for c in candidates)
        raise WebhookRefused("wrong secret" if given else "no secret (add ?secret=... to the webhook URL)")


def _check_fresh(source: WebhookSource, stamp: float, now: float) -> None:
    if abs(now - stamp) > source.tolerance:
        raise WebhookRefused(f"stale timestamp ({now - stamp:+.0f} s off, tolerance {source.tolerance:.0f} s)")


def _check_unused(source: WebhookSource, signature: str, now: float, replay: ReplayCache) -> None:
    key = f"sig:{source.name}:{signature}"
    if replay.seen(key, now):
        raise WebhookRefused("signature already used (replayed request)")
    replay.remember(key, now)


def _unsigned(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> str | None:
    """The receipt of an unsigned delivery, or None when this body was already applied."""
    digest = hashlib.sha256(request.method.upper().encode() + b"\0" + request.body).hexdigest()
    key = f"body:{source.name}:{digest}"
    return None if replay.seen(key, now) else key


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookInvalid(f"the body is not JSON ({exc})") from None


def _objects(payload: Any) -> list[dict[str, Any]]:
    """A single event object or a list of them (batched deliveries)."""
    items = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(i, dict) for i in items):
        raise WebhookInvalid("expected a JSON object or a list of objects")
    return items


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _delivery(events: Iterable[WebhookEvent | None], skipped: int = 0, receipt: str | None = None) -> Delivery:
    kept = tuple(e for e in events if e is not None)
    note = "no unsubscribe or re-subscribe in this delivery" if not kept else ""
    if skipped:
        note = f"{skipped} event(s) without an address skipped" + (f"; {note}" if note else "")
    return Delivery(kept, note, receipt)


def _unsigned_delivery(
    source: WebhookSource,
    request: WebhookRequest,
    now: float,
    replay: ReplayCache,
    read: Callable[[], tuple[list[WebhookEvent | None], int]],
) -> Delivery:
    receipt = _unsigned(source, request, now, replay)
    if receipt is None:
        return Delivery(note="duplicate delivery")
    events, skipped = read()
    return _delivery(events, skipped, receipt)


def _adds(
    source: WebhookSource, items: list[dict[str, Any]], kind: tuple[str, set[str]], field: str, reason: str
) -> tuple[list[WebhookEvent | None], int]:
    """Unsubscribe events (`item[kind[0]]` in `kind[1]`) of a JSON payload; (events, skipped)."""
    events: list[WebhookEvent | None] = []
    skipped = 0
    for item in items:
        if item.get(kind[0]) not in kind[1]:
            continue
        address = _text(item.get(field))
        if address is None:
            skipped += 1
        else:
            events.append(WebhookEvent("add", source.name, address, reason))
    return events, skipped


# --- generic JSON --------------------------------------------------------------

_GENERIC_ADD = frozenset({"unsubscribe", "unsubscribed"})
_GENERIC_REMOVE = frozenset({"resubscribe", "resubscribed", "subscribe", "subscribed"})


def sign_generic(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Smtpguard-Signature` value: `sha256=` + hex HMAC-SHA256(secret, "<timestamp>." + body).

    A sender sets `X-Smtpguard-Timestamp: <Unix seconds>` and this signature,
    and signs again (new timestamp) when it retries.  Body:
    `{"events": [{"action": "unsubscribe" | "resubscribe", "email": "...", "reason": "..."}]}`
    or one such object alone.
    """
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _generic(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> Delivery:
    signature, stamp = request.header(GENERIC_SIGNATURE), request.header(GENERIC_TIMESTAMP)
    if not signature or not stamp:
        raise WebhookRefused(f"unsigned request ({GENERIC_SIGNATURE} and {GENERIC_TIMESTAMP} are required)")
    if not stamp.strip().isdigit():
        raise WebhookRefused(f"{GENERIC_TIMESTAMP} is not Unix seconds")
    if not _same(signature.strip().lower(), sign_generic(source.secret, int(stamp), request.body)):
        raise WebhookRefused("bad signature")
    _check_fresh(source, int(stamp), now)
    _check_unused(source, signature.strip().lower(), now, replay)
    payload = _json(request.body)
    if isinstance(payload, dict) and "events" in payload:
        payload = payload["events"]
    events, skipped = [], 0
    for item in _objects(payload):
        action = str(item.get("action", "")).lower()
        address = _text(item.get("email", item.get("address")))
        if action not in _GENERIC_ADD | _GENERIC_REMOVE:
            raise WebhookInvalid(f"unknown action {action!r} (unsubscribe or resubscribe)")
        if address is None:
            skipped += 1
            continue
        kind: Action = "add" if action in _GENERIC_ADD else "remove"
        reason = _text(item.get("reason")) or "unsubscribed"
        events.append(WebhookEvent(kind, source.name, address, reason[:200]))
    return _delivery(events, skipped)


# --- Mailchimp ---------------------------------------------------------------------


def _mailchimp(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> Delivery:
    """Audience webhooks: form-encoded `type=unsubscribe&data[email]=...`; no signature.

    `unsubscribe` (data[action]=unsub) and `cleaned` add; `subscribe` removes
    this source's entry.  `unsubscribe` with data[action]=delete (an admin
    deleted the contact) is not an opt-out and is ignored, as are `profile`,
    `upemail` and `campaign`.
    """
    _check_secret(source, request.query(SECRET_PARAM))
    if request.method.upper() == "GET":
        return Delivery(note="Mailchimp validation request")

    def read() -> tuple[list[WebhookEvent | None], int]:
        try:
            form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise WebhookInvalid("the body is not a UTF-8 form") from None
        field = {k: v[0] for k, v in form.items()}
        kind = field.get("type")
        if kind is None:
            raise WebhookInvalid("not a Mailchimp webhook (no type field)")
        address = _text(field.get("data[email]"))
        if kind == "unsubscribe" and field.get("data[action]", "unsub") == "unsub":
            event = WebhookEvent("add", source.name, address, "unsubscribed (Mailchimp)")
        elif kind == "cleaned":
            event = WebhookEvent("add", source.name, address, f"cleaned by Mailchimp ({field.get('data[reason]', '')})")
        elif kind == "subscribe":
            event = WebhookEvent("remove", source.name, address)
        else:
            return [], 0
        return ([event], 0) if address else ([], 1)

    return _unsigned_delivery(source, request, now, replay, read)


# --- HubSpot -----------------------------------------------------------------------

# HubSpot's v3 guide: decode these in the URI before signing ("?" of the query stays).
_HUBSPOT_ESCAPES = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)


def sign_hubspot(secret: str, method: str, url: str, body: bytes, timestamp_ms: int) -> str:
    """X-HubSpot-Signature-v3: base64 HMAC-SHA256(secret, method + URI + body + timestamp)."""
    uri = _HUBSPOT_ESCAPES.sub(lambda m: unquote(m.group()), url)
    message = method.upper().encode() + uri.encode("utf-8") + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()).decode()


def _hubspot(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> Delivery:
    """v3 signature, timestamp within 5 minutes; events carry a contact id, not an address.

    `contact.propertyChange` (or `object.propertyChange` on contacts, type
    0-1) of `hs_email_optout`: "true" adds, "false" removes.  The address is
    looked up afterwards (`resolve_contacts`).
    """
    signature, stamp = request.header(HUBSPOT_SIGNATURE), request.header(HUBSPOT_TIMESTAMP)
    if not signature or not stamp:
        raise WebhookRefused(f"unsigned request ({HUBSPOT_SIGNATURE} and {HUBSPOT_TIMESTAMP} are required)")
    if not stamp.strip().isdigit():
        raise WebhookRefused(f"{HUBSPOT_TIMESTAMP} is not Unix milliseconds")
    millis = int(stamp)
    if not _same(signature.strip(), sign_hubspot(source.secret, request.method, request.url, request.body, millis)):
        raise WebhookRefused("bad signature")
    _check_fresh(source, millis / 1000, now)
    _check_unused(source, signature.strip(), now, replay)
    events: list[WebhookEvent | None] = []
    for item in _objects(_json(request.body)):
        kind = item.get("subscriptionType")
        contact = kind == "contact.propertyChange" or (
            kind == "object.propertyChange" and item.get("objectTypeId") == "0-1"
        )
        if not contact or item.get("propertyName") not in source.hubspot_properties:
            continue
        value = str(item.get("propertyValue", "")).lower()
        if value not in ("true", "false") or item.get("objectId") is None:
            continue
        action: Action = "add" if value == "true" else "remove"
        reason = "opted out of email (HubSpot)"
        events.append(WebhookEvent(action, source.name, None, reason, contact_id=str(item["objectId"])))
    return _delivery(events)


# --- lemlist -----------------------------------------------------------------------


def _lemlist(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> Delivery:
    """lemlist does not sign: it echoes the webhook's `secret` in the JSON body.

    `{"type": "emailsUnsubscribed", "leadEmail": "...", "secret": "...", ...}`
    adds; lemlist sends no re-subscribe event.  The secret may also be given
    as `?secret=` in the URL.
    """
    try:
        items = _objects(_json(request.body))
    except WebhookInvalid:
        _check_secret(source, request.query(SECRET_PARAM))  # unauthenticated junk is refused, not invalid
        raise
    _check_secret(source, request.query(SECRET_PARAM), *(_text(i.get("secret")) for i in items))

    def read() -> tuple[list[WebhookEvent | None], int]:
        return _adds(source, items, ("type", {"emailsUnsubscribed"}), "leadEmail", "unsubscribed (lemlist)")

    return _unsigned_delivery(source, request, now, replay, read)


# --- Brevo -------------------------------------------------------------------------


def _basic_password(header: str | None) -> str | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return None


def _bearer(header: str | None) -> str | None:
    return header[7:].strip() if header and header[:7].lower() == "bearer " else None


def _brevo(source: WebhookSource, request: WebhookRequest, now: float, replay: ReplayCache) -> Delivery:
    """Brevo does not sign: bearer token, basic-auth password or `?secret=` in the URL.

    Marketing `{"event": "unsubscribe", "email": ...}` and transactional
    `{"event": "unsubscribed", "email": ...}` add, one object or a batch (list).
    Brevo has no re-subscribe event.
    """
    auth = request.header("Authorization")
    _check_secret(source, _bearer(auth), _basic_password(auth), request.query(SECRET_PARAM))

    def read() -> tuple[list[WebhookEvent | None], int]:
        items = _objects(_json(request.body))
        return _adds(source, items, ("event", {"unsubscribe", "unsubscribed"}), "email", "unsubscribed (Brevo)")

    return _unsigned_delivery(source, request, now, replay, read)


_RECEIVERS: dict[str, Callable[[WebhookSource, WebhookRequest, float, ReplayCache], Delivery]] = {
    "generic": _generic,
    "mailchimp": _mailchimp,
    "hubspot": _hubspot,
    "lemlist": _lemlist,
    "brevo": _brevo,
}
