"""Big messages: read into a spool, streamed upstream, nothing left behind.

The relay reads DATA itself (smtp/spool.py) rather than through aiosmtpd's
in-memory loop, and sends it upstream in pieces (smtp/stream.py). These
tests hold it to aiosmtpd's own end-of-data rules, to byte-exact delivery,
and to a spool that never outlives its message.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpguard.smtp.spool import Outcome, Spool, _has_long_line, receive
from smtpguard.smtp.stream import Stuffer

from .conftest import RelayFactory
from .relay_helpers import Raw
from .smtp_fixtures import Upstream

MiB = 1024 * 1024


def _big_message(size: int) -> bytes:
    """UTF-8 headers, 8-bit body text, lines that start with dots, a lone-dot-looking line."""
    head = (
        "From: Zoé Dupré <zoe@exämple.test>\r\nTo: Jürgen <jurgen@ok.example>\r\n"
        "Subject: Résumé & pièces jointes\r\nMessage-ID: <big@test>\r\n\r\n"
    ).encode()
    block = (
        b".leading dot\r\n..two dots\r\n.\r\n"  # after stuffing: a lone dot would end DATA
        + "caf\u00e9 \u00e0 8 bits, \u65e5\u672c\u8a9e\r\n".encode()
        + b"A" * 76
        + b"\r\n"
    )
    body = block * (size // len(block))
    return head + body + b"last line\r\n"


def _spool_fds(directory: Path) -> list[str]:
    """This process's open, unlinked files in `directory` (an O_TMPFILE shows as `dir/#123 (deleted)`)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/") and target.endswith(" (deleted)"):
            found.append(target)
    return found


async def _spool_closed(directory: Path) -> bool:
    """Whether the spool files in `directory` are closed within a few seconds (closed by a worker thread)."""
    for _ in range(200):
        if not _spool_fds(directory):
            return True
        await asyncio.sleep(0.02)
    return False


async def _open_data(relay_port_raw: Raw) -> None:
    raw = relay_port_raw
    assert (await raw.cmd("MAIL FROM:<zoé@exämple.test> SMTPUTF8 BODY=8BITMIME")).startswith("250")
    assert (await raw.cmd("RCPT TO:<bob@ok.example>")).startswith("250")
    assert (await raw.cmd("DATA")).startswith("354")


def _stuffed(message: bytes) -> bytes:
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n"))


async def test_25_mib_arrives_byte_identical(make_relay: RelayFactory, upstream: Upstream, tmp_path: Path) -> None:
    relay = await make_relay()
    message = _big_message(25 * MiB)
    raw = await Raw.open(relay)
    await _open_data(raw)
    raw.writer.write(_stuffed(message) + b".\r\n")
    # 25 MiB through the relay and the fixture upstream (aiosmtpd, line by line) on one loop: slow when loaded.
    reply = (await asyncio.wait_for(raw.reader.readline(), 300)).decode()
    assert reply.startswith("250 "), reply
    assert (await raw.cmd("QUIT")).startswith("221")
    await raw.close()
    [got] = upstream.received
    assert got.mail_from == "zoé@exämple.test" and got.rcpt_tos == ["bob@ok.example"]
    assert len(got.content) == len(message) and got.content == message
    assert await _spool_closed(relay.ctx.settings.store.path.parent)


async def test_streamed_message_refused_upstream_is_refused_to_the_client(
    make_relay: RelayFactory, upstream: Upstream
) -> None:
    """A spooled, streamed message the upstream refuses after its dot: the client hears the refusal, never 250."""
    upstream.data_reply = "554 5.6.0 Content refused"
    relay = await make_relay()
    state_dir = relay.ctx.settings.store.path.parent
    raw = await Raw.open(relay)
    await _open_data(raw)
    raw.writer.write(_stuffed(_big_message(4 * MiB)) + b".\r\n")
    reply = (await asyncio.wait_for(raw.reader.readline(), 120)).decode()
    assert reply.startswith("554 5.6.0 Content refused"), reply
    assert upstream.received == []
    upstream.data_reply = None
    await _open_data(raw)  # the session goes on: the next message is relayed
    raw.writer.write(_stuffed(_big_message(1 * MiB)) + b".\r\n")
    reply = (await asyncio.wait_for(raw.reader.readline(), 120)).decode()
    assert reply.startswith("250 "), reply
    await raw.close()
    [got] = upstream.received
    assert got.content == _big_message(1 * MiB)
    assert await _spool_closed(state_dir)


async def test_client_vanishing_mid_data_leaves_nothing(
    make_relay: RelayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    relay = await make_relay()
    state_dir = relay.ctx.settings.store.path.parent
    before = sorted(os.listdir(state_dir))
    raw = await Raw.open(relay)
    await _open_data(raw)
    raw.writer.write(_stuffed(_big_message(4 * MiB)))  # no end: the client goes away mid-message
    await raw.writer.drain()
    for _ in range(200):  # the relay has spooled past its memory share: a file in the state directory
        if _spool_fds(state_dir):
            break
        await asyncio.sleep(0.02)
    assert _spool_fds(state_dir), "the spool never went to a file in the state directory"
    raw.writer.transport.abort()
    for _ in range(200):
        if not relay.ctx.sessions:
            break
        await asyncio.sleep(0.02)
    assert await _spool_closed(state_dir)
    assert sorted(os.listdir(state_dir)) == before
    await asyncio.sleep(0.2)
    assert upstream.received == []


async def test_oversize_is_refused_while_reading(make_relay: RelayFactory, upstream: Upstream) -> None:
    relay = await make_relay(server={"max_message_size": 1 * MiB})
    state_dir = relay.ctx.settings.store.path.parent
    raw = await Raw.open(relay)
    await _open_data(raw)
    raw.writer.write(_stuffed(_big_message(3 * MiB)))
    await raw.writer.drain()
    await asyncio.sleep(0.3)
    # Past the limit: the spool is dropped at once, not kept until the end.
    assert await _spool_closed(state_dir)
    raw.writer.write(b".\r\n")
    reply = await raw.reply()
    assert reply.startswith("552 5.3.4 "), reply
    assert upstream.received == []
    assert (await raw.cmd("RSET")).startswith("250")
    await raw.close()


# --- the reader against aiosmtpd 1.4.6's own DATA loop ---------------------


async def _aiosmtpd_data(reader: asyncio.StreamReader, limit: int | None) -> tuple[Outcome, bytes]:
    """aiosmtpd 1.4.6 smtp.py `smtp_DATA`'s reading loop, kept as it is (the reference)."""
    data: list[bytearray] = []
    num_bytes = 0
    fragments: list[bytes] = []
    state = Outcome.OK
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as e:
            if state is Outcome.OK:
                state = Outcome.TOO_LONG
            data *= 0
            line = await reader.read(e.consumed)
        if not fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state is Outcome.OK and limit and num_bytes > limit:
            state = Outcome.TOO_MUCH
            data *= 0
        fragments.append(line)
        if line.endswith(b"\r\n"):
            if state is Outcome.OK:
                joined = b"".join(fragments)
                if len(joined) > 1001:
                    state = Outcome.TOO_LONG
                    data *= 0
                else:
                    data.append(bytearray(joined))
            fragments *= 0
    for text in data:
        if text.startswith(b"."):
            del text[0]
    return state, b"".join(data) if state is Outcome.OK else b""


async def _feed(reader: asyncio.StreamReader, stream: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        reader.feed_data(stream[last:cut])
        last = cut
        await asyncio.sleep(0)
    reader.feed_data(stream[last:])


_ATOMS = [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"\xc3\xa9", b"\r\n.\r\n", b".\r\n", b"x" * 600, b"\r\n.\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_ATOMS), max_size=40),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    st.sampled_from([None, 40, 2000]),
)
def test_reader_matches_aiosmtpd(atoms: list[bytes], cuts: list[int], limit: int | None) -> None:
    """Same end of data, same content, same refusal, same bytes left for the next command."""
    stream = b"".join(atoms) + b"\r\n.\r\nNEXT\r\n"

    async def both() -> None:
        ref = asyncio.StreamReader(limit=1001)
        ref.feed_data(stream)
        expected = await _aiosmtpd_data(ref, limit)
        ours = asyncio.StreamReader(limit=1001)
        feeding = asyncio.ensure_future(_feed(ours, stream, cuts))
        spool = Spool(None, memory_limit=64)
        outcome = await receive(ours, spool, size_limit=limit, line_limit=1001)
        await feeding
        got = bytes(spool.head) + b"".join(spool.body()) if outcome is Outcome.OK else b""
        spool.close()
        assert (outcome, got) == expected
        assert await ours.read(len(stream)) == await ref.read(len(stream))

    asyncio.run(both())


@settings(deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"ab", b"\r\n."]), max_size=30), st.data())
def test_stuffer_matches_aiosmtplib(atoms: list[bytes], data: st.DataObject) -> None:
    """The pieces on the wire join to exactly what aiosmtplib's data() sends for the whole message."""
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    message = b"".join(atoms)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(message)), max_size=5)))
    pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
    stuffer = Stuffer()
    sent = b"".join(stuffer.feed(p) for p in pieces) + stuffer.end()
    assert sent == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


def test_spool_without_its_directory_uses_the_systems(tmp_path: Path) -> None:
    """A store with no state directory (not a file) still spools big messages, elsewhere."""
    spool = Spool(tmp_path / "missing", memory_limit=10)
    spool.write(b"Subject: x\r\n\r\n" + b"y" * 100)
    assert spool.on_disk and spool.failed is None
    assert bytes(spool.head) + b"".join(spool.body()) == b"Subject: x\r\n\r\n" + b"y" * 100
    spool.close()


@given(
    st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"b" * 7, b"c" * 30]), max_size=60),
    st.integers(min_value=2, max_value=50),
)
def test_long_line_check_matches_splitting(atoms: list[bytes], limit: int) -> None:
    """The line-length hop agrees with measuring every line (aiosmtpd's way), on whole CRLF-ended lines."""
    lines = b"".join(atoms) + b"\r\n"
    longest = max(map(len, lines.split(b"\r\n"))) + 2
    assert _has_long_line(lines, limit) == (longest > limit)


def test_spool_closed_by_a_worker_thread_or_at_once(tmp_path: Path) -> None:
    """In a loop the spool file is closed off the loop's thread; once the loop's executor
    is gone (the relay stopping) it is closed at once rather than left open."""

    def spooled() -> Spool:
        spool = Spool(tmp_path, memory_limit=10)
        spool.write(b"Subject: x\r\n\r\n" + b"y" * 100)
        assert spool.on_disk and _spool_fds(tmp_path)
        return spool

    async def run() -> None:
        spooled().close()
        assert await _spool_closed(tmp_path)
        await asyncio.get_running_loop().shutdown_default_executor()
        spooled().close()
        assert _spool_fds(tmp_path) == []

    asyncio.run(run())
