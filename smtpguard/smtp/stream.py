"""DATA to the upstream from a spool, piece by piece, on aiosmtplib's own connection.

aiosmtplib's `data()` takes one bytes object (and copies it twice more while
normalizing and dot-stuffing it); this sends DATA through its protocol,
writes the message in pieces with flow control, then `.` and reads the
reply with its parser. The bytes on the wire are what `data()` would send:
lone CR or LF become CRLF, the message ends with CRLF, leading dots doubled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import aiosmtplib
from aiosmtplib.response import SMTPResponse

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")  # aiosmtplib's normalize_message_line_endings


class Stuffer:
    """Turns the unstuffed message, piece by piece, into DATA's wire form."""

    def __init__(self) -> None:
        self._cr = False  # a piece ended with CR: its LF may open the next one
        self._line_start = True
        self._ends_crlf = False

    def feed(self, piece: bytes) -> bytes:
        if self._cr:
            piece, self._cr = b"\r" + piece, False
        if piece.endswith(b"\r"):
            piece, self._cr = piece[:-1], True
        if not piece:
            return b""
        # Line breaks (CRLF, lone CR and lone LF count one each) equal to both the
        # CRs and the LFs: no lone one to normalize. Cheaper than counting CRLFs.
        breaks = len(piece.splitlines()) - (piece[-1:] not in (b"\r", b"\n"))
        if not breaks == piece.count(b"\r") == piece.count(b"\n"):
            piece = _LINE_ENDINGS.sub(b"\r\n", piece)
        out = piece
        if b"." in out:  # memchr: an attachment's base64 has no dot to stuff
            out = out.replace(b"\n.", b"\n..")
            if self._line_start and out[:1] == b".":
                out = b"." + out
        self._line_start = self._ends_crlf = out.endswith(b"\n")
        return out

    def end(self) -> bytes:
        """The last line break if missing (a lone CR counts), then the lone dot."""
        return (b"" if self._ends_crlf and not self._cr else b"\r\n") + b".\r\n"


async def send_data(up: aiosmtplib.SMTP, pieces: Iterable[bytes], *, timeout: float) -> SMTPResponse:
    """DATA, the message, `.`; the final reply (250) or aiosmtplib's exceptions as `data()` raises them.

    `timeout` bounds the whole exchange (a stalled upstream cannot hold the
    session); on a timeout or a lost connection the upstream is closed, since
    it is mid-message and must never see the lone dot of a partial one.
    """
    proto = up.protocol
    if proto is None or not up.is_connected:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        async with asyncio.timeout(timeout):
            start = await up.execute_command(b"DATA", timeout=None)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            # Keep a reply that comes before our dot (a server refusing mid-body);
            # aiosmtplib drops data it did not ask for.
            proto._response_pending = True
            stuffer = Stuffer()
            for piece in pieces:
                proto.write(stuffer.feed(piece))
                await proto._drain_helper()  # the transport's flow control: memory stays bounded
                # A fast upstream never pushes back: let other sessions in between pieces.
                await asyncio.sleep(0)
            proto.write(stuffer.end())
            reply = await proto.read_response(timeout=None)
    except TimeoutError:
        up.close()
        raise aiosmtplib.SMTPReadTimeoutError("Timed out sending the message") from None
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
        up.close()
        raise
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply
