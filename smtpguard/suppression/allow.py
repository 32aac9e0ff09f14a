"""Allow entries: an address (or subdomain) let through inside a blocked domain.

Postfix's `OK` in an access table. An allow entry shares the list's keys:
allowing jane@x.com that was itself blocked replaces the block, and removing
the exception never removes a block. Which entry wins: verdict.blocking.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpguard.suppression.addresses import Entry
from smtpguard.suppression.store import EntryRow, Store, utc_now

ALLOW_SOURCE = "allow"


@dataclass(frozen=True, slots=True)
class AllowResult:
    entry: str
    key: str
    changed: bool  # added (or removed, with --remove); False: nothing to do
    replaced_block: bool = False  # the same key was blocked: the block is gone


async def allow(store: Store, entries: list[Entry], *, reason: str, expires: str | None) -> list[AllowResult]:
    out = []
    for e in entries:
        found = await store.match([e.key], today="0000-00-00")  # expired entries too: the key is taken
        if found is not None and found.kind == "allow":
            out.append(AllowResult(e.original, e.key, False))
            continue
        if found is not None:
            await store.remove([e.key])
        row = EntryRow(e.key, "allow", e.original, ALLOW_SOURCE, reason, utc_now(), expires)
        await store.add_entries([row])
        out.append(AllowResult(e.original, e.key, True, found is not None))
    return out


async def disallow(store: Store, entries: list[Entry]) -> list[AllowResult]:
    out = []
    for e in entries:
        found = await store.match([e.key], today="0000-00-00")
        gone = found is not None and found.kind == "allow" and bool(await store.remove([e.key]))
        out.append(AllowResult(e.original, e.key, gone))
    return out
