"""Where the suppression list, the audit log and local users live.

`connect(settings)` is the one place a backend is chosen; everything above
it (relay, CLI, watched folder) sees only the `Store` protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store.base import (
    AddResult,
    EntryRow,
    Event,
    Rows,
    Stats,
    Store,
    StoreError,
    Token,
    TokenScope,
    utc_now,
    utc_today,
)
from smtpguard.suppression.store.memory import MemoryStore
from smtpguard.suppression.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from smtpguard.config import Settings
    from smtpguard.suppression.store.postgres import PostgresStore

__all__ = [
    "AddResult",
    "EntryRow",
    "Event",
    "MemoryStore",
    "Rows",
    "SQLiteStore",
    "Stats",
    "Store",
    "StoreError",
    "Token",
    "TokenScope",
    "connect",
    "open_store",
    "utc_now",
    "utc_today",
]

log = logging.getLogger("smtpguard.store")

_Opened = TypeVar("_Opened", "SQLiteStore", "PostgresStore")


async def open_store(path: Path | str, rules: MatchRules, *, create: bool = True) -> SQLiteStore:
    """The SQLite list at `path`; `rules` are kept with it only when it is new.

    Keys made by an older smtpguard are brought up to date (same rules).
    """
    return await _rekeyed(await SQLiteStore.open(path, create=create, rules=rules))


async def connect(settings: Settings, *, create: bool = True) -> Store:
    """The store the configuration names (`create=False`: it must exist already).

    A list that differs from the configuration's [matching] keeps its own
    rules: one warning says so, nothing is re-keyed.
    """
    from smtpguard.suppression.rules import mismatch

    store: Store
    if settings.store.url is not None:
        store = await _open_postgres(settings, create=create)
        where: object = store.server
    else:
        store = await open_store(settings.store.path, settings.matching, create=create)
        where = settings.store.path
    warning = mismatch(await store.rules(), settings.matching, where)
    if warning is not None:
        log.warning("%s", warning)
    return store


async def _open_postgres(settings: Settings, *, create: bool) -> PostgresStore:
    """`[store] url`: the list several relays share (asyncpg is imported only then)."""
    from smtpguard.suppression.store.postgres_connect import open_url

    return await _rekeyed(await open_url(settings, create=create))


async def _rekeyed(store: _Opened) -> _Opened:
    """`store` with keys made by an older smtpguard brought up to date (closed if that fails)."""
    from smtpguard.suppression.rules import change_rules

    try:
        if store.stale_keys:
            await change_rules(store, await store.rules())
    except BaseException:
        await store.close()
        raise
    return store
