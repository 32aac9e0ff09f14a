"""A tiny FastAPI app holding only the page's router, served by uvicorn on 127.0.0.1 in a thread.

A thread (its own event loop) lets both the sync Playwright API and plain
httpx clients talk to it from ordinary tests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from smtpguard.config import Settings, StoreSettings
from smtpguard.service import open_service
from smtpguard.suppression.store import Event
from smtpguard.web import SyncState, router

from ..smtp_fixtures import Certs

PASSWORD = "correct horse battery"


@dataclass
class Page:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread


def event(day: str, user: str, sender: str, recipient: str, action: str = "rejected") -> Event:
    return Event(f"{day}T09:30:00+00:00", action, sender, recipient, recipient, "crm", "127.0.0.1", user, "<m@x>")  # type: ignore[arg-type]


async def seed(settings: Settings) -> None:
    async with open_service(settings) as svc:
        for name, role in (("ed", "editor"), ("vi", "viewer"), ("ad", "admin")):
            await svc.set_user(name, PASSWORD)
            await svc.set_web_role(name, role)
        await svc.set_user("mailonly", PASSWORD)  # an SMTP account without web access
        await svc.add(["jane.doe@example.com"], source="crm", reason="unsubscribed 2026-11-02")
        await svc.add(["@blocked.example"], source="legal", reason="asked by their counsel")
        await svc.add(["paul.resub@example.com"], source="crm", reason="unsubscribed")
        await svc.store.record_events(
            [
                event("2026-11-20", "alice", "alice@corp.example", "jane.doe@example.com"),
                event("2026-11-21", "alice", "alice@corp.example", "x@blocked.example", "stripped"),
                event("2026-11-21", "bob", "bob@corp.example", "jane.doe@example.com"),
                event("2026-11-23", "bob", "bob@corp.example", "y@blocked.example", "monitored"),
            ]
        )


async def sync_status() -> list[SyncState]:
    return [SyncState("crm", "2026-12-01T08:00:00+00:00", None)]


def serve(settings: Settings, certs: Certs | None = None) -> Page:
    app = FastAPI()
    app.include_router(router(settings, prefix="/page", sync_status=sync_status))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = {"ssl_certfile": str(certs.cert_file), "ssl_keyfile": str(certs.key_file)} if certs else {}
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **tls)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the page's server did not start")
        time.sleep(0.02)
    return Page(f"{'https' if certs else 'http'}://127.0.0.1:{port}/page", settings, server, thread)


def stop(page: Page) -> None:
    page.server.should_exit = True
    page.thread.join(10)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = replace(Settings(), store=StoreSettings(tmp_path / "list.db"))
    asyncio.run(seed(s))
    return s


@pytest.fixture
def page(settings: Settings) -> Iterator[Page]:
    p = serve(settings)
    yield p
    stop(p)
