"""`[server] workers = 2` on a real `smtpguard serve`: load spread, reload, stop, restart, refusals.

Which worker served a message is read from the relay's own log line for it
(`worker=N session=... message_id=<...>`), the message id chosen by the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smtpguard.runtime import workermetrics
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.store import open_store

from .conftest import add_entries
from .relay_helpers import message
from .smtp_fixtures import Certs, Upstream, raw_command
from .test_service import (
    ROOT,
    SMTPGUARD,
    Notifications,
    finish,
    free_port,
    refused_soon,
    start_serve,
    write_config,
)

BLOCKED = "jane.doe@example.com"
_SERVED = re.compile(r"worker=(\d) session=(\d+) message .*message_id=<([^>@]+)@")


class Serve:
    """`smtpguard serve` in a subprocess, its log in a file (a pipe could fill and stall it)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, port: int) -> None:
        self.proc, self.log, self.port = proc, log, port

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def until(self, pattern: str, count: int = 1, timeout: float = 30) -> list[re.Match[str]]:
        """Wait until the log has `count` matches of `pattern`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found
            assert self.proc.returncode is None, self.text()
            assert loop.time() < end, f"no {count}x {pattern!r} in:\n{self.text()}"
            await asyncio.sleep(0.05)

    def served(self) -> dict[str, tuple[int, int]]:
        """message id -> (worker, session id), from the relay's log lines."""
        return {m[3]: (int(m[1]), int(m[2])) for m in _SERVED.finditer(self.text())}

    async def __aenter__(self) -> Serve:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:  # a failed test: never leave a relay behind
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout: float = 40) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def start(cfg: Path, tmp: Path, port: int, *, ready: bool = True, json: bool = False) -> Serve:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("SMTPGUARD_DB", "NOTIFY_SOCKET"):
        env.pop(name, None)
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *SMTPGUARD,
            "serve",
            "--config",
            str(cfg),
            *(["--log-format", "json"] if json else []),
            env=env,
            cwd=str(ROOT),
            stdout=out,
            stderr=out,
        )
    serve = Serve(proc, log, port)
    if ready:
        await serve.until(r'"worker": \d' if json else r"worker=\d smtpguard ready", count=2)
    return serve


# "auto" is uvloop where installed (pip install smtpguard[perf]); "asyncio" is the standard loop.
@pytest.fixture(params=["auto", "asyncio"])
async def two_workers(
    tmp_path: Path, upstream: Upstream, certs: Certs, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Serve, Path]]:
    port = free_port()
    server = f'workers = 2\nevent_loop = "{request.param}"'
    cfg = write_config(tmp_path, port, upstream.port, certs, server=server)
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port) as serve:
        yield serve, cfg


async def send(port: int, mid: str) -> tuple[bytes, bytes]:
    """One message to bob and the blocked address: (the RCPT reply for the blocked one, the DATA reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
        assert (await raw_command(reader, writer, b"EHLO client.test")).startswith(b"250")
        assert (await raw_command(reader, writer, b"MAIL FROM:<alice@corp.example>")).startswith(b"250")
        assert (await raw_command(reader, writer, b"RCPT TO:<bob@ok.example>")).startswith(b"250")
        refused = await raw_command(reader, writer, f"RCPT TO:<{BLOCKED}>".encode())
        assert (await raw_command(reader, writer, b"DATA")).startswith(b"354")
        done = await raw_command(reader, writer, message(mid=mid) + b".")
        await raw_command(reader, writer, b"QUIT")
        return refused, done
    finally:
        writer.close()


async def rcpt_reply(port: int, address: str) -> bytes:
    """The reply to RCPT TO:<address> in a session of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
        assert (await raw_command(reader, writer, b"EHLO client.test")).startswith(b"250")
        assert (await raw_command(reader, writer, b"MAIL FROM:<alice@corp.example>")).startswith(b"250")
        reply = await raw_command(reader, writer, f"RCPT TO:<{address}>".encode())
        await raw_command(reader, writer, b"QUIT")
        return reply
    finally:
        writer.close()


async def send_many(port: int, prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    """`n` messages over `n` connections, a few at a time."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[bytes, bytes]:
        async with gate:
            return await send(port, f"{prefix}{i}")

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_both_workers_serve_and_refuse_the_suppressed(
    two_workers: tuple[Serve, Path], upstream: Upstream, tmp_path: Path
) -> None:
    serve, _ = two_workers
    results = await send_many(serve.port, "spread", 40)
    for refused, done in results:
        assert refused.startswith(b"550 5.7.1"), refused
        assert done.startswith(b"250 "), done
    assert await serve.stop() == 0, serve.text()

    served = serve.served()
    assert {mid for mid in served if mid.startswith("spread")} == {f"spread{i}" for i in range(40)}
    assert {w for w, _ in served.values()} == {1, 2}, served  # both workers took connections
    sessions = [sid for _, sid in served.values()]
    assert len(set(sessions)) == len(sessions)  # session ids unique across workers
    assert all(sid % 2 == w % 2 for w, sid in served.values())  # worker 1 odd, worker 2 even
    # Every message reached bob only, whichever worker relayed it.
    assert len(upstream.received) == 40
    assert all(got.rcpt_tos == ["bob@ok.example"] for got in upstream.received)
    # Both workers' audit events reached the one store.
    store = await open_store(tmp_path / "list.db", MatchRules())
    try:
        events = await store.events()
    finally:
        await store.close()
    assert sorted(e.message_id for e in events if e.recipient == BLOCKED) == sorted(
        f"<spread{i}@corp.example>" for i in range(40)
    )


async def test_sighup_reaches_every_worker(two_workers: tuple[Serve, Path], upstream: Upstream) -> None:
    serve, cfg = two_workers
    before = await send(serve.port, "before")
    assert b"5.7.1" in before[0]
    cfg.write_text(cfg.read_text().replace("[upstream]", '[policy]\nlanguage = "fr"\n\n[upstream]'))
    serve.proc.send_signal(signal.SIGHUP)
    await serve.until(r"worker=\d reload: configuration applied", count=2)
    results = await send_many(serve.port, "after", 30)
    assert await serve.stop() == 0, serve.text()
    french = {refused for refused, _ in results}
    assert len(french) == 1 and before[0] not in french  # every connection: the new language
    served = serve.served()
    assert {served[f"after{i}"][0] for i in range(30)} == {1, 2}  # ... from both workers


async def test_sigterm_drains_in_flight_mail_on_every_worker(
    two_workers: tuple[Serve, Path], upstream: Upstream
) -> None:
    serve, _ = two_workers
    # Several sessions mid-DATA: with two workers, both have one in flight (checked below).
    opened = []
    for i in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        assert (await reader.readline()).startswith(b"220")
        for line in (b"EHLO client.test", b"MAIL FROM:<alice@corp.example>", b"RCPT TO:<bob@ok.example>"):
            assert (await raw_command(reader, writer, line)).startswith(b"250")
        assert (await raw_command(reader, writer, b"DATA")).startswith(b"354")
        writer.write(f"Subject: in flight\r\nMessage-ID: <drain{i}@corp.example>\r\n\r\nfirst half\r\n".encode())
        await writer.drain()
        opened.append((reader, writer))
    serve.proc.send_signal(signal.SIGTERM)
    assert await refused_soon(serve.port)  # no new sessions, on any worker
    await asyncio.sleep(0.3)
    assert serve.proc.returncode is None and upstream.received == []  # nothing relayed before the end of DATA
    for reader, writer in opened:
        final = await raw_command(reader, writer, b"second half\r\n.")
        assert final.startswith(b"250 "), final
        writer.close()
    assert await asyncio.wait_for(serve.proc.wait(), 40) == 0, serve.text()
    assert len(upstream.received) == 8
    assert all(got.content.endswith(b"first half\r\nsecond half\r\n") for got in upstream.received)
    assert {w for w, _ in serve.served().values()} == {1, 2}, serve.text()


async def test_a_killed_worker_is_restarted(two_workers: tuple[Serve, Path], upstream: Upstream) -> None:
    serve, _ = two_workers
    (started,) = await serve.until(r"worker 2 started \(pid (\d+)\)")
    os.kill(int(started[1]), signal.SIGKILL)
    await serve.until(r"worker 2 \(pid \d+\) was killed by signal 9; restarting it")
    await serve.until(r"worker 2 started \(pid (\d+)\)", count=2)
    await serve.until(r"worker=2 smtpguard ready", count=2)
    results = await send_many(serve.port, "again", 30)
    assert all(done.startswith(b"250 ") for _, done in results)
    assert await serve.stop() == 0, serve.text()
    assert {serve.served()[f"again{i}"][0] for i in range(30)} == {1, 2}


async def test_memory_store_with_workers_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port(), free_port(), server="workers = 2")
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "list.db"), ":memory:"))
    for command in (["serve"], ["config", "check"]):
        proc = await asyncio.create_subprocess_exec(
            *SMTPGUARD, *command, "--config", str(cfg), stderr=asyncio.subprocess.PIPE, cwd=str(ROOT)
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, lines
        assert "workers = 2" in lines[0] and "in-memory" in lines[0], lines


async def test_a_store_the_workers_cannot_open_stops_the_supervisor(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, free_port(), server="workers = 2")
    (tmp_path / "list.db").write_bytes(b"not a database at all" * 100)  # passes the file checks, fails to open
    serve = await start(cfg, tmp_path, port, ready=False)
    assert await asyncio.wait_for(serve.proc.wait(), 30) == 2, serve.text()
    errors = [line for line in serve.text().splitlines() if line.startswith("smtpguard:")]
    assert len(errors) == 1 and "list.db" in errors[0], serve.text()  # worker 1 alone tried: one line
    assert "worker 2 started" not in serve.text()


def test_workers_auto_is_one_per_cpu(tmp_path: Path) -> None:
    from smtpguard import config

    cfg = write_config(tmp_path, 2525, 25, server='workers = "auto"')
    assert config.load(cfg).server.workers == len(os.sched_getaffinity(0))
    cfg.write_text(cfg.read_text().replace('"auto"', "0"))
    with pytest.raises(config.ConfigError, match=r'workers must be 1-64 or "auto", got 0'):
        config.load(cfg)


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
async def test_starttls_and_implicit_tls_on_every_worker(
    tmp_path: Path, upstream: Upstream, certs: Certs, loop: str
) -> None:
    port, smtps = free_port(), free_port()
    server = (
        f'workers = 2\nevent_loop = "{loop}"\nsmtps_listen = "127.0.0.1:{smtps}"\n'
        f'tls_cert = "{certs.cert_file}"\ntls_key = "{certs.key_file}"'
    )
    cfg = write_config(tmp_path, port, upstream.port, certs, server=server)
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port) as serve:

        def over_tls(i: int) -> None:
            implicit = i % 2 == 1
            client: smtplib.SMTP
            if implicit:
                client = smtplib.SMTP_SSL("127.0.0.1", smtps, context=certs.client_context(), timeout=20)
            else:
                client = smtplib.SMTP("127.0.0.1", port, timeout=20)
                client.starttls(context=certs.client_context())
            with client:
                client.ehlo("client.test")
                refused = client.sendmail("alice@corp.example", ["bob@ok.example", BLOCKED], message(mid=f"tls{i}"))
                assert BLOCKED in refused

        await asyncio.gather(*(asyncio.to_thread(over_tls, i) for i in range(24)))
        assert await serve.stop() == 0, serve.text()
    served = serve.served()
    assert {served[f"tls{i}"][0] for i in range(0, 24, 2)} == {1, 2}  # STARTTLS, both workers
    assert {served[f"tls{i}"][0] for i in range(1, 24, 2)} == {1, 2}  # implicit TLS, both workers
    assert len(upstream.received) == 24


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.sock.close()


async def test_systemd_hears_the_supervisor_for_all_workers(
    tmp_path: Path, upstream: Upstream, certs: Certs, notify_socket: Notifications
) -> None:
    notifications = notify_socket
    port = free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs, server="workers = 2")
    await add_entries(tmp_path / "list.db", BLOCKED)
    proc = await start_serve(cfg, notifications)  # NOTIFY_SOCKET set, as systemd does (NotifyAccess=main)
    try:
        ready = await notifications.until("READY")
        assert "(2 workers)" in ready["STATUS"]  # once, when both are ready
        _, done = await send(port, "notified")
        assert done.startswith(b"250 ")
        proc.send_signal(signal.SIGHUP)
        assert "MONOTONIC_USEC" in await notifications.until("RELOADING")
        assert (await notifications.until("READY"))["READY"] == "1"  # after both workers reloaded
        proc.send_signal(signal.SIGTERM)
        assert (await notifications.until("STOPPING"))["STOPPING"] == "1"
        code, err = await finish(proc, timeout=40)
        assert code == 0, err
        assert err.count("reload: configuration applied") == 2, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_one_worker_watches_the_folder_and_every_worker_sees_the_import(
    tmp_path: Path, upstream: Upstream, certs: Certs
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs, server="workers = 2")
    cfg.write_text(cfg.read_text() + f'\n[watch]\nfolder = "{inbox}"\ninterval = 0.2\n')
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port) as serve:
        await serve.until(r"watching .*inbox")
        (inbox / "unsubs.csv").write_text("Email\ncarol@ok.example\n")
        await serve.until(r"watch: imported unsubs\.csv")
        codes = await asyncio.gather(*(rcpt_reply(port, "carol@ok.example") for _ in range(20)))
        assert all(code.startswith(b"550 5.7.1") for code in codes), codes
        assert await serve.stop() == 0, serve.text()
    log = serve.text()
    assert re.findall(r"worker=(\d) watching", log) == ["1"]  # the folder has one watcher: worker 1
    assert log.count("watch: imported unsubs.csv") == 1
    refused_by = set(re.findall(r"worker=(\d) session=\d+ suppressed rcpt=<carol@ok.example>", log))
    assert refused_by == {"1", "2"}  # the import reached both workers' lookups
    assert (inbox / "done" / "unsubs.csv").exists()


def test_event_loop_uvloop_without_uvloop_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpguard.config import ConfigError
    from smtpguard.runtime.loops import loop_factory

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: `import uvloop` raises ImportError
    assert loop_factory("auto") is None and loop_factory("asyncio") is None  # auto falls back to asyncio
    with pytest.raises(ConfigError, match=r'event_loop = "uvloop" but uvloop is not installed: pip install'):
        loop_factory("uvloop")


async def test_reload_rebuilds_listeners_on_the_bound_sockets(tmp_path: Path, upstream: Upstream, certs: Certs) -> None:
    port, moved = free_port(), free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs, server="workers = 2")
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port) as serve:
        # A new banner name (listeners rebuilt) and a new port (kept until a restart), in one reload.
        cfg.write_text(cfg.read_text().replace("relay.test", "renamed.test").replace(f":{port}", f":{moved}"))
        serve.proc.send_signal(signal.SIGHUP)
        await serve.until(r"worker=\d reload: configuration applied", count=2)

        async def banner() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(reader.readline(), 10)
            finally:
                writer.close()

        banners = await asyncio.gather(*(banner() for _ in range(30)))
        assert all(b.startswith(b"220 renamed.test") for b in banners), banners
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", moved)
        assert await serve.stop() == 0, serve.text()
    log = serve.text()
    assert len(re.findall(r"worker=\d reload: listener addresses changed; .* next restart", log)) == 2
    assert len(re.findall(r"worker=\d reload: listeners re-bound \(hostname changed\)", log)) == 2


async def test_json_log_lines_carry_the_worker_as_a_key(tmp_path: Path, upstream: Upstream, certs: Certs) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs, server="workers = 2")
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port, json=True) as serve:
        await serve.until(r"smtpguard ready", count=2)
        await send_many(port, "json", 20)
        assert await serve.stop() == 0, serve.text()
    lines = [json.loads(line) for line in serve.text().splitlines() if line.startswith("{")]
    relayed = [line for line in lines if str(line.get("message_id", "")).startswith("json")]
    assert len(relayed) == 20 and {line["worker"] for line in relayed} == {1, 2}
    assert all(not line["message"].startswith("worker=") for line in lines)  # a key, not text
    sessions = [(line["worker"], line["session"]) for line in relayed]
    assert len({sid for _, sid in sessions}) == 20


def scrape(port: int) -> dict[str, float]:
    """/metrics as {series name: sum over its labels}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


async def test_metrics_add_up_every_workers_counters(upstream: Upstream, tmp_path: Path, certs: Certs) -> None:
    port, http = free_port(), free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs, server="workers = 2")
    cfg.write_text(cfg.read_text() + f'\n[http]\nlisten = "127.0.0.1:{http}"\n')
    await add_entries(tmp_path / "list.db", BLOCKED)
    async with await start(cfg, tmp_path, port) as serve:
        await serve.until(r"worker=1 .*http", timeout=30)
        results = await send_many(port, "count", 40)
        assert all(refused.startswith(b"550 5.7.1") and done.startswith(b"250 ") for refused, done in results)
        await asyncio.sleep(2 * workermetrics.PUBLISH_EVERY + 0.5)  # worker 2's snapshot is written
        sums = await asyncio.to_thread(scrape, http)
        assert await serve.stop() == 0, serve.text()
    assert {w for w, _ in serve.served().values()} == {1, 2}  # both workers relayed some of them
    assert sums["smtpguard_messages_relayed_total"] == 40, sums
    assert sums["smtpguard_recipients_total"] == 40, sums  # one refused recipient a message, whichever worker
