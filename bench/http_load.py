"""The relay benchmark while the HTTP API serves a steady load: does HTTP stall SMTP?

    .venv/bin/python bench/http_load.py [--messages 2000] [--rate 200] [--entries 100000] [--repeat 2]

Reuses bench/relay_bench.py: the same `smtp-sink`, `smtp-source` load and
N-entry list, against one `smtpguard serve` process (a real one, with
`[http] listen` on 127.0.0.1).  Each round runs the SMTP load twice, quiet
then loaded, where "loaded" adds an HTTP client keeping --rate requests per
second on `GET /api/v1/check` (a list lookup each, with a read token).

Reported per phase: delivered messages per second, and the stall an SMTP
session sees: an SMTP client on its own connection sends NOOP every 10 ms
and times the reply (the relay's event-loop lag plus a loopback round trip),
as p50 / p99 / max.  Also the HTTP load's achieved rate and latency.
Everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_bench as rb  # noqa: E402

from smtpguard.http.auth import create_token  # noqa: E402
from smtpguard.suppression.addresses import MatchRules  # noqa: E402
from smtpguard.suppression.store import open_store  # noqa: E402
from tests.interop.mta import LOOPBACK, free_port  # noqa: E402


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.values:
            return "no samples"
        v = sorted(self.values)
        p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
        return f"p50 {statistics.median(v) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {v[-1] * 1000:.1f} ms"


class Background:
    """A thread running `work(stop)` until stopped."""

    def __init__(self, work: object) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=work, args=(self.stop,), daemon=True)  # type: ignore[arg-type]

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def noop_probe(port: int, lag: Samples) -> Background:
    """One SMTP session sending NOOP every 10 ms; each reply's round trip is a sample."""

    def work(stop: threading.Event) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # banner
            while not stop.is_set():
                t = time.perf_counter()
                sock.sendall(b"NOOP\r\n")
                reader.readline()
                lag.values.append(time.perf_counter() - t)
                time.sleep(0.01)
            sock.sendall(b"QUIT\r\n")

    return Background(work)


def _load_process(base: str, token: str, rate: float, stop: Event, out: Connection) -> None:
    """--rate requests/s on GET /api/v1/check, scheduled on a clock (not one after another)."""

    async def main() -> tuple[list[float], list[int]]:
        latency: list[float] = []
        counts = [0, 0]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10,
                                     limits=httpx.Limits(max_connections=20)) as client:  # fmt: skip

            async def one(n: int) -> None:
                t = time.perf_counter()
                r = await client.get("/api/v1/check", params={"address": f"{n % 5000}user@example.com"})
                latency.append(time.perf_counter() - t)
                counts[0 if r.status_code == 200 else 1] += 1

            start, n, tasks = time.perf_counter(), 0, set()
            while not stop.is_set():
                n += 1
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            await asyncio.gather(*tasks, return_exceptions=True)
        return latency, counts

    out.send(asyncio.run(main()))


class HttpLoad:
    """The HTTP client in a process of its own: its CPU and GIL stay out of the probe's way."""

    def __init__(self, base: str, token: str, rate: float) -> None:
        self.stop = multiprocessing.Event()
        self.recv, send = multiprocessing.Pipe(duplex=False)
        self.proc = multiprocessing.Process(target=_load_process, args=(base, token, rate, self.stop, send))
        self.latency, self.counts = Samples(), [0, 0]

    def __enter__(self) -> HttpLoad:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        latency, self.counts = self.recv.recv()
        self.latency.values = latency
        self.proc.join(10)


def make_token(db: Path) -> str:
    async def main() -> str:
        store = await open_store(db, MatchRules())
        try:
            token = await create_token(store, "bench", "read")
            assert token is not None
            return token
        finally:
            await store.close()

    return asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--recipients", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=200.0, help="HTTP requests per second in the loaded phase")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if rb.which("smtp-source") is None or rb.which("smtp-sink") is None:
        print("needs smtp-source and smtp-sink: run `bash scripts/install-interop.sh`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sghl-", dir="/tmp"))
    work.chmod(0o755)  # smtp-sink drops root to `nobody`, who must reach its folder
    shm = Path("/dev/shm")
    sink = rb.Sink(Path(tempfile.mkdtemp(prefix="sghl-sink-", dir=shm if shm.is_dir() else work)))
    relay: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        db = work / "smtpguard.db"
        rb.build_sqlite_list(db, args.entries)
        token = make_token(db)
        sink.start()
        cfg, port, http_port = work / "smtpguard.toml", free_port(), free_port()
        rb.write_config(cfg, port, sink.port, db)
        with cfg.open("a") as fh:
            fh.write(f'\n[http]\nlisten = "{LOOPBACK}:{http_port}"\n')
        with (work / "smtpguard.log").open("ab") as log:
            relay = subprocess.Popen([*rb.smtpguard_command(), "serve", "--config", str(cfg)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        proc = relay
        rb.wait_port(port, lambda: proc.poll() is None, "smtpguard serve")
        rb.wait_port(http_port, lambda: proc.poll() is None, "smtpguard HTTP side")
        target = rb.Target("smtpguard", port, lambda: rb.process_cpu(proc.pid), filtered=True)
        base = f"http://{LOOPBACK}:{http_port}"
        rb.measure(args, target, sink, min(200, args.messages), work)  # warm-up
        # HTTP alone: what one API request costs the relay's process, and the stall SMTP sees.
        lag, load = Samples(), HttpLoad(base, token, args.rate)
        cpu0, t = target.server_cpu(), time.perf_counter()
        with noop_probe(port, lag), load:
            time.sleep(10)
        cpu, seconds, done = target.server_cpu() - cpu0, time.perf_counter() - t, sum(load.counts)
        print(f"HTTP only: {done / seconds:.0f} req/s ({load.counts[1]} not 200), latency {load.latency.summary()}, "
              f"relay CPU {cpu / max(done, 1) * 1000:.2f} ms/request; SMTP NOOP round trip {lag.summary()}",
              flush=True)  # fmt: skip
        for i in range(args.repeat):
            for phase in ("quiet", "loaded"):
                lag, load = Samples(), HttpLoad(base, token, args.rate)
                cpu0 = target.server_cpu()
                with noop_probe(port, lag):
                    if phase == "loaded":
                        with load:
                            t = time.perf_counter()
                            run = rb.measure(args, target, sink, args.messages, work)
                            seconds = time.perf_counter() - t
                    else:
                        run = rb.measure(args, target, sink, args.messages, work)
                cpu = target.server_cpu() - cpu0
                counts = load.counts
                line = (f"round {i + 1} {phase:6}: {run.rate:7,.0f} msg/s, relay CPU {cpu:.1f} s; "
                        f"SMTP NOOP round trip {lag.summary()}")  # fmt: skip
                if phase == "loaded":
                    line += (f"; HTTP {sum(counts) / seconds:.0f} req/s ({counts[1]} not 200), "
                             f"latency {load.latency.summary()}")  # fmt: skip
                print(line, flush=True)
                for p in run.problems:
                    failed = True
                    print(f"FAIL {phase}: {p}", flush=True)
                failed = failed or counts[1] > 0
    finally:
        if relay is not None:
            rb.stop_process(relay)
        sink.stop()
        shutil.rmtree(sink.folder, ignore_errors=True)
        if failed:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
