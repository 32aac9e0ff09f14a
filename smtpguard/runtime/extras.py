"""What `serve` runs beside the relay in its loop: the HTTP side and the pull connectors."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smtpguard.config import ConfigError, Settings

if TYPE_CHECKING:
    from smtpguard.http.server import HttpServer
    from smtpguard.runtime.server import Relay
    from smtpguard.sync.connectors import Http


@dataclass
class Extras:
    http_server: HttpServer | None = None
    client: Http | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http_server is not None:
            await self.http_server.stop()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.client.aclose()


async def start_extras(relay: Relay, settings: Settings) -> Extras:
    """Start the HTTP side ([http] listen) and the [[sync]] pulls; ConfigError when refused."""
    extras = Extras()
    if settings.http.listen is None and not any(e.interval for e in settings.sync):
        return extras
    from smtpguard.http.server import HttpRefused, build_state, check_http, start_http
    from smtpguard.sync.scheduler import Scheduler, new_http, status_path

    store = relay.ctx.store
    extras.client = new_http()
    try:
        scheduler = Scheduler(store, settings.sync, status_path(settings), http=extras.client)
        if settings.http.listen is not None:
            try:
                await check_http(settings, store)
            except HttpRefused as exc:
                raise ConfigError(str(exc)) from None
            state = build_state(settings, store, extras.client, relay=relay.ctx, scheduler=scheduler)
            extras.http_server = await start_http(state, settings.http.listen)
        extras.tasks = scheduler.tasks()
    except BaseException:
        await extras.stop()
        raise
    return extras
