"""Relay throughput: delivered messages per second through smtpguard, against baselines.

    .venv/bin/python bench/relay_bench.py [--messages 2000] [--recipients 5] [--sessions 10]
        [--size 4096] [--entries 1000000] [--dir DIR] [--repeat 3] [--no-postfix] [--workers N] [--event-loop L]

Everything listens on 127.0.0.1 only.  One `smtp-sink` is the final
destination of every run; the same `smtp-source -A -N` load (a new connection
per message, recipients numbered `<1user@example.com>` .. `<M*Ruser@example.com>`)
is sent, each target in turn (alternating when --repeat > 1), to:

- direct: the sink itself (baseline A: what the client, the sink and the
  machine manage without anything in between);
- postfix: a private Postfix, before-queue proxy variant (`smtpd_proxy_filter`
  = the sink, so the client hears 250 only once the sink took the message),
  with `check_recipient_access hash:TABLE` over the same N-entry table
  (baseline B; needs root; skipped with --no-postfix);
- postfix-queue: another private Postfix, store-and-forward (its defaults:
  smtpd queues, qmgr and smtp deliver to the sink), same table; its wall
  clock runs until the sink got the last message and its queue is empty
  (baseline C; needs root; skipped with --no-postfix);
- smtpguard: `smtpguard serve --config CFG` as a subprocess, auth "none" from
  loopback, upstream = the sink, `[policy] mode = "reject"`, the same N
  entries in its SQLite list.

The list holds `<10i+7>user@example.com` for i < N, so every tenth numbered
recipient of the load (7, 17, 27, ...) is suppressed, ~10%.  The built lists
(SQLite and Postfix hash) are cached in --dir.

Reported per target (best msg/s of --repeat runs): delivered messages per
second (transactions the sink got / wall clock of smtp-source, or until the
last delivery for the queueing Postfix), CPU milliseconds per delivered
message of the server under test (smtpguard's process; Postfix's master and
its children), of the sink and of the client, and ratios smtpguard/direct
and smtpguard/postfix measured in the same run; then issue 15's table
(medians with --repeat > 1), each target beside its figure, PASS or MISS.
"CPU per message" there is the whole path's: server + sink + client, the
processes of the run (the machine is shared, so /proc/stat would count
other people's work too); the load average at the start is printed with it.
Correctness is checked on what the sink received: no suppressed recipient,
every other recipient delivered.  Exits 1 when a check fails (never on speed).

Needs smtp-source and smtp-sink (`bash scripts/install-interop.sh`); root for
the Postfix baseline.  Profile smtpguard with e.g.
`py-spy record --subprocesses -o relay.svg -- .venv/bin/python bench/relay_bench.py --no-postfix`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.interop.mta: the private Postfix of the interop suite

from smtpguard.suppression.addresses import MatchRules, address_key  # noqa: E402
from smtpguard.suppression.store import EntryRow, open_store  # noqa: E402
from tests.interop.mta import (  # noqa: E402
    LOOPBACK,
    POSTFIX,
    POSTMAP,
    PrivatePostfix,
    _alive,
    free_port,
    port_open,
)

DOMAIN = "example.com"
RCPT_BASE = f"user@{DOMAIN}"  # smtp-source -N makes <1user@example.com>, <2user@example.com>, ...
SENDER = "bench@example.org"
STEP, OFFSET = 10, 7  # the list holds numbers OFFSET, OFFSET+STEP, ...: ~1 recipient in STEP
ADDED = "2024-01-01T00:00:00+00:00"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
_NUMBERED = re.compile(rb"X-Rcpt-Args: <(\d+)user@example\.com>")


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/lib/postfix/sbin")


def smtpguard_command() -> list[str]:
    script = Path(sys.executable).with_name("smtpguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "smtpguard"]


def is_suppressed(number: int, entries: int) -> bool:
    return number % STEP == OFFSET and number <= STEP * (entries - 1) + OFFSET


def listed_numbers(entries: int) -> Iterator[int]:
    return (STEP * i + OFFSET for i in range(entries))


def wait_port(port: int, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if not alive():
            raise RuntimeError(f"{what} exited before listening on {LOOPBACK}:{port}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {START_TIMEOUT:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 40.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: only this process, by its pid."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --- CPU accounting from /proc ---------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [0] is field 3 (state): field k is [k - 3]


def process_cpu(pid: int) -> float:
    """utime + stime of one process, seconds."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def tree_cpu(pid: int) -> float:
    """A daemon and its direct children: its own time, its reaped children's, its live children's.

    A child that exits between two readings moves from the live sum into the
    parent's cutime/cstime, so differences of this stay right (Postfix recycles
    smtpd processes after max_use connections).
    """
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            c = _stat_fields(int(entry.name))
            if c is not None and int(c[1]) == pid:
                ticks += int(c[11]) + int(c[12])
    return ticks / CLK_TCK


# --- the sink ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    messages: int  # transactions the sink took
    rcpts: int
    leaked: list[str]  # suppressed recipients that reached the sink
    numbers: set[int]  # numbered recipients seen (to find missing ones)


class Sink:
    """`smtp-sink -D`: one multi-message dump file; renamed away after each run."""

    def __init__(self, folder: Path, *, keep: bool = True) -> None:
        self.folder = folder
        self.keep = keep  # False: what arrives is discarded (big_bench)
        self.dump = folder / "dump"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tool = which("smtp-sink")
        assert tool is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        user: list[str] = []
        if os.geteuid() == 0:  # smtp-sink refuses to keep root: it must drop to someone
            shutil.chown(self.folder, user="nobody")
            user = ["-u", "nobody"]
        self.port = free_port()
        with (self.folder / "sink.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [tool, *user, *(["-D", str(self.dump)] if self.keep else []), f"{LOOPBACK}:{self.port}", "1024"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_port(self.port, lambda: proc.poll() is None, "smtp-sink")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None

    def cpu(self) -> float:
        return process_cpu(self.proc.pid) if self.proc else 0.0

    def settle(self) -> float:
        """Wait until the dump stops growing; the time (epoch) of its last write, 0 without one."""
        last, stable, deadline = -1, 0, time.monotonic() + 30
        while stable < 3 and time.monotonic() < deadline:
            size = self.dump.stat().st_size if self.dump.exists() else 0
            stable = stable + 1 if size == last else 0
            last = size
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            return self.dump.stat().st_mtime
        return 0.0

    def collect(self, entries: int, name: str) -> Received:
        """What arrived since the last collect; waits until the dump stops growing."""
        self.settle()
        if not self.dump.exists():
            return Received(0, 0, [], set())
        taken = self.folder / f"{name}.dump"
        self.dump.rename(taken)  # the sink opens the file per transaction: the next one starts afresh
        messages = rcpts = 0
        leaked: list[str] = []
        numbers: set[int] = set()
        with taken.open("rb") as fh:
            for line in fh:
                if line.startswith(b"X-Client-Addr:"):
                    messages += 1
                elif line.startswith(b"X-Rcpt-Args:"):
                    rcpts += 1
                    m = _NUMBERED.match(line)
                    if m:
                        n = int(m.group(1))
                        numbers.add(n)
                        if is_suppressed(n, entries):
                            leaked.append(f"{n}{RCPT_BASE}")
        taken.unlink()
        return Received(messages, rcpts, leaked, numbers)


# --- the lists -----------------------------------------------------------------------------


def build_sqlite_list(path: Path, entries: int) -> None:
    """smtpguard's list: N `EntryRow`s straight into a store (no CSV), cached at `path`."""
    if path.exists():
        return
    sample = f"{OFFSET}{RCPT_BASE}"
    assert address_key(sample) == sample, "the generated keys must be canonical"
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    async def fill() -> None:
        store = await open_store(tmp, MatchRules())
        try:
            rows = (
                EntryRow(f"{n}{RCPT_BASE}", "address", f"{n}{RCPT_BASE}", "bench", "unsubscribed", ADDED, None)
                for n in listed_numbers(entries)
            )
            result = await store.add_entries(rows)
            assert result.added == entries, result
        finally:
            await store.close()  # checkpoints the WAL into the file

    t = time.perf_counter()
    asyncio.run(fill())
    tmp.rename(path)
    print(f"built smtpguard list {path} ({entries:,} entries) in {time.perf_counter() - t:.1f} s", flush=True)


def build_postfix_table(table: Path, entries: int, etc: Path) -> None:
    """Postfix's list: `ADDRESS REJECT text` lines, `postmap hash:`, cached next to the SQLite one."""
    db = Path(f"{table}.db")
    if db.exists():
        return
    t = time.perf_counter()
    with table.open("w") as fh:
        chunk: list[str] = []
        for n in listed_numbers(entries):
            chunk.append(f"{n}{RCPT_BASE} REJECT 5.7.1 suppressed\n")
            if len(chunk) == 100_000:
                fh.write("".join(chunk))
                chunk.clear()
        fh.write("".join(chunk))
    tmp_db = Path(f"{table}.db.building")
    db.unlink(missing_ok=True)
    subprocess.run(
        [POSTMAP, "-c", str(etc), f"hash:{table}"],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
    )
    db.rename(tmp_db)  # only a finished postmap counts as cached
    tmp_db.rename(db)
    print(f"built Postfix table {db} ({entries:,} entries) in {time.perf_counter() - t:.1f} s", flush=True)


# --- the targets ---------------------------------------------------------------------------


class BenchPostfix(PrivatePostfix):
    """The interop suite's private Postfix to the shared sink, our table: a before-queue
    proxy, or (`proxy=False`) plain store-and-forward with Postfix's defaults."""

    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(self, root: Path, sink_port: int, table: Path, *, proxy: bool = True) -> None:
        super().__init__(root)
        self.sink_port = sink_port
        self.table = table
        self.proxy = proxy

    def main_cf(self) -> str:
        lines = [
            *self.base_cf(hostname="postfix.bench.test", domain="bench.test", relay_port=self.sink_port),
            f"smtpd_recipient_restrictions = check_recipient_access hash:{self.table}, permit_mynetworks, reject",
        ]
        if self.proxy:  # before-queue: each accepted message goes to the sink during the client's session
            lines.append(f"smtpd_proxy_filter = {LOOPBACK}:{self.sink_port}")
        return "\n".join(lines) + "\n"

    def queue_empty(self) -> bool:
        """No message waiting in any of Postfix's queues (store-and-forward: all delivered or bounced)."""
        return not any(p.is_file() for q in self.QUEUES for p in (self.queue / q).rglob("*"))

    def prepare(self) -> None:
        self.etc.mkdir()
        self.queue.mkdir()
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, user="postfix")
        self.port = free_port()
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(self.master_cf())

    def launch(self) -> None:
        self._run(POSTFIX, "-c", str(self.etc), "check")
        self._run(POSTFIX, "-c", str(self.etc), "start")
        self.started = True
        wait_port(self.port, self._running, "Postfix")

    def _running(self) -> bool:
        pid = self._master_pid()
        return pid is None or _alive(pid)  # no pid file yet: still starting

    def master_pid(self) -> int | None:
        return self._master_pid()


@dataclass
class Target:
    name: str
    port: int
    server_cpu: Callable[[], float]  # CPU seconds so far of the server under test (0 for direct)
    filtered: bool  # applies the list
    drained: Callable[[], bool] | None = None  # a queueing server: True once it delivered everything


@dataclass(frozen=True)
class Run:
    seconds: float
    received: Received
    server_cpu: float
    sink_cpu: float
    client_cpu: float
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.received.messages / self.seconds if self.seconds > 0 else 0.0


def smtp_source(args: argparse.Namespace, port: int, messages: int, log: Path) -> tuple[float, float, int]:
    """Run the load; (wall seconds, client CPU seconds, exit status)."""
    tool = which("smtp-source")
    assert tool is not None
    argv = [
        tool,
        "-A",
        "-N",
        "-c",
        *(["-d"] if getattr(args, "reuse", False) else []),  # -d: next message on the same connection
        "-s",
        str(args.sessions),
        "-m",
        str(messages),
        "-r",
        str(args.recipients),
        "-l",
        str(args.size),
        "-f",
        SENDER,
        "-t",
        RCPT_BASE,
        f"{LOOPBACK}:{port}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=60 + messages * 0.05)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return seconds, cpu, rc


def measure(args: argparse.Namespace, target: Target, sink: Sink, messages: int, work: Path) -> Run:
    sink.collect(args.entries, "stale")  # nothing should be there; start from an empty dump
    server0, sink0 = target.server_cpu(), sink.cpu()
    started = time.time()  # epoch, to compare with the dump's mtime
    seconds, client_cpu, rc = smtp_source(args, target.port, messages, work / f"source-{target.name}.log")
    if target.drained is not None:  # delivered msg/s: the clock stops at the last delivery
        wait_drained(target.drained, 60 + messages * 0.05)
        seconds = max(seconds, sink.settle() - started)
    server_cpu, sink_cpu = target.server_cpu() - server0, sink.cpu() - sink0
    got = sink.collect(args.entries, target.name)
    total = messages * args.recipients
    suppressed = sum(1 for n in range(1, total + 1) if is_suppressed(n, args.entries)) if target.filtered else 0
    problems: list[str] = []
    if rc != 0:
        problems.append(f"smtp-source exited {rc} (see {work}/source-{target.name}.log)")
    if target.filtered and got.leaked:
        problems.append(f"{len(got.leaked)} suppressed recipients reached the sink, e.g. {got.leaked[:3]}")
    missing = [
        n
        for n in range(1, total + 1)
        if n not in got.numbers and not (target.filtered and is_suppressed(n, args.entries))
    ]
    if missing:
        problems.append(f"{len(missing)} deliverable recipients never reached the sink, e.g. {missing[:5]}")
    if got.rcpts != total - suppressed:
        problems.append(f"sink got {got.rcpts} recipients, expected {total - suppressed}")
    # Every message keeps a deliverable recipient; fewer at the sink means two were merged or one lost.
    r = args.recipients
    deliverable = sum(
        1
        for i in range(messages)
        if not target.filtered or not all(is_suppressed(n, args.entries) for n in range(i * r + 1, i * r + r + 1))
    )
    if got.messages != deliverable:
        problems.append(f"sink got {got.messages} messages, expected {deliverable}")
    return Run(seconds, got, server_cpu, sink_cpu, client_cpu, problems)


def wait_drained(drained: Callable[[], bool], timeout: float) -> None:
    """Until a queueing server has nothing left to deliver (or `timeout`: the checks then say what is missing)."""
    deadline = time.monotonic() + timeout
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.02)


def sink_and_list_config(sink_port: int, db: Path) -> str:
    """The config's tail both benches share: the next hop's keys (the sink, no TLS), reject mode, the list."""
    return (
        f'host = "{LOOPBACK}"\n'
        f"port = {sink_port}\n"
        'security = "none"\n'
        "\n[policy]\n"
        'mode = "reject"\n'
        "\n[store]\n"
        f'path = "{db}"\n'
    )


def write_config(path: Path, port: int, sink_port: int, db: Path, server: str = "") -> None:
    path.write_text(
        "[server]\n"
        f'listen = "{LOOPBACK}:{port}"\n'
        'auth = "none"\n'
        'trusted_networks = ["127.0.0.0/8"]\n' + server + "\n[upstream]\n" + sink_and_list_config(sink_port, db)
    )


def server_keys(args: argparse.Namespace) -> str:
    """The [server] lines --workers and --event-loop ask for."""
    return f'workers = {args.workers}\nevent_loop = "{args.event_loop}"\n'


def report(targets: list[Target], runs: dict[str, list[Run]], args: argparse.Namespace) -> None:
    total = args.messages * args.recipients
    suppressed = sum(1 for n in range(1, total + 1) if is_suppressed(n, args.entries))
    connections = "connections reused (-d)" if getattr(args, "reuse", False) else "a new connection per message"
    print()
    print(
        f"load: {args.messages:,} messages x {args.recipients} recipients, {args.size:,} bytes, "
        f"{args.sessions} sessions, {connections}; list {args.entries:,} entries, "
        f"{suppressed:,} of {total:,} recipients ({100 * suppressed / total:.1f}%) suppressed"
    )
    print(
        f"{'':<22} {'msg/s':>8} {'wall s':>7} {'msgs':>6} {'rcpts':>7} {'leaked':>6}"
        f"  CPU ms/msg: {'server':>7} {'sink':>6} {'client':>6}"
    )
    best: dict[str, Run] = {}
    for t in targets:
        for i, r in enumerate(runs[t.name]):
            msgs = max(r.received.messages, 1)
            label = t.name if len(runs[t.name]) == 1 else f"{t.name} #{i + 1}"
            server = f"{1000 * r.server_cpu / msgs:>7.3f}" if t.server_cpu is not zero_cpu else f"{'-':>7}"
            leaked = f"{len(r.received.leaked):>6}" if t.filtered else f"{'-':>6}"
            print(
                f"{label:<22} {r.rate:>8,.0f} {r.seconds:>7.2f} {r.received.messages:>6,} "
                f"{r.received.rcpts:>7,} {leaked}              {server} "
                f"{1000 * r.sink_cpu / msgs:>6.3f} {1000 * r.client_cpu / msgs:>6.3f}"
            )
        best[t.name] = max(runs[t.name], key=lambda r: r.rate)
    print("ratios (best): " + ratios(best))
    chosen = best
    if args.repeat > 1:
        chosen = {name: sorted(rs, key=lambda r: r.rate)[len(rs) // 2] for name, rs in runs.items()}
        print("ratios (median): " + ratios(chosen))
    for line in target_lines(chosen):
        print(line)


LABELS = {
    "postfix-queue": "Postfix store-and-forward",
    "smtpguard": "smtpguard",
    "postfix": "Postfix before-queue proxy",
}


def whole_cpu_ms(r: Run) -> float:
    """CPU ms per delivered message of the whole path: server + sink + client."""
    return 1000 * (r.server_cpu + r.sink_cpu + r.client_cpu) / max(r.received.messages, 1)


def target_lines(runs: dict[str, Run]) -> list[str]:
    """Issue 15's table and its targets, each figure beside its target (medians with --repeat > 1)."""
    sg, proxy, queue = runs.get("smtpguard"), runs.get("postfix"), runs.get("postfix-queue")
    lines = [
        f"issue 15 (load average {os.getloadavg()[0]:.2f} now):",
        "| target | msg/s | CPU per message (server + sink + client) | server CPU per message |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in LABELS.items():
        r = runs.get(name)
        if r is not None:
            server = 1000 * r.server_cpu / max(r.received.messages, 1)
            lines.append(f"| {label} | {r.rate:,.0f} | {whole_cpu_ms(r):.2f} ms | {server:.2f} ms |")
    if sg is None or proxy is None:
        return [*lines, "targets: need the Postfix baseline (run as root, without --no-postfix)"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    ratio = sg.rate / proxy.rate
    cpu, proxy_cpu = whole_cpu_ms(sg), whole_cpu_ms(proxy)
    lines += [
        "targets:",
        f"  msg/s >= 1.0x Postfix proxy:            {ratio:.2f}x  {verdict(ratio >= 1.0)}",
        f"  msg/s >= 1.5x Postfix proxy (stretch):  {ratio:.2f}x  {verdict(ratio >= 1.5)}",
    ]
    if queue is not None:
        sf = sg.rate / queue.rate
        lines.append(f"  msg/s >= 2x Postfix store-and-forward:  {sf:.2f}x  {verdict(sf >= 2.0)}")
    else:
        lines.append("  msg/s >= 2x Postfix store-and-forward:  not measured")
    lines.append(
        f"  CPU per message <= Postfix proxy's:     {cpu:.2f} vs {proxy_cpu:.2f} ms  {verdict(cpu <= proxy_cpu)}"
    )
    return lines


def ratios(runs: dict[str, Run]) -> str:
    sg = runs.get("smtpguard")
    direct = runs.get("direct")
    postfix = runs.get("postfix")
    parts = []
    if sg and direct:
        parts.append(f"smtpguard/direct {sg.rate / direct.rate:.3f}")
    if sg and postfix:
        parts.append(f"smtpguard/postfix {sg.rate / postfix.rate:.3f}")
    if postfix and direct:
        parts.append(f"postfix/direct {postfix.rate / direct.rate:.3f}")
    queue = runs.get("postfix-queue")
    if sg and queue:
        parts.append(f"smtpguard/postfix-queue {sg.rate / queue.rate:.3f}")
    if sg and postfix and postfix.server_cpu > 0:
        per_msg = [r.server_cpu / max(r.received.messages, 1) for r in (sg, postfix)]
        parts.append(f"server CPU/message smtpguard/postfix {per_msg[0] / per_msg[1]:.2f}")
    return ", ".join(parts)


def zero_cpu() -> float:
    return 0.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through the finally blocks, which stop everything started


def parse_args(description: str | None) -> argparse.Namespace:
    """The options relay_bench and gateway_bench share."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--recipients", type=int, default=5, help="recipients per message")
    ap.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions of smtp-source")
    ap.add_argument("--size", type=int, default=4096, help="message payload, bytes")
    ap.add_argument("--entries", type=int, default=1_000_000, help="suppression list size")
    ap.add_argument("--dir", type=Path, help="keep the built lists here (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each target; the best msg/s counts")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix baseline")
    ap.add_argument("--workers", type=int, default=1, help="smtpguard's [server] workers")
    ap.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"], help="[server] event_loop")
    return ap.parse_args()


def start_postfix(
    work: Path, cache: Path, sink: Sink, entries: int, *, proxy: bool = True
) -> tuple[BenchPostfix, Target]:
    """A private Postfix over an N-entry access table (before-queue proxy, or store-and-forward), launched."""
    name = "postfix" if proxy else "postfix-queue"
    postfix = BenchPostfix(work / name, sink.port, cache / f"postfix-access-{entries}", proxy=proxy)
    postfix.root.mkdir()
    postfix.root.chmod(0o755)
    postfix.prepare()
    build_postfix_table(postfix.table, entries, postfix.etc)
    postfix.launch()

    def postfix_cpu() -> float:
        pid = postfix.master_pid()
        return tree_cpu(pid) if pid else 0.0

    drained = None if proxy else postfix.queue_empty
    return postfix, Target(name, postfix.port, postfix_cpu, filtered=True, drained=drained)


def start_smtpguard(cfg: Path, port: int, work: Path) -> tuple[subprocess.Popen[bytes], Target]:
    """`smtpguard serve --config cfg`, logging to work/smtpguard.log, once it listens on port; its target."""
    with (work / "smtpguard.log").open("ab") as log:
        proc = subprocess.Popen(
            [*smtpguard_command(), "serve", "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_port(port, lambda: proc.poll() is None, "smtpguard serve")
    return proc, Target("smtpguard", port, lambda: tree_cpu(proc.pid), filtered=True)  # with its workers


def run_all(
    args: argparse.Namespace, targets: list[Target], sink: Sink, work: Path
) -> tuple[dict[str, list[Run]], bool]:
    """Warm up, then --repeat alternating runs; the runs, and True when every check held."""
    ok = True
    # Warm-up: page cache, Postfix's smtpd processes, Python's lazy imports.
    for t in targets:
        r = measure(args, t, sink, min(200, args.messages), work)
        print(f"warm-up {t.name}: {r.rate:,.0f} msg/s", flush=True)
    runs: dict[str, list[Run]] = {t.name: [] for t in targets}
    for i in range(args.repeat):
        for t in targets:  # alternate, so that a busy moment hits every target
            r = measure(args, t, sink, args.messages, work)
            runs[t.name].append(r)
            print(f"run {i + 1}/{args.repeat} {t.name}: {r.rate:,.0f} msg/s", flush=True)
            for p in r.problems:
                ok = False
                print(f"FAIL {t.name}: {p}", flush=True)
    return runs, ok


def missing_tools() -> bool:
    """True (after saying what to install) when smtp-source or smtp-sink is missing."""
    missing = [t for t in ("smtp-source", "smtp-sink") if which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)}: run `bash scripts/install-interop.sh`", file=sys.stderr)
    return bool(missing)


def postfix_skip_reason(args: argparse.Namespace) -> str | None:
    """Why the Postfix baseline cannot run here, or None when it can."""
    if args.no_postfix:
        return "--no-postfix"
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    if which("postfix") is None or which("postmap") is None:
        return "postfix/postmap not installed (bash scripts/install-interop.sh)"
    return None


def start_baselines(
    args: argparse.Namespace, cache: Path, work: Path, sink: Sink
) -> tuple[BenchPostfix | None, list[Target], Path]:
    """Build (or reuse) the N-entry list and start the sink and, where it can run, the Postfix baseline.

    Returns the Postfix started (or None), the targets so far, and smtpguard's own copy of the list.
    """
    sg_list = cache / f"smtpguard-list-{args.entries}.db"
    build_sqlite_list(sg_list, args.entries)
    db = work / "smtpguard.db"
    shutil.copyfile(sg_list, db)  # the audit log grows in the copy, not in the cache
    sink.start()
    targets = [Target("direct", sink.port, zero_cpu, filtered=False)]
    skip = postfix_skip_reason(args)
    if skip is not None:
        print(f"Postfix baseline skipped: {skip}", flush=True)
        return None, targets, db
    postfix, target = start_postfix(work, cache, sink, args.entries)
    return postfix, [*targets, target], db


def stop_all(
    relay: subprocess.Popen[bytes] | None, postfix: BenchPostfix | None, sink: Sink, work: Path, ok: bool
) -> None:
    """Stop whatever was started; keep the work folder (the logs) only when something failed."""
    if relay is not None:
        stop_process(relay)
    if postfix is not None:
        with contextlib.suppress(Exception):
            postfix.stop()
    sink.stop()
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}", file=sys.stderr)


def main() -> int:
    args = parse_args(__doc__)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)

    if missing_tools():
        return 2

    cache = args.dir or Path(tempfile.mkdtemp(prefix="smtpguard-relay-bench-"))
    cache.mkdir(parents=True, exist_ok=True)
    cache = cache.resolve()
    # Short and private: Postfix's unix sockets live in its queue dir (~108-byte paths).
    work = Path(tempfile.mkdtemp(prefix="sgrb-", dir="/tmp"))
    work.chmod(0o755)  # Postfix daemons run as `postfix` and must reach the queue
    shm = Path("/dev/shm")
    sink = Sink(Path(tempfile.mkdtemp(prefix="sgrb-sink-", dir=shm if shm.is_dir() else work)))
    postfix: BenchPostfix | None = None
    queueing: BenchPostfix | None = None  # store-and-forward, beside the before-queue `postfix`
    relay: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        postfix, targets, db = start_baselines(args, cache, work, sink)
        if postfix is not None:
            queueing, target = start_postfix(work, cache, sink, args.entries, proxy=False)
            targets.insert(1, target)
        cfg = work / "smtpguard.toml"
        port = free_port()
        write_config(cfg, port, sink.port, db, server_keys(args))
        relay, target = start_smtpguard(cfg, port, work)
        targets.append(target)
        runs, ok = run_all(args, targets, sink, work)
        failed = not ok
        if relay.poll() is not None:
            failed = True
            print(f"FAIL smtpguard exited {relay.returncode} during the run (see {work}/smtpguard.log)")
        report(targets, runs, args)
        if not failed:
            print("correctness: no suppressed recipient reached the sink; every other recipient did")
    finally:
        if queueing is not None:
            with contextlib.suppress(Exception):
                queueing.stop()
        stop_all(relay, postfix, sink, work, ok=not failed)
        shutil.rmtree(sink.folder, ignore_errors=True)
        if args.dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
