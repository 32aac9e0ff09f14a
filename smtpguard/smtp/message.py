"""Message rewriting for strip mode, and the notice sent to the sender. No I/O.

Only the To and Cc header fields are touched; every other byte of the
message, body included, is passed on as the client sent it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from smtpguard.suppression.addresses import AddressError

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_REWRITTEN = (b"to", b"cc")


def split_header_block(content: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, the rest)."""
    m = _HEADER_END.search(content)
    if m is None:
        return content, b""
    cut = m.start() + (2 if content[m.start() : m.start() + 2] == b"\r\n" else 1)
    return content[:cut], content[cut:]


def _fields(headers: bytes) -> list[bytes]:
    """Header fields with their continuation lines attached."""
    out: list[bytes] = []
    for line in headers.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def _split_items(value: str) -> list[str]:
    """Split an address list on commas outside quotes, <> and comments."""
    items: list[str] = []
    buf: list[str] = []
    depth, quoted, angle, escape = 0, False, False, False
    for ch in value:
        if escape:
            escape = False
        elif ch == "\\":
            escape = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not depth and not angle:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf))
    return [i for i in items if i.strip()]


def remove_recipients(content: bytes, is_removed: Callable[[str], bool]) -> bytes:
    """Drop the addresses `is_removed` picks from the To and Cc fields."""
    headers, body = split_header_block(content)
    newline = b"\r\n" if headers.endswith(b"\r\n") or b"\r\n" in headers else b"\n"
    out: list[bytes] = []
    changed = False
    for field in _fields(headers):
        name, colon, value = field.partition(b":")
        if not colon or name.strip().lower() not in _REWRITTEN:
            out.append(field)
            continue
        text = value.decode("utf-8", "surrogateescape").replace("\r", "").replace("\n", "")
        items = _split_items(text)
        kept = [i.strip() for i in items if not _removed(i, is_removed)]
        if len(kept) == len(items):
            out.append(field)
            continue
        changed = True
        if kept:
            folded = ("," + newline.decode() + " ").join(kept)
            out.append(name + b": " + folded.encode("utf-8", "surrogateescape") + newline)
        elif name.strip().lower() == b"to":
            out.append(name + b": undisclosed-recipients:;" + newline)
        # an emptied Cc is dropped
    if not changed:
        return content
    return b"".join(out) + body


def _removed(item: str, is_removed: Callable[[str], bool]) -> bool:
    for _name, addr in getaddresses([item]):
        if addr:
            try:
                return is_removed(addr)
            except AddressError:
                return False
    return False


def header_value(content: bytes, name: str) -> str:
    """The first value of a header field (unfolded), or ''."""
    headers, _ = split_header_block(content)
    wanted = name.lower().encode()
    for field in _fields(headers):
        n, colon, value = field.partition(b":")
        if colon and n.strip().lower() == wanted:
            return " ".join(value.decode("utf-8", "replace").split())
    return ""


NOTICE = {
    "en": (
        'smtpguard: {count} recipient(s) removed from "{subject}"',
        'Your message "{subject}" was sent, but not to these recipients, '
        "because they are on the do-not-contact list:\n\n{lines}\n\n"
        "Nothing else changed. If one of them should receive your mail, ask whoever "
        "manages the list to remove the entry.\n",
    ),
    "fr": (
        "smtpguard : {count} destinataire(s) retiré(s) de « {subject} »",
        "Votre message « {subject} » a été envoyé, mais pas à ces destinataires, "
        "qui sont sur la liste d'exclusion :\n\n{lines}\n\n"
        "Rien d'autre n'a changé. Si l'un d'eux doit recevoir votre message, demandez "
        "au responsable de la liste de retirer l'entrée.\n",
    ),
}


def sender_notice(sender: str, subject: str, removed: Sequence[str], lang: str, hostname: str) -> EmailMessage:
    """The short note telling the sender which recipients were stripped."""
    title, body = NOTICE.get(lang, NOTICE["en"])
    subject = subject or "(no subject)"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = sender
    msg["Subject"] = title.format(count=len(removed), subject=subject)
    msg["Date"] = format_datetime(dt.datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body.format(subject=subject, lines="\n".join(f"  - {r}" for r in removed)))
    return msg
