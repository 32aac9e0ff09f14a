"""In-memory store: the whole `Store` protocol in dicts, for fast tests.

Nothing survives `close()`; the matching rules are the ones given at creation
until `set_rules` changes them, exactly as a file would keep them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence

from smtpguard.suppression.addresses import DEFAULT_RULES, MatchRules

from . import base
from .base import AddResult, EntryRow, Event, SourceDiff, Stats, Token, WebRole, utc_now, utc_today


class MemoryStore:
    rows_in_thread = False  # plain iterables are read on the caller's thread

    def __init__(self, rules: MatchRules = DEFAULT_RULES) -> None:
        self._rules = rules
        self._entries: dict[str, EntryRow] = {}
        self._events: list[Event] = []
        self._users: dict[str, tuple[str, str]] = {}  # name -> (hash, created)
        self._web_roles: dict[str, WebRole] = {}
        self._addresses: dict[str, list[str]] = {}  # name -> allowed sender addresses
        self._tokens: dict[str, Token] = {}

    async def close(self) -> None:
        self._entries.clear()

    async def rules(self) -> MatchRules:
        return self._rules

    async def set_rules(self, rules: MatchRules, moves: Mapping[str, str | None]) -> None:
        moved = {old: self._entries.pop(old) for old in moves if old in self._entries}
        for old, entry in moved.items():
            new = moves[old]
            if new is not None:
                if new in self._entries:
                    raise ValueError(f"re-keying {old!r} onto {new!r}, which is taken")
                self._entries[new] = entry._replace(key=new)
        self._rules = rules

    async def add_entries(self, rows: base.Rows, *, commit: bool = True) -> AddResult:
        fresh: dict[str, EntryRow] = {}
        offered = 0

        def take(chunk: Iterable[base.RowTuple]) -> None:
            nonlocal offered
            for row in chunk:
                offered += 1
                if row[0] not in self._entries and row[0] not in fresh:
                    fresh[row[0]] = row if isinstance(row, EntryRow) else EntryRow._make(row)

        if isinstance(rows, AsyncIterable):
            async for chunk in rows:
                take(chunk)
        else:
            take(rows)
        if commit:
            self._entries.update(fresh)
        return AddResult(rows=offered, added=len(fresh))

    async def remove(self, keys: Sequence[str]) -> list[str]:
        return [key for key in keys if self._entries.pop(key, None) is not None]

    async def match(self, keys: Sequence[str], today: str | None = None) -> EntryRow | None:
        found = [self._entries[k] for k in keys if k in self._entries]
        return base.most_specific(found, keys, today or utc_today()) if found else None

    async def count(self) -> int:
        return len(self._entries)

    async def entries(self, source: str | None = None, search: str | None = None) -> AsyncIterator[EntryRow]:
        needle = search.lower() if search else None
        for key in sorted(self._entries):
            e = self._entries[key]
            if source is not None and e.source != source:
                continue
            if needle is not None and needle not in e.key.lower() and needle not in e.original.lower():
                continue
            yield e

    async def stats(self, since: str) -> Stats:
        today = utc_today()
        counts: dict[tuple[str, str], int] = {}
        for e in self._entries.values():
            counts[e.source, e.kind] = counts.get((e.source, e.kind), 0) + 1
        expired = sum(1 for e in self._entries.values() if not e.active(today))
        actions: dict[str, int] = {}
        for ev in self._events:
            if ev.time >= since:
                actions[ev.action] = actions.get(ev.action, 0) + 1
        return Stats([(s, k, n) for (s, k), n in sorted(counts.items())], expired, actions)

    async def record_events(self, events: Sequence[Event]) -> None:
        self._events.extend(events)

    async def events(
        self, since: str | None = None, sender: str | None = None, limit: int | None = None, user: str | None = None
    ) -> list[Event]:
        found = [
            e
            for e in self._events
            if (not since or e.time >= since)
            and (not sender or e.sender.lower() == sender.lower())
            and (user is None or e.user == user)
        ]
        if limit is not None:
            found = found[len(found) - limit :] if limit > 0 else []
        return found

    async def event_counts(self, since: str, by: base.EventGroup, limit: int) -> list[tuple[str, int]]:
        counts: dict[str, int] = {}
        for e in self._events:
            if e.time >= since:
                name = e.user if by == "user" else e.sender.lower()
                counts[name] = counts.get(name, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    async def prune_events(self, before: str) -> int:
        kept = [e for e in self._events if e.time >= before]
        gone = len(self._events) - len(kept)
        self._events = kept
        return gone

    async def replace_source(
        self, source: str, rows: Sequence[EntryRow], *, commit: bool = True, guard: base.SourceGuard | None = None
    ) -> SourceDiff:
        current = [e for e in self._entries.values() if e.source == source]
        others = {r.key for r in rows if r.key in self._entries and self._entries[r.key].source != source}
        add, remove, unchanged, elsewhere = base.plan_replace(source, current, rows, others, utc_today())
        fresh = {r.key for r in add}
        gone = [e.original for e in remove if e.key not in fresh]
        if guard is not None:
            guard(len(current), len(gone), unchanged + len(add))
        if commit:
            for e in remove:
                del self._entries[e.key]
            self._entries.update((r.key, r) for r in add)
        return SourceDiff(tuple(r.original for r in add), tuple(gone), unchanged, elsewhere)

    async def remove_source(self, source: str) -> int:
        keys = [k for k, e in self._entries.items() if e.source == source]
        for k in keys:
            del self._entries[k]
        return len(keys)

    async def set_user(self, name: str, password_hash: str) -> bool:
        old = self._users.get(name)
        self._users[name] = (password_hash, old[1] if old else utc_now())
        return old is None

    async def remove_user(self, name: str) -> bool:
        self._web_roles.pop(name, None)
        self._addresses.pop(name, None)
        return self._users.pop(name, None) is not None

    async def user_hash(self, name: str) -> str | None:
        found = self._users.get(name)
        return found[0] if found else None

    async def users(self) -> list[tuple[str, str]]:
        return [(name, created) for name, (_, created) in sorted(self._users.items())]

    async def set_web_role(self, name: str, role: WebRole | None) -> bool:
        if name not in self._users:
            return False
        if role is None:
            self._web_roles.pop(name, None)
        else:
            self._web_roles[name] = role
        return True

    async def web_role(self, name: str) -> WebRole | None:
        return self._web_roles.get(name)

    async def set_user_addresses(self, name: str, addresses: Sequence[str]) -> bool:
        if name not in self._users:
            return False
        self._addresses[name] = list(addresses)
        return True

    async def user_addresses(self, name: str) -> list[str]:
        return list(self._addresses.get(name, []))

    async def add_token(self, name: str, scope: base.TokenScope, token_hash: str) -> bool:
        if name in self._tokens or any(t.hash == token_hash for t in self._tokens.values()):
            return False
        self._tokens[name] = Token(name, scope, token_hash, utc_now())
        return True

    async def remove_token(self, name: str) -> bool:
        return self._tokens.pop(name, None) is not None

    async def tokens(self) -> list[Token]:
        return [self._tokens[n] for n in sorted(self._tokens)]

    async def token_by_hash(self, token_hash: str) -> Token | None:
        return next((t for t in self._tokens.values() if t.hash == token_hash), None)
