"""How the relay hands a big message to the upstream: aiosmtplib's data() against streaming.

    .venv/bin/python bench/upstream_bench.py [--size-mib 25]

One process, an `smtp-sink` on 127.0.0.1 as the upstream. For each way of
sending --size-mib (base64-like lines): wall time, CPU time, and the longest
stall of a 1 ms ticker on the same loop (what other sessions would wait).

- data(): aiosmtplib's `data(bytes)`, the whole message as one object (before);
- send_data: smtp/stream.py, 64 KiB pieces, dot-stuffed on the way (now);
- raw writer: the same pieces written to the same transport with no stuffing,
  the floor of an upstream client of our own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relay_bench import Sink  # noqa: E402  (bench/ is the script's folder)

from smtpguard.smtp.stream import send_data  # noqa: E402

PIECE = 64 * 1024
LINE = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"


async def ticker(stop: asyncio.Event, stalls: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        stalls.append(now - last - 0.001)
        last = now


async def raw_writer(up: aiosmtplib.SMTP, message: bytes) -> int:
    proto = up.protocol
    assert proto is not None
    await up.execute_command(b"DATA")
    proto._response_pending = True
    for i in range(0, len(message), PIECE):
        proto.write(message[i : i + PIECE])
        await proto._drain_helper()
        await asyncio.sleep(0)
    proto.write(b".\r\n")
    return (await proto.read_response()).code


async def one(kind: str, port: int, message: bytes) -> None:
    up = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=120)
    await up.connect()
    await up.mail("bench@example.org")
    await up.rcpt("big@example.com")
    stop, stalls = asyncio.Event(), [0.0]
    tick = asyncio.create_task(ticker(stop, stalls))
    await asyncio.sleep(0.01)
    cpu, wall = time.process_time(), time.perf_counter()
    if kind == "data()":
        code = (await up.data(message)).code
    elif kind == "send_data":
        pieces = (message[i : i + PIECE] for i in range(0, len(message), PIECE))
        code = (await send_data(up, pieces, timeout=120)).code
    else:
        code = await raw_writer(up, message)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    await tick
    await up.quit()
    print(
        f"{kind:>10}: {code} wall {wall * 1000:6.0f} ms  CPU {cpu * 1000:6.0f} ms"
        f"  longest loop stall {max(stalls) * 1000:7.1f} ms",
        flush=True,
    )


async def run(port: int, size: int) -> None:
    message = b"Subject: big\r\n\r\n" + LINE * (size // len(LINE))
    for kind in ["send_data", "raw writer", "data()", "send_data", "raw writer", "data()"]:
        await one(kind, port, message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=25)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="upstream-bench-") as tmp:
        sink = Sink(Path(tmp) / "sink", keep=False)
        sink.start()
        try:
            asyncio.run(run(sink.port, args.size_mib * 1024 * 1024))
        finally:
            sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
