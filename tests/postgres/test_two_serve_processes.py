"""Two `smtpguard serve` processes on one PostgreSQL database, real SMTP clients, a real upstream.

An entry added with the CLI is refused by the other relay at its next RCPT;
the database stopped mid-run gives 451 while it is down and normal service
after, without restarting either relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..relay_helpers import closed_port, message
from ..smtp_fixtures import Certs, Upstream, start_upstream
from .cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SMTPGUARD_", "PG"))}


async def smtpguard(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtpguard", *args, cwd=ROOT, env=env(), stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config(tmp: Path, name: str, port: int, up: Upstream, certs: Certs, dsn: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nauth = "none"\nhostname = "{name}.test"\n'
        f'[upstream]\nhost = "localhost"\nport = {up.port}\nsecurity = "starttls"\nca_file = "{certs.ca_file}"\n'
        f'[store]\nurl = "{dsn}"\nrelay_name = "{name}"\n'
    )
    return path


def rcpt(port: int, recipient: str) -> int:
    """One SMTP conversation up to RCPT: its reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("sales@corp.example")
        code, _ = client.rcpt(recipient)
        return code


def send(port: int, recipient: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("sales@corp.example", [recipient], message(to=recipient))


@pytest.fixture
async def relays(tmp_path: Path, pg_dsn: str) -> AsyncIterator[tuple[Upstream, list[int], Path]]:
    certs = Certs(tmp_path)
    up = await start_upstream(Upstream(), certs)
    ports = [closed_port(), closed_port()]
    configs = [config(tmp_path, f"relay-{n}", p, up, certs, pg_dsn) for n, p in zip("ab", ports, strict=True)]
    code, _, err = await smtpguard("add", "keep@x.example", "--config", str(configs[0]))  # creates the schema
    assert code == 0, err
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smtpguard", "serve", "--config", str(c), cwd=ROOT, env=env(), stderr=-1
        )
        for c in configs
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            for _ in range(300):
                assert proc.returncode is None, "serve exited"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield up, ports, configs[0]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
            assert b"Traceback" not in err_bytes, err_bytes.decode()
        assert up.server is not None
        up.server.close()


async def test_an_entry_added_through_one_is_refused_by_the_other_and_an_outage_is_451(
    relays: tuple[Upstream, list[int], Path], pg_cluster: Cluster
) -> None:
    up, (a, b), config_a = relays
    assert await asyncio.to_thread(rcpt, b, "jane@example.com") == 250
    code, out, err = await smtpguard("add", "jane@example.com", "--config", str(config_a))
    assert code == 0, err
    # the very next RCPT at the other relay: no cache to wait for
    assert await asyncio.to_thread(rcpt, b, "Jane@Example.com") == 550
    assert await asyncio.to_thread(rcpt, a, "jane@example.com") == 550
    await asyncio.to_thread(send, b, "bob@ok.example")
    assert [r.rcpt_tos for r in up.received] == [["bob@ok.example"]]

    pg_cluster.stop()
    try:
        for port in (a, b):  # fail closed: nothing goes out unchecked
            assert await asyncio.to_thread(rcpt, port, "bob@ok.example") == 451
            assert await asyncio.to_thread(rcpt, port, "jane@example.com") == 451
    finally:
        pg_cluster.start()
    # back by themselves, no restart
    for port in (a, b):
        assert await asyncio.to_thread(rcpt, port, "jane@example.com") == 550
        assert await asyncio.to_thread(rcpt, port, "bob@ok.example") == 250
    await asyncio.to_thread(send, a, "carol@ok.example")
    assert [r.rcpt_tos for r in up.received][-1] == ["carol@ok.example"]

    # one audit log, each refusal with the relay that made it
    relays_seen: set[str] = set()
    for _ in range(100):
        code, out, err = await smtpguard("log", "--json", "--config", str(config_a))
        assert code == 0, err
        relays_seen = {e["relay"] for e in json.loads(out) if e["recipient"].lower() == "jane@example.com"}
        if relays_seen == {"relay-a", "relay-b"}:
            break
        await asyncio.sleep(0.1)
    assert relays_seen == {"relay-a", "relay-b"}
