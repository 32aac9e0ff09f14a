"""The matching rules belong to the list: read them from it, change them only here.

A list is keyed under the rules it was created with. Opening or reading it
never changes them (a CLI command run with another configuration must not
re-key the live list under a running relay); `change_rules` is the one
explicit way, and a relay sharing the list sees the change at its next lookup.
"""

from __future__ import annotations

from smtpguard.suppression.addresses import AddressError, MatchRules, rekey
from smtpguard.suppression.store.base import EntryRow, Store


async def change_rules(store: Store, new: MatchRules) -> int:
    """Re-key the list under `new` and keep `new` with it; entries whose key changed.

    When two entries come to share a key the older one stays (the other is
    dropped and counted). An entry that does not parse under `new` keeps its key.
    """
    rows: list[EntryRow] = [e async for e in store.entries()]
    rows.sort(key=lambda e: e.added)  # stable: ties keep key order
    taken: set[str] = set()
    moves: dict[str, str | None] = {}
    for e in rows:
        try:
            key = rekey(e.original, e.kind, new)
        except AddressError:
            key = e.key
        if key in taken:
            moves[e.key] = None
            continue
        taken.add(key)
        if key != e.key:
            moves[e.key] = key
    await store.set_rules(new, moves)
    return len(moves)


def mismatch(list_rules: MatchRules, configured: MatchRules, where: object) -> str | None:
    """The one warning to give when the configuration's [matching] is not the list's."""
    if list_rules == configured:
        return None
    return (
        f"store {where}: the list matches with its own rules ({list_rules.describe()}), not with the"
        f" configuration's [matching] ({configured.describe()}); the list's rules apply and the list is"
        " left unchanged (`smtpguard rules set --from-config` re-keys it to the configuration's)"
    )
