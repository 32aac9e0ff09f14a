"""Log set-up: one line per event on stderr, plain for journald or JSON for shippers.

Never log a password or a message body: the relay logs addresses, sizes,
outcomes and user names only.

Under systemd (stderr is the journal: `$JOURNAL_STREAM` names it) every line
starts with its syslog priority, `<3>` error ... `<7>` debug, which journald
strips and keeps, so `journalctl -p warning` works.

JSON lines carry the event's fields as keys: those given with `extra=` and
the `key=value` words of the relay's messages (session, rcpt, entry, source,
mode, user, client, ...), taken out of "message".
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

# syslog priorities (RFC 5424) of Python's levels
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# Fields the relay's messages spell `key=value`; only these become JSON keys, so a
# client's text can never stand in for "level" or "time".
FIELDS = frozenset(
    ("session", "rcpt", "entry", "source", "mode", "user", "client", "from", "sender", "relayed", "held", "size")
    + ("outcome", "message_id")
)
_KEY_VALUE = re.compile(r"(?<!\S)([a-z_]+)=(<[^>\s]*>|\S+)")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def priority(levelno: int) -> int:
    """The syslog priority of a Python level (levels in between take the next one up)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def _field(text: str) -> Any:
    if text.startswith("<") and text.endswith(">"):
        return text[1:-1]
    if text == "-":
        return None
    return int(text) if text.isdigit() else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        fields: dict[str, Any] = {}

        def take(m: re.Match[str]) -> str:
            if m.group(1) not in FIELDS or m.group(1) in fields:
                return m.group(0)
            fields[m.group(1)] = _field(m.group(2))
            return ""

        message = " ".join(_KEY_VALUE.sub(take, text).split())
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message or text,
        }
        for key, value in record.__dict__.items():  # extra={...}
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        for key, value in fields.items():
            out.setdefault(key, value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """`<N>` before every line (a traceback's lines too), N the record's syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd gave us (`$JOURNAL_STREAM` = "dev:inode")."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    if fmt not in ("text", "json"):
        raise ValueError(f"--log-format must be text or json, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    # journald adds the time and the unit; keep the text line short.
    text = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    formatter = JsonFormatter() if fmt == "json" else text
    handler.setFormatter(JournalFormatter(formatter) if stderr_is_journal() else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command at INFO (and TLS failures as tracebacks).
    logging.getLogger("mail.log").setLevel(logging.WARNING)
