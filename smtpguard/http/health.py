"""/healthz (relay accepting, store readable, upstream reachable at last try) and /metrics.

Open on loopback; off loopback they need a read token like the API.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from smtpguard.http.app import HttpState
from smtpguard.http.auth import reader
from smtpguard.metrics import METRICS

router = APIRouter(tags=["health"])
STORE_TIMEOUT = 2.0


async def _allowed(request: Request) -> None:
    """A read token off loopback; read by hand so that the document lists no security on loopback."""
    state: HttpState = request.app.state.http
    if not state.open_metrics:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        await reader(request, HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None)


class Health(BaseModel):
    status: str  # "ok" or "failing"
    relay_accepting: bool | None  # None: no relay in this process
    store_readable: bool
    upstream_reachable: bool | None  # at the last try; None: not tried yet
    entries: int | None


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, dependencies=[Depends(_allowed)])
async def healthz(request: Request) -> JSONResponse:
    state: HttpState = request.app.state.http
    relay = state.relay
    accepting = None if relay is None else relay.accepting
    try:
        entries: int | None = await asyncio.wait_for(state.store.count(), STORE_TIMEOUT)
    except Exception:  # any failure to read is "not readable"; the detail is in the relay's log
        entries = None
    ok = accepting is not False and entries is not None and METRICS.upstream_ok is not False
    health = Health(status="ok" if ok else "failing", relay_accepting=accepting, store_readable=entries is not None,
                    upstream_reachable=METRICS.upstream_ok, entries=entries)  # fmt: skip
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(_allowed)])
async def metrics(request: Request) -> PlainTextResponse:
    state: HttpState = request.app.state.http
    gauges: list[tuple[str, str, tuple[tuple[str, str], ...], float]] = []
    stats = await state.store.stats("9999")  # entry counts only
    by_source: dict[str, int] = {}
    for source, _kind, count in stats.entries_by_source_kind:
        by_source[source] = by_source.get(source, 0) + count
    for source, count in sorted(by_source.items()):
        gauges.append(("smtpguard_list_entries", "Entries on the list, by source.", (("source", source),), count))
    # With several workers this is worker 1: add the others' latest counters and sessions.
    view, others = METRICS.merged(await asyncio.to_thread(METRICS.peers)) if METRICS.peers else (METRICS, 0)
    if state.relay is not None:
        gauges.append(("smtpguard_sessions", "Open SMTP sessions.", (), len(state.relay.sessions) + others))
    return PlainTextResponse(view.render(gauges), media_type="text/plain; version=0.0.4")
