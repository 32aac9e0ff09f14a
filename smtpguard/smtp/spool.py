"""A message as it comes in after DATA: read off the client, dot-unstuffed once, spooled.

aiosmtpd 1.4.6 gathers the whole message in memory line by line (one
coroutine step per line) and hands it over as one bytes object; a 25 MiB
attachment held the relay's loop for a third of a second and its memory by
128 MB. Here the client's bytes are read in pieces up to each `.<CRLF>` (the
only place the end of data can be), kept in memory up to `MEMORY_LIMIT` and
in an unlinked temporary file (0600) beyond, the header block apart so strip
mode rewrites only that. End-of-data, line-length and size rules are
aiosmtpd's own (smtp.py `smtp_DATA`): lines end at CRLF only, so bare LF or
CR dots never end the message.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("smtpguard.relay")

MEMORY_LIMIT = 256 * 1024  # bytes kept in memory before the spool goes to a file
HEAD_LIMIT = 1024 * 1024  # a header block longer than this is not rewritten (see head_truncated)
CHUNK = 32 * 1024  # bytes read back per step
_END = b".\r\n"
_HEADER_END = re.compile(rb"\r?\n\r?\n")  # as message.split_header_block


class Outcome(enum.Enum):
    OK = "ok"
    TOO_LONG = "line too long"  # aiosmtpd: 500 after the data
    TOO_MUCH = "too big"  # aiosmtpd: 552 after the data
    NO_SPACE = "no space"  # the spool file could not be written: 452


class Spool:
    """The unstuffed message: `head` (its header block) then the rest, memory then file."""

    def __init__(self, directory: Path | None, *, memory_limit: int = MEMORY_LIMIT, head_limit: int = HEAD_LIMIT):
        self.directory = directory
        self.memory_limit = memory_limit
        self.head_limit = head_limit
        self.head = bytearray()
        self.head_done = False  # the header block's end was seen (or head_limit reached)
        self.head_truncated = False  # head_limit reached before the header block ended
        self.size = 0
        self.failed: OSError | None = None
        self._memory = bytearray()
        self._file: BinaryIO | None = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if self.failed is not None or not data:
            return
        self.size += len(data)
        if not self.head_done:
            data = self._grow_head(data)
        if data:
            self._store(data)

    def _grow_head(self, data: bytes) -> bytes:
        """Add to the header block; what lies past its end (for the body)."""
        start = max(0, len(self.head) - 3)  # an end may straddle the pieces
        self.head += data
        m = _HEADER_END.search(self.head, start)
        if m is not None:
            cut = m.start() + (2 if self.head[m.start() : m.start() + 2] == b"\r\n" else 1)
        elif len(self.head) > self.head_limit:
            cut, self.head_truncated = self.head_limit, True
        else:
            return b""
        self.head_done = True
        rest = bytes(self.head[cut:])
        del self.head[cut:]
        return rest

    def _store(self, data: bytes) -> None:
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._memory += data
            if len(self._memory) > self.memory_limit:
                # Created 0600 and never linked (O_TMPFILE, or unlinked at once):
                # nothing is left behind, whatever ends the session.
                self._file = self._open()
                self._file.write(self._memory)
                self._memory = bytearray()
        except OSError as exc:
            log.error("message spool in %s failed: %s", self.directory, exc)
            self.failed = exc
            self.close()

    def _open(self) -> BinaryIO:
        try:
            return tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (closed by close())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or self.directory is None:
                raise
            # No state directory here (a store that is not a file): the system's.
            log.warning("message spool: %s unusable (%s); using %s", self.directory, exc, tempfile.gettempdir())
            self.directory = None
            return tempfile.TemporaryFile()  # noqa: SIM115

    def body(self) -> Iterator[bytes]:
        """What follows the header block, in pieces of at most CHUNK bytes."""
        if self._file is None:
            view = memoryview(self._memory)
            for i in range(0, len(view), CHUNK):
                yield bytes(view[i : i + CHUNK])
            return
        self._file.flush()
        self._file.seek(0)
        while piece := self._file.read(CHUNK):
            yield piece

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            _close_aside(file)
        self._memory = bytearray()


def _close_aside(file: BinaryIO) -> None:
    """Close the spool file in a worker thread when a loop runs: the last close of an
    unlinked file frees its pages and blocks, ~2.5 ms of the loop's time for 25 MiB."""
    try:
        asyncio.get_running_loop().run_in_executor(None, file.close)
    except RuntimeError:  # no loop running, or its executor already shut down (the relay stopping)
        file.close()


async def receive(reader: asyncio.StreamReader, spool: Spool, *, size_limit: int | None, line_limit: int) -> Outcome:
    """Read the client's message up to its lone-dot line into `spool`.

    Never reads past that line: pipelined commands after it stay in `reader`.
    After a refusal (too long, too big, no space) the rest is read and dropped.
    """
    data = _Data(spool, size_limit, line_limit)
    while True:
        try:
            piece, ends = await reader.readuntil(_END), True
        except asyncio.LimitOverrunError as exc:  # no `.<CRLF>` within the reader's limit
            piece, ends = await reader.read(exc.consumed), False
        # One socket read brings up to 256 KiB: take it in steps so that
        # other sessions' replies are not kept waiting behind it.
        for i in range(0, len(piece), CHUNK):
            if i:
                await asyncio.sleep(0)
            if data.take(piece[i : i + CHUNK], ends and i + CHUNK >= len(piece)):
                return data.outcome


class _Data:
    """The reading state between pieces: the line so far, the bytes counted, the verdict."""

    def __init__(self, spool: Spool, size_limit: int | None, line_limit: int) -> None:
        self.spool, self.size_limit, self.line_limit = spool, size_limit, line_limit
        self.outcome = Outcome.OK
        self.carry = b""  # the current line so far (only its last byte once known too long)
        self.total = 0  # bytes as sent (dot-stuffed, CRLFs counted), as aiosmtpd counts them
        self.counted = 0  # of those, the bytes of whole lines: when aiosmtpd judges the size

    def take(self, piece: bytes, may_end: bool) -> bool:
        """Add one piece; True when it ended the message."""
        data = self.carry + piece
        last = may_end and (data == _END or data.endswith(b"\r\n" + _END))
        if last:
            complete, self.carry = data[: -len(_END)], b""
            self.total += len(piece) - len(_END)
        else:
            cut = data.rfind(b"\r\n")
            cut = cut + 2 if cut >= 0 else 0
            complete, self.carry = data[:cut], data[cut:]
            self.total += len(piece)
        carry_long = len(self.carry) > self.line_limit
        if carry_long:
            self.carry = self.carry[-1:]  # keep a CR whose LF may come next
        counted = self.counted + len(complete)
        if self.outcome is Outcome.OK and (
            carry_long
            or (self.size_limit and counted > self.size_limit)
            or (len(complete) > self.line_limit and _has_long_line(complete, self.line_limit))
        ):
            self._refuse(self._first_refusal(complete))
        self.counted = counted
        if self.outcome is Outcome.OK and complete:
            if b"." in complete:  # memchr: an attachment's base64 has no dot to unstuff
                if complete[:1] == b".":
                    complete = complete[1:]
                complete = complete.replace(b"\r\n.", b"\r\n")
            self.spool.write(complete)
            if self.spool.failed is not None:
                self._refuse(Outcome.NO_SPACE)
        return last

    def _first_refusal(self, complete: bytes) -> Outcome:
        """aiosmtpd's verdict, line by line: a line too long before the size is passed, or the reverse.

        Only walked once a refusal is due; a too-long unfinished line is the reason when no whole line is.
        """
        count = self.counted
        for line in complete.split(b"\r\n")[:-1]:
            size = len(line) + 2
            if size > self.line_limit:
                return Outcome.TOO_LONG
            count += size
            if self.size_limit and count > self.size_limit:
                return Outcome.TOO_MUCH
        return Outcome.TOO_LONG

    def _refuse(self, outcome: Outcome) -> None:
        if self.outcome is Outcome.OK:
            self.outcome = outcome
            self.spool.close()  # refused: nothing more is kept


def _has_long_line(lines: bytes, limit: int) -> bool:
    """Whether a CRLF-ended line of `lines` (whole lines) is longer than `limit`, its CRLF counted.

    aiosmtpd's measure; hops from line start to the last CRLF within reach
    rather than splitting every line (a piece holds hundreds of them).
    """
    start, end = 0, len(lines)
    while end - start > limit:
        cut = lines.rfind(b"\r\n", start, start + limit)
        if cut < 0:
            return True
        start = cut + 2
    return False
