"""Session expiry, the sign-in throttle's window, and the browser's language choice."""

from __future__ import annotations

from smtpguard.web.i18n import pick_language
from smtpguard.web.sessions import Sessions, Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_its_idle_lifetime_and_each_use_extends_it() -> None:
    clock = Clock()
    sessions = Sessions(lifetime=60, clock=clock)
    s = sessions.open("ed", "editor")
    assert s.id != s.csrf and len(s.id) >= 40
    clock.now += 50
    assert sessions.get(s.id) is s  # used: 60 s more
    clock.now += 50
    assert sessions.get(s.id) is s
    clock.now += 61
    assert sessions.get(s.id) is None
    assert sessions.get("guessed") is None and sessions.get(None) is None
    other = sessions.open("vi", "viewer")
    sessions.close(other.id)
    assert sessions.get(other.id) is None


def test_roles_are_ordered() -> None:
    sessions = Sessions()
    assert sessions.open("a", "admin").may("editor")
    assert sessions.open("e", "editor").may("editor")
    assert not sessions.open("v", "viewer").may("editor")


def test_throttle_counts_failures_per_address_within_the_window() -> None:
    clock = Clock()
    t = Throttle(attempts=3, window=60, clock=clock)
    for _ in range(3):
        assert not t.blocked("192.0.2.1")
        t.failed("192.0.2.1")
    assert t.blocked("192.0.2.1")
    assert not t.blocked("192.0.2.2")  # per address
    clock.now += 61
    assert not t.blocked("192.0.2.1")  # the window passed
    t.failed("192.0.2.1")
    t.succeeded("192.0.2.1")
    assert not t.blocked("192.0.2.1")


def test_language_choice() -> None:
    assert pick_language(None, "fr-CA,fr;q=0.9,en;q=0.8") == "fr"
    assert pick_language(None, "de-DE,de;q=0.9,en;q=0.8,fr;q=0.7") == "en"
    assert pick_language(None, "de-DE,fr;q=0.5") == "fr"
    assert pick_language(None, "fr;q=0,en") == "en"
    assert pick_language(None, None) == "en"
    assert pick_language("fr", "en") == "fr"  # the switch wins
    assert pick_language("xx", "fr") == "fr"
