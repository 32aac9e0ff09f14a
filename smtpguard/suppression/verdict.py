"""Recipient -> the entry that blocks it: the one question the relay asks the list.

Keys are made with the list's own matching rules (`store.rules()`), never
the configuration's: the list was keyed under them.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpguard.suppression.addresses import address_key, lookup_keys, recipient_key
from smtpguard.suppression.store import EntryRow, Store


def blocking(found: EntryRow | None) -> EntryRow | None:
    """The matched entry when it blocks; None when nothing matched or an exception did.

    Matching order (Postfix's access(5) lookup order): the most specific key
    wins -- the address, then its domain, then each parent domain. So an
    `allow` for jane@x.com beats a block of @x.com, an allow of
    @sales.x.com beats a block of @x.com, and a block of @eu.sales.x.com
    beats that allow. One key is either blocked or allowed, never both.
    """
    return None if found is None or found.kind == "allow" else found


async def match_address(store: Store, address: str) -> EntryRow | None:
    """The most specific entry for a plain address, allow entries included (`check`)."""
    rules = await store.rules()
    return await store.match(lookup_keys(address_key(address, rules, strict=False)))


async def check_address(store: Store, address: str) -> EntryRow | None:
    """The entry blocking a plain address, or None (AddressError when unparsable)."""
    return blocking(await match_address(store, address))


async def check_recipient(store: Store, path: str) -> EntryRow | None:
    """Like check_address for an RCPT TO path (RoutingRefused for %, ! and literals)."""
    rules = await store.rules()
    return blocking(await store.match(lookup_keys(recipient_key(path, rules))))


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A recipient the list matched, kept with the entry for texts and the audit log."""

    address: str
    entry: EntryRow
