"""What the relay's sessions share, and what one transaction keeps from MAIL to DATA."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiosmtplib

from smtpguard.config import Settings
from smtpguard.oauth.broker import TokenBroker
from smtpguard.smtp.audit import AuditWriter
from smtpguard.smtp.pool import UpstreamPool
from smtpguard.suppression.store import Store
from smtpguard.suppression.verdict import Suppressed

if TYPE_CHECKING:
    from smtpguard.smtp.session import RelaySession

# What losing the upstream mid-command looks like from aiosmtplib.
LOST = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectError,
    ConnectionError,
    OSError,
)


@dataclass
class RelayContext:
    """What every session shares; `settings` is swapped on reload."""

    settings: Settings
    store: Store
    audit: AuditWriter
    sessions: set[RelaySession] = field(default_factory=set)
    per_client: Counter[str] = field(default_factory=Counter)  # open sessions by client address
    accepting: bool = True
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    # client address -> times of its recent failed local logins (auth throttle)
    auth_failures: dict[str, deque[float]] = field(default_factory=dict)
    # OAuth token state directory -> its broker (smtp/credentials.py); created on first use
    brokers: dict[Path, TokenBroker] = field(default_factory=dict)


@dataclass
class Transaction:
    """One MAIL .. DATA exchange, kept on the connection (STARTTLS replaces Session).

    `settings` is the configuration as it was at MAIL: a reload (SIGHUP)
    applies from the next transaction, never between RCPT and DATA.
    """

    settings: Settings
    sender: str = ""
    relayed: list[str] = field(default_factory=list)
    held: list[Suppressed] = field(default_factory=list)  # accepted, not relayed
    events: list[tuple[str, Suppressed]] = field(default_factory=list)
    utf8: bool = False
    upstream_lost: bool = False  # the upstream went away during RCPT: DATA must say 451

    @property
    def lang(self) -> str:
        return self.settings.policy.language
