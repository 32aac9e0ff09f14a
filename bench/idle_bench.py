"""Many idle sessions held by the relay: its memory, and a fresh session's latency beside them.

    .venv/bin/python bench/idle_bench.py [--sessions 10000] [--probes 200] [--timeout SECONDS]

`smtpguard serve` runs as a subprocess (auth "none" from loopback, upstream
an `smtp-sink` that discards what it gets, listening on 127.0.0.1 only), with
`[server] max_connections` and `max_connections_per_client` raised to
--sessions + 100 for the measurement (defaults: 1,000 and 50) and the idle
`timeout` left at the relay's default (300 s) unless --timeout is given.

1. A probe: --probes fresh sessions one after another, each timed command by
   command (connect + 220 + EHLO, MAIL, RCPT, DATA through to 250, QUIT), with
   no idle session open.
2. --sessions connections, each greeted (220) and past EHLO, then left idle.
   The relay's RSS (VmRSS) before and after, and per session.
3. The same probe while they are open; then every idle session is asked NOOP
   (all must still be there and answer 250); they are closed; the probe once
   more. "none" pools the probes before and after: same-run ratios.

File descriptors: the relay needs one per session plus ~100, and so does this
bench (its end of each connection). Both get RLIMIT_NOFILE raised here (the
relay inherits this process's): the soft limit up to the hard one, and the
hard one too when run as root. Under systemd that is the unit's LimitNOFILE
(8192 in systemd/smtpguard.service): raise it with `systemctl edit smtpguard`.

Targets (issue 15): every session held, relay RSS <= 200 MB with them open,
a fresh session's p50/p99 unaffected (here: the transaction's p50 and p99
within 1.25x of the figure with none open). Needs smtp-sink
(`bash scripts/install-interop.sh`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from big_bench import Client, message, rss_kb  # noqa: E402  (bench/ is the script's folder)
from relay_bench import Sink, sink_and_list_config, smtpguard_command, start_smtpguard, stop_process  # noqa: E402

from tests.interop.mta import LOOPBACK, free_port  # noqa: E402

RSS_TARGET_MB = 200.0
LATENCY_RATIO = 1.25
STEPS = ("EHLO", "MAIL", "RCPT", "DATA", "QUIT", "total")
GREETING_WAIT = 10.0  # seconds for a 220 or an EHLO reply
GIVE_UP = 20  # failed sessions before opening more is pointless
BATCH = 250  # connections opened before their greetings are read (the relay's backlog is 512)
_FINAL = re.compile(rb"(?:^|\n)\d{3} [^\n]*\n$")  # the last line of a (multi-line) reply


def raise_nofile(needed: int) -> tuple[int, int]:
    """RLIMIT_NOFILE of this process (and of the relay it starts) raised to `needed`; the new limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):  # root, unless CAP_SYS_RESOURCE was dropped
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed))
            hard = needed
    if soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def reply(sock: socket.socket) -> bytes:
    """One whole reply, read from a plain socket."""
    data = b""
    while not _FINAL.search(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def open_idle(port: int, count: int) -> tuple[list[socket.socket], list[str]]:
    """`count` sessions greeted and past EHLO, left open; the sockets and what went wrong."""
    held: list[socket.socket] = []
    problems: list[str] = []
    while len(held) + len(problems) < count and len(problems) < GIVE_UP:
        batch = []
        for _ in range(min(BATCH, count - len(held) - len(problems))):
            try:
                s = socket.create_connection((LOOPBACK, port), timeout=GREETING_WAIT)
            except OSError as exc:
                problems.append(f"connect: {exc}")
                continue
            batch.append(s)
        for s in batch:
            try:
                greeting = reply(s)
                s.sendall(b"EHLO idle.bench.test\r\n")
                ehlo = reply(s)
            except OSError as exc:
                problems.append(f"session {len(held)}: {exc}")
                s.close()
                continue
            if not greeting.startswith(b"220") or not ehlo.startswith(b"250"):
                problems.append(f"session {len(held)}: {greeting[:60]!r} / {ehlo[:60]!r}")
                s.close()
                continue
            held.append(s)
    return held, problems


def still_open(held: list[socket.socket]) -> int:
    """How many of the idle sessions still answer NOOP with 250."""
    alive = 0
    for s in held:
        try:
            s.sendall(b"NOOP\r\n")
            alive += reply(s).startswith(b"250")
        except OSError:
            pass
    return alive


def probe(port: int, count: int, body: bytes) -> dict[str, list[float]]:
    """`count` fresh sessions, one after another: ms per step."""
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    clock = time.perf_counter
    for _ in range(count):
        t0 = clock()
        c = Client(port)  # connect, 220, EHLO
        t1 = clock()
        assert c.cmd(b"MAIL FROM:<bench@example.org>").startswith(b"250")
        t2 = clock()
        assert c.cmd(b"RCPT TO:<someone@example.com>").startswith(b"250")
        t3 = clock()
        assert c.cmd(b"DATA").startswith(b"354")
        c.sock.sendall(body)
        assert c.reply().startswith(b"250")
        t4 = clock()
        c.close()
        t5 = clock()
        for step, ms in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True):
            times[step].append(ms * 1000)
    return times


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def rss_rollup_kb(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of the relay from /proc/PID/smaps_rollup (kB)."""
    found = {"Rss:": 0, "Pss:": 0}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, *rest = line.split()
            if name in found:
                found[name] = int(rest[0])
    return found["Rss:"], found["Pss:"]


def log_trouble(log: Path) -> list[str]:
    """Lines of the relay's log worth a look: errors, warnings, tracebacks."""
    words = ("Traceback", "ERROR", "WARNING", "Error", "Too many open files")
    return [line for line in log.read_text(errors="replace").splitlines() if any(w in line for w in words)]


def write_config(path: Path, port: int, sink_port: int, db: Path, cap: int, timeout: int | None) -> None:
    path.write_text(
        f'[server]\nlisten = "{LOOPBACK}:{port}"\nauth = "none"\ntrusted_networks = ["127.0.0.0/8"]\n'
        f"max_connections = {cap}\nmax_connections_per_client = {cap}\n"
        + (f"timeout = {timeout}\n" if timeout is not None else "")
        + "\n[upstream]\n"
        + sink_and_list_config(sink_port, db)
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=200, help="fresh sessions timed per probe")
    parser.add_argument("--timeout", type=int, help="[server] timeout for the run (default: the relay's, 300 s)")
    args = parser.parse_args()
    soft, hard = raise_nofile(args.sessions + 1024)
    print(f"RLIMIT_NOFILE: soft {soft}, hard {hard} (bench and relay)", flush=True)
    if soft < args.sessions + 1024:
        print(f"  short of the {args.sessions + 1024} needed: raise the hard limit (ulimit -Hn, as root)", flush=True)
    load_start = os.getloadavg()[0]
    body = message(4096)
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        work = Path(tmp)
        sink = Sink(work / "sink", keep=False)
        sink.start()
        db, cfg, port = work / "list.db", work / "smtpguard.toml", free_port()
        command = [*smtpguard_command(), "add", "nobody@blocked.example", "--db", str(db)]
        subprocess.run(command, check=True, capture_output=True)
        write_config(cfg, port, sink.port, db, args.sessions + 100, args.timeout)
        proc, _ = start_smtpguard(cfg, port, work)
        held: list[socket.socket] = []
        try:
            probe(port, 20, body)  # warm-up: imports, the upstream pool, the page cache
            before = probe(port, args.probes, body)
            idle_kb = rss_kb(proc.pid)
            t = time.monotonic()
            held, problems = open_idle(port, args.sessions)
            opening = time.monotonic() - t
            time.sleep(1)
            full_kb, (roll_rss, roll_pss) = rss_kb(proc.pid), rss_rollup_kb(proc.pid)
            load_open = os.getloadavg()[0]
            during = probe(port, args.probes, body)
            alive = still_open(held)
            elapsed = time.monotonic() - t
        finally:
            for s in held:
                s.close()
        try:
            after = probe(port, args.probes, body)
        finally:
            stop_process(proc, grace=40)
            sink.stop()
        trouble = log_trouble(work / "smtpguard.log")

    none = {step: before[step] + after[step] for step in STEPS}
    print(
        f"{args.sessions:,} idle sessions: {len(held):,} greeted and past EHLO in {opening:.1f} s,"
        f" {alive:,} still answering NOOP after {elapsed:.0f} s; {len(problems)} failed"
    )
    for p in problems[:5]:
        print(f"  {p}")
    rss_mb, per_kb = full_kb / 1024, (full_kb - idle_kb) / max(1, len(held))
    print(
        f"relay RSS: {idle_kb / 1024:.1f} MB with none open, {rss_mb:.1f} MB with them"
        f" (smaps_rollup Rss {roll_rss / 1024:.1f} MB, Pss {roll_pss / 1024:.1f} MB): {per_kb:.1f} KB per session"
    )
    print(f"fresh session, ms ({args.probes} with {len(held):,} idle open; {2 * args.probes} with none):")
    print(f"{'step':>6} {'p50 none':>9} {'p50 idle':>9} {'ratio':>6} {'p99 none':>9} {'p99 idle':>9} {'ratio':>6}")
    for step in STEPS:
        n50, i50, n99, i99 = pct(none[step], 50), pct(during[step], 50), pct(none[step], 99), pct(during[step], 99)
        print(f"{step:>6} {n50:>9.2f} {i50:>9.2f} {i50 / n50:>6.2f} {n99:>9.2f} {i99:>9.2f} {i99 / n99:>6.2f}")
    r50 = pct(during["total"], 50) / pct(none["total"], 50)
    r99 = pct(during["total"], 99) / pct(none["total"], 99)
    held_ok = len(held) == alive == args.sessions
    print(f"load average (1 min): {load_start:.2f} at the start, {load_open:.2f} with the sessions open")
    print(f"relay log: {len(trouble)} warning/error lines" + "".join(f"\n  {line}" for line in trouble[:10]))
    print("target                                   figure                 verdict")
    print(f"{args.sessions:,} idle sessions held{'':<17} {alive:>6,} {'':<15} {verdict(held_ok)}")
    print(f"relay RSS <= {RSS_TARGET_MB:.0f} MB{'':<22} {rss_mb:>6.1f} MB {'':<12} {verdict(rss_mb <= RSS_TARGET_MB)}")
    print(f"fresh session p50 <= {LATENCY_RATIO}x none{'':<11} {r50:>6.2f}x {'':<14} {verdict(r50 <= LATENCY_RATIO)}")
    print(f"fresh session p99 <= {LATENCY_RATIO}x none{'':<11} {r99:>6.2f}x {'':<14} {verdict(r99 <= LATENCY_RATIO)}")
    return 0 if held_ok else 1


if __name__ == "__main__":
    sys.exit(main())
