"""Recipient -> the entry that blocks it: the one question the relay asks the list.

Keys are made with the list's own matching rules (`store.rules()`), never
the configuration's: the list was keyed under them.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpguard.suppression.addresses import address_key, lookup_keys, recipient_key
from smtpguard.suppression.store import EntryRow, Store


async def check_address(store: Store, address: str) -> EntryRow | None:
    """The entry blocking a plain address, or None (AddressError when unparsable)."""
    rules = await store.rules()
    return await store.match(lookup_keys(address_key(address, rules, strict=False)))


async def check_recipient(store: Store, path: str) -> EntryRow | None:
    """Like check_address for an RCPT TO path (RoutingRefused for %, ! and literals)."""
    rules = await store.rules()
    return await store.match(lookup_keys(recipient_key(path, rules)))


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A recipient the list matched, kept with the entry for texts and the audit log."""

    address: str
    entry: EntryRow
