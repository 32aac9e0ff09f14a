"""Where the suppression list, the audit log and local users live."""

from __future__ import annotations

from pathlib import Path

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store.base import (
    AddResult,
    EntryRow,
    Event,
    Stats,
    Store,
    StoredEntry,
    StoreError,
    utc_now,
    utc_today,
)
from smtpguard.suppression.store.sqlite import SQLiteStore

__all__ = [
    "AddResult",
    "EntryRow",
    "Event",
    "SQLiteStore",
    "Stats",
    "Store",
    "StoreError",
    "StoredEntry",
    "open_store",
    "utc_now",
    "utc_today",
]


async def open_store(path: Path | str, rules: MatchRules, *, create: bool = True) -> SQLiteStore:
    """Open the store and bring its keys in line with the matching rules."""
    store = await SQLiteStore.open(path, create=create)
    try:
        await store.ensure_rules(rules)
    except BaseException:
        await store.close()
        raise
    return store
