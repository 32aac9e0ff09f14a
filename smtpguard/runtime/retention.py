"""Audit retention: events older than `[audit] retention_days` are deleted.

The running relay does it at start and then once a day (`retention_loop`);
`smtpguard log --prune` does it on demand. The audit trail names people
(recipients, senders): keeping it no longer than needed is what GDPR asks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from smtpguard.smtp.context import RelayContext
from smtpguard.suppression.store import Store, StoreError

log = logging.getLogger("smtpguard.audit")

DAY = 86_400.0


def cutoff(days: int, now: dt.datetime | None = None) -> str | None:
    """The oldest event time kept with `days` of retention (None: keep everything)."""
    if days <= 0:
        return None
    moment = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    return moment.isoformat(timespec="seconds")


async def prune(store: Store, days: int) -> int:
    """Delete the events older than `days`; how many went."""
    before = cutoff(days)
    return 0 if before is None else await store.prune_events(before)


async def retention_loop(ctx: RelayContext, every: float = DAY) -> None:
    """In the relay: prune now, then every `every` seconds, with the settings of the moment."""
    while True:
        days = ctx.settings.audit.retention_days
        try:
            gone = await prune(ctx.store, days)
        except StoreError as exc:
            log.error("audit retention: could not delete old events: %s", exc)
        else:
            if gone:
                log.info("audit retention: deleted %d event%s older than %d days", gone, "s"[: gone != 1], days)
        await asyncio.sleep(every)
