"""Where the suppression list, the audit log and local users live.

`connect(settings)` is the one place a backend is chosen; everything above
it (relay, CLI, watched folder) sees only the `Store` protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from smtpguard.config import Settings

__all__ = [
    "AddResult",
    "EntryRow",
    "Event",
    "SQLiteStore",
    "Stats",
    "Store",
    "StoreError",
    "StoredEntry",
    "connect",
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


async def connect(settings: Settings, *, create: bool = True) -> Store:
    """The store the configuration names (`create=False`: it must exist already)."""
    return await open_store(settings.store.path, settings.matching, create=create)
