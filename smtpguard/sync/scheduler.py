"""Pull connectors on a timer: one `[[sync]]` entry with an `interval`, one loop.

Each run is one source sync (`sync.pull`).  A failure (ConnectorError,
SyncRefused by the drop guard, StoreError) changes nothing, is logged, and
the next try comes sooner (`next_delay`: 1 min, 2, 4, ... up to the
interval).  The status of every source (last success, last failure, why) is
kept in a small JSON file beside the list, so `smtpguard sync status` in
another process can show it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from smtpguard.config import ConfigError, Settings, SyncSettings
from smtpguard.metrics import METRICS
from smtpguard.suppression.store import Store, StoreError
from smtpguard.sync import connectors
from smtpguard.sync.connectors import Connector, ConnectorError, Http
from smtpguard.sync.sync import SyncRefused, SyncResult, next_delay, pull

log = logging.getLogger("smtpguard.sync")


def connector_for(entry: SyncSettings) -> Connector:
    """The pull connector of a `[[sync]]` entry (ConfigError when it has none)."""
    key = entry.credential()
    if entry.provider == "hubspot":
        return connectors.HubSpotOptOuts(key, base_url=entry.base_url or connectors.HUBSPOT_API)
    if entry.provider == "lemlist":
        return connectors.LemlistUnsubscribes(key, base_url=entry.base_url or connectors.LEMLIST_API)
    if entry.provider == "mailchimp":
        return connectors.MailchimpUnsubscribed(key, entry.list_id, base_url=entry.base_url or None)
    if entry.provider == "csv":
        headers = (("Authorization", f"Bearer {key}"),) if key else ()
        return connectors.CsvUrl(entry.url, headers=headers, column=entry.column)
    raise ConfigError(f"[[sync]] {entry.name}: {entry.provider} has no pull connector")


def status_path(settings: Settings) -> Path:
    return settings.store.path.with_name(settings.store.path.name + ".sync.json")


@dataclass
class SourceStatus:
    name: str
    provider: str
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    failures: int = 0  # in a row
    added: int = 0
    removed: int = 0
    unchanged: int = 0


def read_status(path: Path) -> dict[str, SourceStatus]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: SourceStatus(**fields) for name, fields in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


class Scheduler:
    def __init__(self, store: Store, entries: Sequence[SyncSettings], path: Path | None, *, http: Http) -> None:
        self.store = store
        self.entries = {e.name: e for e in entries if e.interval is not None}
        self.path = path
        self.http = http
        self.status = read_status(path) if path else {}

    async def run(self, name: str, *, force: bool = False) -> SyncResult:
        """One pull of source `name`, its outcome recorded (raises what failed)."""
        entry = self.entries[name]
        state = self.status.setdefault(name, SourceStatus(name, entry.provider))
        METRICS.inc("smtpguard_sync_runs_total", source=name)
        try:
            connector = connector_for(entry)
            result = await pull(self.store, name, connector, self.http, rules=await self.store.rules(), force=force)
        except (ConnectorError, SyncRefused, StoreError, ConfigError) as exc:
            METRICS.inc("smtpguard_sync_failures_total", source=name)
            state.last_failure, state.last_error, state.failures = time.time(), str(exc), state.failures + 1
            self._save()
            raise
        state.last_success, state.failures, state.last_error = time.time(), 0, ""
        state.added, state.removed, state.unchanged = result.added, result.removed, result.unchanged
        self._save()
        log.info("sync %s: %d added, %d removed, %d unchanged", name, result.added, result.removed, result.unchanged)
        return result

    async def loop(self, name: str) -> None:
        """Run `name` every interval, sooner after a failure; until cancelled."""
        interval = self.entries[name].interval or 3600.0
        while True:
            try:
                await self.run(name)
            except (ConnectorError, SyncRefused, StoreError, ConfigError) as exc:
                log.error("sync %s failed (nothing changed, retrying): %s", name, exc)
            await asyncio.sleep(next_delay(interval, self.status[name].failures))

    def tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.loop(n), name=f"sync-{n}") for n in self.entries]

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({n: asdict(s) for n, s in self.status.items()}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("sync status not saved to %s: %s", self.path, exc.strerror)


def new_http(timeout: float = 30.0) -> Http:
    return Http(httpx.AsyncClient(timeout=timeout, follow_redirects=True))
