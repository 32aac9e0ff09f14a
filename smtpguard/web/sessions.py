"""Sign-in sessions held server-side, their CSRF tokens, and the sign-in throttle.

The cookie carries only a random session id; the user, role and CSRF token
stay in this process (a restart signs everybody out, which is fine for a
page used a few times a day).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpguard.suppression.store.base import WebRole

SESSION_COOKIE = "smtpguard_session"
PRESIGN_COOKIE = "smtpguard_csrf"  # double-submit token for the sign-in form
ROLE_RANK: dict[str, int] = {"viewer": 0, "editor": 1, "admin": 2}


@dataclass
class Session:
    id: str
    user: str
    role: WebRole
    csrf: str
    expires: float

    def may(self, role: WebRole) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


@dataclass
class Sessions:
    """Live sessions by id, each ending `lifetime` seconds after its last use."""

    lifetime: float = 8 * 3600
    clock: Callable[[], float] = time.monotonic
    _live: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str, role: WebRole) -> Session:
        self._sweep()
        s = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), self.clock() + self.lifetime)
        self._live[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        s = self._live.get(sid or "")
        if s is None:
            return None
        now = self.clock()
        if s.expires <= now:
            del self._live[s.id]
            return None
        s.expires = now + self.lifetime
        return s

    def close(self, sid: str | None) -> None:
        self._live.pop(sid or "", None)

    def _sweep(self) -> None:
        now = self.clock()
        for sid in [sid for sid, s in self._live.items() if s.expires <= now]:
            del self._live[sid]


@dataclass
class Throttle:
    """At most `attempts` failed sign-ins per client address in `window` seconds."""

    attempts: int = 5
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.attempts

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > 10_000:  # a spray of addresses must not grow memory forever
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
