"""DSN parameters (RFC 3461) on the gateway listener: parse, check, and decide what to forward.

aiosmtpd refuses every MAIL parameter but SIZE/BODY/SMTPUTF8 and every RCPT
parameter with 555 (notes/aiosmtpd.md §1.3).  The gateway's session takes the
DSN ones out before aiosmtpd parses the rest (session.py), checked here, and
the hooks pass them on only to a next hop that advertises DSN (as Postfix
does).  They never name who receives the message: that is the RCPT path
alone, which the list checked.
"""

from __future__ import annotations

import re
from typing import Protocol

MAIL_KEYS = frozenset({"RET", "ENVID"})
RCPT_KEYS = frozenset({"NOTIFY", "ORCPT"})
# xtext (RFC 3461 4): printable US-ASCII but "+" and "=", or "+" and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2 (xtext of the original address)


class DsnError(ValueError):
    """A DSN parameter that is not RFC 3461; the text says which and why."""


class Extensions(Protocol):
    def supports_extension(self, extension: str) -> bool: ...


def _check(key: str, value: str | None) -> str:
    """The parameter as we forward it (`KEY=value`), or DsnError."""
    if value is None or value == "":
        raise DsnError(f"{key} needs a value")
    if key == "RET":
        if value.upper() not in ("FULL", "HDRS"):
            raise DsnError("RET must be FULL or HDRS")
        return f"RET={value.upper()}"
    if key == "NOTIFY":
        words = value.upper().split(",")
        if words != ["NEVER"] and (len(set(words)) != len(words) or not set(words) <= _NOTIFY):
            raise DsnError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        return f"NOTIFY={','.join(words)}"
    if key == "ENVID":
        if len(value) > MAX_ENVID or not _XTEXT.fullmatch(value):
            raise DsnError(f"ENVID must be xtext of at most {MAX_ENVID} characters")
        return f"ENVID={value}"
    addr_type, sep, xtext = value.partition(";")  # ORCPT
    if not sep or not _ADDR_TYPE.fullmatch(addr_type) or len(xtext) > MAX_ORCPT or not _XTEXT.fullmatch(xtext):
        raise DsnError("ORCPT must be addr-type;xtext, e.g. rfc822;jane@example.com")
    return f"ORCPT={addr_type};{xtext}"


def take(params: str, keys: frozenset[str]) -> tuple[str, tuple[str, ...]]:
    """Split the parameters of a MAIL or RCPT line: (the others, as sent; the DSN ones, checked).

    `keys` are the DSN keywords this command may carry; each at most once.
    """
    others: list[str] = []
    taken: dict[str, str] = {}
    for word in params.split():
        key, eq, value = word.partition("=")
        key = key.upper()
        if key not in keys:
            others.append(word)
            continue
        if key in taken:
            raise DsnError(f"{key} given twice")
        taken[key] = _check(key, value if eq else None)
    return " ".join(others), tuple(taken.values())


def forwardable(options: tuple[str, ...], next_hop: Extensions) -> list[str]:
    """The DSN parameters the next hop may receive: all of them if it advertises DSN, else none."""
    return list(options) if options and next_hop.supports_extension("dsn") else []
