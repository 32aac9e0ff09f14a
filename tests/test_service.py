"""Running as a service: the systemd unit, sd_notify, SIGHUP and SIGTERM on a real process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import add_entries
from .smtp_fixtures import Certs, Upstream, raw_command

ROOT = Path(__file__).resolve().parent.parent
SMTPGUARD = [sys.executable, "-m", "smtpguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "smtpguard.service").read_text()
    assert "Type=notify" in unit and "ProtectSystem=strict" in unit and "ExecReload=" in unit
    # verify checks that ExecStart exists: point it at this checkout's command.
    exe = shutil.which("smtpguard") or str(Path(sys.executable).with_name("smtpguard"))
    (tmp_path / "smtpguard.service").write_text(unit.replace("/opt/smtpguard/bin/smtpguard", exe))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "smtpguard.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # Unknown or misspelt keys are only warnings for systemd: refuse them here.
    assert "Unknown" not in r.stderr and "Failed" not in r.stderr, r.stderr


def write_config(tmp: Path, port: int, upstream_port: int, certs: Certs | None = None, **extra: str) -> Path:
    upstream = (
        f'security = "starttls"\nca_file = "{certs.ca_file}"\nhost = "localhost"\n'
        if certs
        else 'security = "none"\nhost = "127.0.0.1"\n'
    )
    cfg = tmp / "smtpguard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
auth = "none"
hostname = "relay.test"
{extra.get("server", "")}

[upstream]
{upstream}port = {upstream_port}
timeout = 10

[store]
path = "{tmp / "list.db"}"
"""
    )
    return cfg


class Notifications:
    """A NOTIFY_SOCKET made by the test: what systemd would receive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def next(self, timeout: float = 15) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    async def until(self, key: str, timeout: float = 15) -> dict[str, str]:
        while True:
            msg = await self.next(timeout)
            if key in msg:
                return msg


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.sock.close()


async def start_serve(cfg: Path, notify: Notifications) -> asyncio.subprocess.Process:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "PYTHONUNBUFFERED": "1"}
    env.pop("SMTPGUARD_DB", None)
    return await asyncio.create_subprocess_exec(
        *SMTPGUARD,
        "serve",
        "--config",
        str(cfg),
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 20) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_ready_reload_and_stop_notifications(tmp_path: Path, notifications: Notifications) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, free_port())
    await add_entries(tmp_path / "list.db")  # serve needs an existing list
    proc = await start_serve(cfg, notifications)
    try:
        ready = await notifications.until("READY", timeout=45)  # a process start-up, on a loaded machine
        assert ready["READY"] == "1"
        # Ready means accepting: connect right away and get the banner.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.close()

        # A reload that moves the listener: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
        new_port = free_port()
        cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{new_port}"))
        proc.send_signal(signal.SIGHUP)
        reloading = await notifications.until("RELOADING")
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert (await notifications.until("READY"))["READY"] == "1"
        reader, writer = await asyncio.open_connection("127.0.0.1", new_port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.close()

        # A broken configuration on reload is refused; the relay keeps running.
        cfg.write_text(cfg.read_text() + "\n[bogus]\nx = 1\n")
        proc.send_signal(signal.SIGHUP)
        await notifications.until("READY")
        reader, writer = await asyncio.open_connection("127.0.0.1", new_port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.close()

        proc.send_signal(signal.SIGTERM)
        assert (await notifications.until("STOPPING"))["STOPPING"] == "1"
        code, err = await finish(proc)
        assert code == 0, err
        assert "reload failed" in err and "unknown section [bogus]" in err
        assert "listeners re-bound" in err
        assert f"list {tmp_path / 'list.db'} with 0 entries" in err  # the ready line says which list
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def refused_soon(port: int, within: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        w.close()
        await asyncio.sleep(0.05)
    return False


async def test_sigterm_during_data_delivers_once(
    tmp_path: Path, notifications: Notifications, upstream: Upstream, certs: Certs
) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, upstream.port, certs)
    await add_entries(tmp_path / "list.db", "jane.doe@example.com")
    proc = await start_serve(cfg, notifications)
    try:
        await notifications.until("READY")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        assert (await reader.readline()).startswith(b"220")
        assert (await raw_command(reader, writer, b"EHLO client.test")).startswith(b"250")
        assert (await raw_command(reader, writer, b"MAIL FROM:<alice@corp.example>")).startswith(b"250")
        assert (await raw_command(reader, writer, b"RCPT TO:<bob@ok.example>")).startswith(b"250")
        assert (await raw_command(reader, writer, b"RCPT TO:<jane.doe@example.com>")).startswith(b"550 5.7.1")
        assert (await raw_command(reader, writer, b"DATA")).startswith(b"354")
        writer.write(b"Subject: in flight\r\nMessage-ID: <flight@corp.example>\r\n\r\nfirst half\r\n")
        await writer.drain()

        proc.send_signal(signal.SIGTERM)
        await notifications.until("STOPPING")
        # New clients are refused (listener closed) while the old one finishes.
        assert await refused_soon(port)
        await asyncio.sleep(0.5)
        assert proc.returncode is None  # still finishing our transaction

        final = await raw_command(reader, writer, b"second half\r\n.")
        assert final.startswith(b"250 2.0.0 Ok: queued as"), final
        # The session is closed once its transaction is done.
        assert (await reader.read()) in (b"", b"421 4.3.2 smtpguard is restarting, please send again in a moment\r\n")
        code, err = await finish(proc)
        assert code == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(upstream.received) == 1
    got = upstream.received[0]
    assert got.rcpt_tos == ["bob@ok.example"]
    assert got.content.endswith(b"first half\r\nsecond half\r\n")


async def test_a_reload_says_when_http_or_sync_changes_wait_for_a_restart(
    tmp_path: Path, notifications: Notifications
) -> None:
    port, http = free_port(), free_port()
    cfg = write_config(tmp_path, port, free_port())
    cfg.write_text(cfg.read_text() + f'\n[http]\nlisten = "127.0.0.1:{http}"\n')
    await add_entries(tmp_path / "list.db")
    proc = await start_serve(cfg, notifications)
    try:
        await notifications.until("READY", timeout=45)
        cfg.write_text(cfg.read_text() + 'public_url = "https://relay.example.com"\n')  # still in [http]
        proc.send_signal(signal.SIGHUP)
        await notifications.until("RELOADING")
        await notifications.until("READY")
        proc.send_signal(signal.SIGTERM)
        code, err = await finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err
    assert "reload: [http] changed; the running one is kept until the next restart" in err
    assert "[[sync]] changed" not in err
