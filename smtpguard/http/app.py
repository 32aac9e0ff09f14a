"""The FastAPI application factory: composable routers over one shared `HttpState`.

`create_app(state)` mounts the API, the webhook receivers, health and
metrics; another front end (a web page) adds its own router with
`app.include_router(...)` and reads the same `app.state.http`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from smtpguard.inputs import InvalidInput
from smtpguard.suppression.store import Store, StoreError
from smtpguard.sync.replay import ReplayCache
from smtpguard.sync.webhooks import WebhookSource

if TYPE_CHECKING:
    from smtpguard.config import Settings
    from smtpguard.smtp.context import RelayContext
    from smtpguard.sync.scheduler import Scheduler

log = logging.getLogger("smtpguard.http")

Lookup = Callable[[str], Awaitable[str | None]]


@dataclass
class HttpState:
    """What every route needs: the store, the settings, and the relay when there is one."""

    store: Store
    settings: Settings
    relay: RelayContext | None = None
    webhooks: dict[str, WebhookSource] = field(default_factory=dict)
    lookups: dict[str, Lookup] = field(default_factory=dict)  # HubSpot sources: contact id -> address
    replay: ReplayCache = field(default_factory=ReplayCache)
    scheduler: Scheduler | None = None
    open_metrics: bool = True  # /metrics and /healthz without a token (loopback only)


def create_app(state: HttpState) -> FastAPI:
    from smtpguard.http import api, health, webhooks

    app = FastAPI(
        title="smtpguard",
        version="1",
        summary="The suppression list of an smtpguard relay: entries, imports, source syncs, audit, webhooks.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.http = state
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(_page(state))
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(StoreError, _store_error)
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: the list is unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the list is unavailable right now; try again"}, status_code=503)


def _page(state: HttpState) -> APIRouter:
    """The list owner's web page (smtpguard/web) at /page, over the relay's own open store."""
    from smtpguard import web
    from smtpguard.service import Service

    @asynccontextmanager
    async def service() -> AsyncIterator[Service]:
        yield Service(state.store, await state.store.rules())

    async def sync_status() -> list[web.SyncState]:
        scheduler = state.scheduler
        if scheduler is None:
            return []
        return [
            web.SyncState(name, _iso(s.last_success), _iso(s.last_failure), s.last_error)
            for name, s in sorted(scheduler.status.items())
        ]

    return web.router(service=service, prefix="/page", sync_status=sync_status)


def _iso(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")
