"""File descriptors: one per client session, a second while it relays (the upstream's).

Python keeps the soft RLIMIT_NOFILE it was started with (1024 from many
shells; the unit's LimitNOFILE under systemd). Past it, accept() fails with
EMFILE, and asyncio then logs a traceback for every try, hundreds a second,
while clients wait unanswered in the listen queue. So the relay raises the
soft limit as far as `[server] max_connections` needs (never past the hard
one), and when that is still short lowers max_connections to what fits:
connections beyond it get the usual 421 "too many connections" and are
closed, and the log says once why. Should upstream sockets use up the rest
anyway, the accept error is one log line a minute, not a traceback storm.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Sized
from dataclasses import replace
from typing import Any

from smtpguard.config import Settings

log = logging.getLogger("smtpguard.server")

RESERVE = 256  # the list, logs, listeners, the HTTP side, the watched folder's child, pooled upstreams
PER_SESSION = 2  # the client's socket and, during a transaction, the upstream's
ACCEPT_LOG_EVERY = 60.0  # seconds between two "cannot accept" lines
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message


def raise_soft_limit(wanted: int) -> int:
    """RLIMIT_NOFILE's soft limit raised towards `wanted` (the hard one caps it); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def fit_connections(settings: Settings) -> Settings:
    """`settings` with max_connections lowered to what the open-file limit holds (said in the log)."""
    wanted = settings.server.max_connections
    soft = raise_soft_limit(PER_SESSION * wanted + RESERVE)
    if soft == resource.RLIM_INFINITY or PER_SESSION * wanted + RESERVE <= soft:
        return settings
    room = max(1, soft - RESERVE)
    advice = f"raise LimitNOFILE (ulimit -n) to {PER_SESSION * wanted + RESERVE} or more"
    if wanted <= room:
        log.warning(
            "open-file limit %d: enough for [server] max_connections = %d idle sessions, not for every one"
            " relaying at once (a session relaying needs %d); %s",
            soft, wanted, PER_SESSION, advice,
        )  # fmt: skip
        return settings
    log.warning(
        "open-file limit %d: [server] max_connections = %d does not fit, using %d (connections beyond get 421); %s",
        soft, wanted, room, advice,
    )  # fmt: skip
    return replace(settings, server=replace(settings.server, max_connections=room))


class AcceptErrors:
    """A loop exception handler: asyncio's accept failure (EMFILE...) as one line a minute, the rest as usual."""

    def __init__(self, sessions: Sized) -> None:
        self.sessions = sessions  # the open sessions, for the log line
        self.failed = 0
        self.next_line = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") != _ACCEPT_FAILED or not isinstance(exc, OSError):
            loop.default_exception_handler(context)
            return
        self.failed += 1
        now = loop.time()
        if now < self.next_line:
            return
        self.next_line = now + ACCEPT_LOG_EVERY
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        why = "too many open files" if exc.errno in (errno.EMFILE, errno.ENFILE) else exc.strerror or str(exc)
        log.error(
            "cannot accept new connections: %s (open-file limit %d, %d sessions open; %d failed tries since"
            " the last line); clients wait until some close. Raise LimitNOFILE or lower [server] max_connections",
            why, limit, len(self.sessions), self.failed,
        )  # fmt: skip
        self.failed = 0
