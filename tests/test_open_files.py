"""The open-file limit: a relay short of descriptors refuses with 421 and says why once, never a traceback storm."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import add_entries
from .test_service import ROOT, SMTPGUARD, finish, free_port, write_config


async def start_limited(cfg: Path, soft: int, hard: int) -> asyncio.subprocess.Process:
    """`smtpguard serve` with RLIMIT_NOFILE (soft, hard), set in the child before exec."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SMTPGUARD_DB", None)
    env.pop("NOTIFY_SOCKET", None)
    return await asyncio.create_subprocess_exec(
        *SMTPGUARD, "serve", "--config", str(cfg), env=env, cwd=str(ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )  # fmt: skip


async def greetings(port: int, count: int, writers: list[asyncio.StreamWriter]) -> list[bytes]:
    """The first line each of `count` connections gets, kept open (in `writers`)."""

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        return await asyncio.wait_for(reader.readline(), 10)

    for _ in range(100):  # the relay may not be listening yet
        try:
            first = await one()
            break
        except OSError:
            await asyncio.sleep(0.1)
    return [first, *[await one() for _ in range(count - 1)]]


async def serve_limited(
    tmp_path: Path, soft: int, hard: int, connections: int, event_loop: str = "auto"
) -> tuple[list[bytes], str]:
    """What `connections` clients hear from a relay allowed 1000 of them; its log."""
    port = free_port()
    server = f'max_connections = 1000\nmax_connections_per_client = 1000\nevent_loop = "{event_loop}"'
    cfg = write_config(tmp_path, port, free_port(), server=server)
    await add_entries(tmp_path / "list.db")
    proc = await start_limited(cfg, soft, hard)
    writers: list[asyncio.StreamWriter] = []
    try:
        lines = await greetings(port, connections, writers)
    finally:
        for w in writers:
            w.close()
        proc.terminate()
    code, err = await finish(proc)
    assert code == 0, err
    return lines, err


async def test_the_soft_limit_is_raised_for_max_connections(tmp_path: Path) -> None:
    lines, err = await serve_limited(tmp_path, 300, 4000, 400)
    assert all(x.startswith(b"220 ") for x in lines), [x for x in lines if not x.startswith(b"220 ")][:3]
    assert "open-file limit" not in err and "Traceback" not in err, err[-3000:]


# "auto" is uvloop where installed: its transports once made every 421 silent (and the cap void).
@pytest.mark.parametrize("event_loop", ["auto", "asyncio"])
async def test_max_connections_is_lowered_to_the_open_file_limit(tmp_path: Path, event_loop: str) -> None:
    lines, err = await serve_limited(tmp_path, 320, 320, 80, event_loop)  # 320 - limits.RESERVE: 64 sessions
    welcomed = [x for x in lines if x.startswith(b"220 ")]
    refused = [x for x in lines if x.startswith(b"421 4.7.0")]
    # 64 sessions fit; the rest are told to come back, none is left hanging.
    assert (len(welcomed), len(refused)) == (64, 16), lines
    assert "open-file limit 320: [server] max_connections = 1000 does not fit, using 64" in err
    assert "raise LimitNOFILE (ulimit -n) to 2256 or more" in err
    assert "Traceback" not in err and "Too many open files" not in err, err[-3000:]


# A bare asyncio server with the relay's handler, every descriptor used up:
# accept() fails with EMFILE for each connection waiting.
_STARVED = """
import asyncio, logging, resource, sys
from smtpguard.runtime.limits import AcceptErrors
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

async def main():
    loop = asyncio.get_running_loop()
    sessions = set()
    loop.set_exception_handler(AcceptErrors(sessions))
    server = await asyncio.start_server(lambda r, w: sessions.add(w), "127.0.0.1", 0)
    hog = []
    try:
        while True:
            hog.append(open("/dev/null"))
    except OSError:
        pass
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


async def test_accept_failures_are_one_line_not_a_traceback_storm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STARVED, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    writers: list[asyncio.StreamWriter] = []
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 20))
        for _ in range(5):
            writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
        await asyncio.sleep(2.5)  # asyncio tries again every second
    finally:
        for w in writers:
            w.close()
        proc.kill()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    lines = err.decode().splitlines()
    assert lines == [lines[0]], lines[:20]
    assert lines[0].startswith("ERROR cannot accept new connections: too many open files (open-file limit 64, 0")
