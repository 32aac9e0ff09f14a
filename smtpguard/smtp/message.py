"""Message rewriting for strip mode, and the notice sent to the sender. No I/O.

Only the recipient fields (To, Cc, Bcc, Resent-To/-Cc/-Bcc) are touched;
every other byte of the message, body included, is passed on as the client
sent it.  Lists are read as mail programs write them, not only as RFC 5322
says: `;` between addresses (Outlook) and bare addresses with no comma.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from smtpguard.suppression.addresses import AddressError

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_REWRITTEN = (b"to", b"cc", b"bcc", b"resent-to", b"resent-cc", b"resent-bcc")
_BARE = re.compile(r"[^\s<>,;\"()]+@[^\s<>,;\"()]+")  # something@something, however written
_AFTER_ANGLE = re.compile(r"(?<=>)\s+(?=[^\s]*@)")  # `Bob <b@x> c@y`: a second address after the first


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
    """Split an address list on commas (and `;` outside a group) outside quotes, <> and comments."""
    items: list[str] = []
    buf: list[str] = []
    depth, quoted, angle, escape, group = 0, False, False, False, False
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
        elif ch == ":" and not depth and not angle:
            group = True
        elif ch == ";" and not depth and not angle and group:
            group = False
        elif ch in ",;" and not depth and not angle:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf))
    return [piece for item in items if item.strip() for piece in _unjoined(item)]


def _unjoined(item: str) -> list[str]:
    """Addresses written one after the other with no separator, apart."""
    if item.count("@") < 2:
        return [item]
    if not any(c in item for c in '<"('):
        return item.split()
    return _AFTER_ANGLE.split(item)


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
        kept: list[str] = []
        for item in items:
            if not _removed(item, is_removed):
                kept.append(item.strip())
            elif item.strip().endswith(";") and kept:
                kept[-1] += ";"  # the group's end goes on with the one before
        if len(kept) == len(items):
            out.append(field)
            continue
        changed = True
        if kept:
            folded = ("," + newline.decode() + " ").join(kept)
            out.append(name + b": " + folded.encode("utf-8", "surrogateescape") + newline)
        elif name.strip().lower() == b"to":
            out.append(name + b": undisclosed-recipients:;" + newline)
        # an emptied Cc, Bcc or Resent- field is dropped
    if not changed:
        return content
    return b"".join(out) + body


def _removed(item: str, is_removed: Callable[[str], bool]) -> bool:
    candidates = [addr for _name, addr in getaddresses([item]) if addr] + _BARE.findall(item)
    for addr in candidates:
        try:
            if is_removed(addr.strip("<>")):
                return True
        except AddressError:
            continue
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
