"""Run the HTTP side inside the relay's event loop: uvicorn as one more task.

uvicorn gets a socket we bound ourselves (port 0 resolves; a bind error is a
ConfigError like the SMTP listeners'), `loop="none"` (the relay's loop),
no lifespan and no signal handlers of its own: the relay's SIGTERM stops
it through `stop()`.  Off loopback it needs TLS and at least one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from smtpguard.config import ConfigError, Endpoint, Settings
from smtpguard.http.app import HttpState, create_app
from smtpguard.suppression.store import Store
from smtpguard.sync.connectors import HUBSPOT_API, Http, hubspot_lookup
from smtpguard.sync.webhooks import WebhookSource

log = logging.getLogger("smtpguard.http")


class HttpRefused(Exception):
    """The [http] settings would expose the API unsafely; the message says why."""


def http_problems(settings: Settings) -> list[str]:
    """What makes `serve` refuse the HTTP side, knowable without the store."""
    h = settings.http
    if h.listen is None or h.listen.is_loopback:
        return []
    if h.tls_cert is None:
        return [f"[http] listen = {h.listen} is not loopback: set [http] tls_cert and tls_key (or listen on 127.0.0.1)"]
    return []


async def check_http(settings: Settings, store: Store) -> None:
    problems = http_problems(settings)
    h = settings.http
    if h.listen is not None and not h.listen.is_loopback and not await store.tokens():
        problems.append(f"[http] listen = {h.listen} is not loopback: create a token first (smtpguard token add)")
    if problems:
        raise HttpRefused("refusing to start: " + "; ".join(problems))


def webhook_sources(settings: Settings) -> dict[str, WebhookSource]:
    out = {}
    for e in settings.sync:
        if e.webhook_secret_file is not None:
            provider = e.provider if e.provider != "csv" else "generic"
            try:
                out[e.name] = WebhookSource(e.name, provider, e.webhook_secret())  # type: ignore[arg-type]
            except ValueError as exc:
                raise ConfigError(f"[[sync]] {e.name}: {exc}") from None
    return out


def build_state(settings: Settings, store: Store, http: Http, **kwargs: object) -> HttpState:
    state = HttpState(store=store, settings=settings, webhooks=webhook_sources(settings), **kwargs)  # type: ignore[arg-type]
    state.open_metrics = settings.http.listen is None or settings.http.listen.is_loopback
    for e in settings.sync:
        if e.provider == "hubspot" and e.webhook_secret_file is not None and (e.token_file or e.api_key_file):
            state.lookups[e.name] = hubspot_lookup(http, e.credential(), e.base_url or HUBSPOT_API)
    return state


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the relay owns the signals


@dataclass
class HttpServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    endpoint: Endpoint

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.task), 10)


def _bind(where: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((where.host, where.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"[http] cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def start_http(state: HttpState, where: Endpoint) -> HttpServer:
    """Serve `create_app(state)` on `where` in this loop; returns once it accepts."""
    h = state.settings.http
    sock = _bind(where)
    config = uvicorn.Config(
        create_app(state), loop="none", lifespan="off", log_config=None, access_log=False,
        ssl_certfile=str(h.tls_cert) if h.tls_cert else None, ssl_keyfile=str(h.tls_key) if h.tls_key else None,
        timeout_keep_alive=30, limit_concurrency=1000,
    )  # fmt: skip
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises why it stopped
            raise ConfigError(f"[http] could not start on {where}")
        await asyncio.sleep(0.01)
    bound = Endpoint(where.host, int(sock.getsockname()[1]))
    log.info("HTTP API listening on %s (%s)", bound, "https" if h.tls_cert else "http")
    return HttpServer(server, task, bound)
