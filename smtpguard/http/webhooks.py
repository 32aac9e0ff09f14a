"""Webhook receivers: POST (and Mailchimp's GET check) at /webhooks/{source}.

Each configured source checks its provider's authentication
(`smtpguard.sync.webhooks`); refused requests get 401 and a log line with
the client's address and the reason, never the secret.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from smtpguard.http.app import HttpState
from smtpguard.http.auth import client_ip
from smtpguard.metrics import METRICS
from smtpguard.suppression.store import Event, StoreError, utc_now
from smtpguard.sync.connectors import ConnectorError
from smtpguard.sync.sync import process_webhook
from smtpguard.sync.webhooks import WebhookInvalid, WebhookRefused, WebhookRequest

log = logging.getLogger("smtpguard.webhooks")
router = APIRouter(tags=["webhooks"], include_in_schema=False)
MAX_BODY = 5 * 1024 * 1024


def public_url(state: HttpState, request: Request) -> str:
    """The URL as the provider called it: behind a proxy, from [http] public_url."""
    base = state.settings.http.public_url.rstrip("/")
    if not base:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


@router.api_route("/webhooks/{source}", methods=["GET", "POST"])
async def receive(request: Request, source: str) -> JSONResponse:
    state: HttpState = request.app.state.http
    client = client_ip(request)
    hook = state.webhooks.get(source)
    if hook is None:
        return JSONResponse({"detail": f"no webhook source {source!r}"}, status_code=404)
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"detail": "body too large"}, status_code=413)
    call = WebhookRequest(request.method, public_url(state, request), dict(request.headers), body)
    try:
        applied = await process_webhook(
            state.store, hook, call, rules=await state.store.rules(), replay=state.replay,
            lookup=state.lookups.get(source),
        )  # fmt: skip
    except WebhookRefused as exc:
        METRICS.inc("smtpguard_webhooks_total", source=source, outcome="refused")
        log.warning("webhook %s: refused request from %s: %s", source, client, exc)
        return JSONResponse({"detail": f"refused: {exc}"}, status_code=401)
    except WebhookInvalid as exc:
        METRICS.inc("smtpguard_webhooks_total", source=source, outcome="invalid")
        log.warning("webhook %s: unreadable request from %s: %s", source, client, exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    except (StoreError, ConnectorError) as exc:  # the provider retries; the receipt was not kept
        METRICS.inc("smtpguard_webhooks_total", source=source, outcome="error")
        log.error("webhook %s: not applied, the provider will retry: %s", source, exc)
        return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
    METRICS.inc("smtpguard_webhooks_total", source=source, outcome="applied")
    if applied.added or applied.removed:
        log.info("webhook %s from %s: %d added, %d removed", source, client, applied.added, applied.removed)
        summary = f"webhook: +{applied.added} -{applied.removed}"
        await state.store.record_events([Event(utc_now(), "webhook", "", "", summary, source, client,
                                               f"webhook:{source}", "")])  # fmt: skip
    return JSONResponse(
        {
            "added": applied.added,
            "removed": applied.removed,
            "unchanged": applied.unchanged,
            "invalid": applied.invalid,
            "note": applied.note,
        }  # fmt: skip
    )
