"""A bounded memory of recent keys: used signatures, receipts of unsigned deliveries."""

from __future__ import annotations

from collections import OrderedDict


class ReplayCache:
    """Keys seen recently (used signatures, receipts of unsigned deliveries), bounded.

    `ttl` must exceed twice the timestamp tolerance so that a signature stays
    remembered as long as its timestamp is accepted.  When full, the oldest key
    goes first.
    """

    def __init__(self, ttl: float = 900.0, size: int = 20_000) -> None:
        self.ttl = ttl
        self.size = size
        self._until: OrderedDict[str, float] = OrderedDict()

    def seen(self, key: str, now: float) -> bool:
        self._expire(now)
        return key in self._until

    def remember(self, key: str, now: float) -> None:
        self._expire(now)
        self._until[key] = now + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.size:
            self._until.popitem(last=False)

    def __len__(self) -> int:
        return len(self._until)

    def _expire(self, now: float) -> None:
        while self._until:
            key, until = next(iter(self._until.items()))
            if until > now:
                return
            del self._until[key]
