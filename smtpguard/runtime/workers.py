"""`[server] workers = N`: one supervisor process and N relay processes (docs/performance.md).

The supervisor binds every listener (relay, implicit TLS, gateway) before it
forks, with the privileges `serve` was started with, then forks the workers;
each runs the ordinary asyncio relay (server.serve_forever) on its own
sockets, its own store connection and its own batched audit writer (SQLite
WAL: the writers take turns inside SQLite's busy timeout). Worker 1 alone
runs the one-place jobs (watched folder, audit retention, HTTP side, sync
pulls): they need a relay context and an event loop, which the supervisor
deliberately has not. The supervisor stays single-threaded and loop-free so
that forking a replacement worker is always safe; it speaks to systemd for
all (READY, RELOADING, STOPPING, WATCHDOG: NotifyAccess=main), forwards
SIGHUP and SIGTERM, and restarts a worker that dies, with a growing delay.

Listening sockets: one per worker per listener, with SO_REUSEPORT: the
kernel spreads new connections by hash (49-51% per worker over 6,000
connections) whenever they arrive. One shared socket was measured too
(docs/performance.md): ~13% faster on a busy machine, but a burst of
connections opened together (12 TLS sessions in a test, an MTA's reused
sessions) went to the worker that woke first, since an event loop accepts
every pending connection at once. While a worker restarts, its socket
stays open in the supervisor: its share of new connections waits in the
backlog for the replacement instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from smtpguard import config
from smtpguard.config import ConfigError, Endpoint, Settings
from smtpguard.runtime.systemd import monotonic_usec, notify, watchdog_interval

log = logging.getLogger("smtpguard.workers")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
START_FAILURES = 5  # consecutive deaths before READY: the supervisor gives up (exit 1)
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0  # seconds before a restart: x4 per death within BACKOFF_WINDOW
BACKOFF_WINDOW = 60.0
SILENT_LIMIT = 30.0  # a ready worker silent this long (no heartbeat) is killed and restarted
STOP_GRACE = 45.0  # seconds after SIGTERM before stragglers are killed (server.STOP_DEADLINE + goodbyes)

Listeners = dict[Endpoint, tuple[socket.socket, ...]]


def listener_endpoints(s: Settings) -> list[Endpoint]:
    """Every endpoint the relay listens on, as configured (port 0 included)."""
    ends = [s.server.listen] + ([s.server.smtps_listen] if s.server.smtps_listen else []) + list(s.gateway.listen)
    return list(dict.fromkeys(ends))


def _listening(family: int, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one socket per worker on one address
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
        sock.bind(address)
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(settings: Settings, count: int) -> list[Listeners]:
    """Per worker, its listening sockets (one per resolved address of each endpoint); ConfigError if one fails."""
    per_worker: list[Listeners] = [{} for _ in range(count)]
    try:
        for endpoint in listener_endpoints(settings):
            section = "server" if endpoint in (settings.server.listen, settings.server.smtps_listen) else "gateway"
            try:
                infos = socket.getaddrinfo(
                    endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
                for family, _, _, _, address in dict.fromkeys((i[0], 0, 0, "", i[4]) for i in infos):
                    first = _listening(family, address)
                    per_worker[0][endpoint] = per_worker[0].get(endpoint, ()) + (first,)
                    port = first.getsockname()[1]  # port 0: the others join the port the first one got
                    for sockets in per_worker[1:]:
                        other = _listening(family, (address[0], port, *address[2:]))
                        sockets[endpoint] = sockets.get(endpoint, ()) + (other,)
            except OSError as exc:
                raise ConfigError(f"[{section}] cannot listen on {endpoint}: {exc.strerror or exc}") from None
    except BaseException:
        close_all(per_worker)
        raise
    return per_worker


def close_all(listeners: list[Listeners]) -> None:
    for sockets in listeners:
        for socks in sockets.values():
            for sock in socks:
                sock.close()


@dataclass
class Worker:
    index: int
    pid: int = 0
    status: int = -1  # read end of its status pipe
    ready: bool = False
    reloading: bool = False
    failures: int = 0  # deaths before READY, in a row
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    heard: float = 0.0  # last message (a heartbeat at least every server.HEARTBEAT seconds)
    pending: bytes = b""


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        listeners: list[Listeners],
        config_path: Path | None,
        db: Path | None,
        metrics_dir: Path | None = None,
    ):
        self.settings = settings
        self.listeners = listeners
        self.config_path, self.db = config_path, db
        self.metrics_dir = metrics_dir  # where the workers' counters meet for worker 1's /metrics
        self.workers = [Worker(i + 1) for i in range(len(listeners))]
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.up = False  # every worker has been ready once
        self.stopping: float | None = None
        self.code: int | None = None  # set when the supervisor decides to exit with it
        self.status = ""

    # --- the loop ---------------------------------------------------------

    def run(self) -> int:
        for sig in SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wake-up pipe carries the number to the loop
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        interval = watchdog_interval()
        next_beat = time.monotonic()
        log.info("starting %d workers (pid %d supervises)", len(self.workers), os.getpid())
        self._spawn(self.workers[0])  # alone first: it may migrate or re-key the list
        while any(w.pid for w in self.workers) or (self.code is None and self.stopping is None):
            now = time.monotonic()
            self._check_silent(now)
            if interval and now >= next_beat:
                notify("WATCHDOG=1")
                next_beat = now + interval
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            timeout = min([1.0, *(d - now for d in due), *([next_beat - now] if interval else [])])
            for key, _ in self.selector.select(max(0.0, timeout)):
                if key.fd == self.wake_r:
                    self._signals()
                else:
                    self._heard(key.data)
            self._restart_due()
            self._kill_stragglers()
        self.selector.close()
        return self.code if self.code is not None else 0

    def _signals(self) -> None:
        try:
            numbers = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        for number in numbers:
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop(0)
            elif number == signal.SIGHUP:
                self._reload()
        self._reap()  # SIGCHLD, or any: cheap

    # --- workers ----------------------------------------------------------

    def _spawn(self, w: Worker) -> None:
        if w.status >= 0:  # the previous one's pipe, not read to its end
            self.selector.unregister(w.status)
            os.close(w.status)
            w.status = -1
        r, wr = os.pipe2(os.O_CLOEXEC)
        settings = self.settings
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 70
            try:
                os.close(r)
                code = _worker(
                    w.index,
                    settings,
                    self.listeners,
                    wr,
                    self.config_path,
                    self.db,
                    self._inherited(),
                    self.metrics_dir,
                )
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(wr)
        log.info("worker %d started (pid %d)", w.index, pid)
        w.pid, w.status, w.ready, w.reloading, w.restart_at, w.heard, w.pending = pid, r, False, False, None, 0, b""
        self.selector.register(r, selectors.EVENT_READ, w)

    def _inherited(self) -> list[int]:
        """The supervisor's own descriptors, closed in a new worker."""
        return [self.wake_r, self.wake_w, *(w.status for w in self.workers if w.status >= 0)]

    def _heard(self, w: Worker) -> None:
        try:
            data = os.read(w.status, 4096)
        except OSError:
            data = b""
        if not data:  # the worker's end closed: it exited (SIGCHLD reaps it)
            self.selector.unregister(w.status)
            os.close(w.status)
            w.status = -1
            return
        w.heard = time.monotonic()
        *messages, w.pending = (w.pending + data).split(b"\0")
        for message in messages:
            if b"READY=1" in message.split(b"\n"):
                self._ready(w, message.decode(errors="replace"))

    def _ready(self, w: Worker, message: str) -> None:
        first = not w.ready
        w.ready, w.reloading, w.failures = True, False, 0
        status = next((line for line in message.split("\n") if line.startswith("STATUS=")), "")
        if not self.up and first and w.index == 1:
            self.status = status
            for other in self.workers[1:]:
                if not other.pid and other.restart_at is None:
                    self._spawn(other)
        if all(x.ready and not x.reloading for x in self.workers) and self.stopping is None:
            if not self.up or status:
                self.status = status or self.status
            self.up = True
            notify("READY=1", f"{self.status} ({len(self.workers)} workers)")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = next((x for x in self.workers if x.pid == pid), None)
            if w is not None:
                self._exited(w, os.waitstatus_to_exitcode(status))

    def _exited(self, w: Worker, code: int) -> None:
        pid, was_ready, w.pid, w.ready = w.pid, w.ready, 0, False
        if self.stopping is not None:
            if code not in (0, -signal.SIGTERM):  # -SIGTERM: stopped before its handler was in place
                log.error("worker %d stopped with exit code %d", w.index, code)
                self.code = self.code or 1
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if not was_ready:
            w.failures += 1
            if code == 2 and not self.up:  # it printed why (configuration, store): a restart would not help
                self._stop(2)
                return
            if w.failures >= START_FAILURES:
                log.error("worker %d %s before it was ready, %d times in a row: giving up", w.index, how, w.failures)
                self._stop(1)
                return
        now = time.monotonic()
        w.deaths.append(now)
        while w.deaths and w.deaths[0] < now - BACKOFF_WINDOW:
            w.deaths.popleft()
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 4 ** (len(w.deaths) - 1))
        log.error("worker %d (pid %d) %s; restarting it in %.1f s", w.index, pid, how, delay)
        w.restart_at = now + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.restart_at is not None and w.restart_at <= now and self.stopping is None:
                self._spawn(w)

    # --- signals: reload, stop, watchdog ------------------------------------

    def _reload(self) -> None:
        if self.stopping is not None:
            return
        notify("RELOADING=1", monotonic_usec())
        try:  # restarted workers start from the newest good configuration, on the sockets bound at start
            from smtpguard.runtime.server import pinned_listeners

            self.settings = pinned_listeners(config.load(self.config_path, self.db), self.settings)
        except ConfigError:
            pass  # each worker logs why and keeps its configuration
        for w in self.workers:
            if w.pid and w.ready:
                w.reloading = True
                _send_signal(w.pid, signal.SIGHUP)
        if not any(w.reloading for w in self.workers):
            notify("READY=1", self.status)

    def _stop(self, code: int) -> None:
        if self.stopping is not None:
            return
        self.stopping = time.monotonic()
        self.code = code if self.code is None else self.code
        notify("STOPPING=1")
        close_all(self.listeners)  # new connections are refused at once, as with one process
        for w in self.workers:
            w.restart_at = None
            if w.pid:
                _send_signal(w.pid, signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        if self.stopping is not None and time.monotonic() > self.stopping + STOP_GRACE:
            for w in self.workers:
                if w.pid:
                    log.error("worker %d did not stop in %.0f s: killing it", w.index, STOP_GRACE)
                    _send_signal(w.pid, signal.SIGKILL)
            self.stopping = time.monotonic()  # and wait for the kernel to reap them

    def _check_silent(self, now: float) -> None:
        """A worker whose loop stopped turning (no heartbeat) is killed, hence restarted."""
        for w in self.workers:
            if w.pid and w.ready and self.stopping is None and now - w.heard > SILENT_LIMIT:
                log.error("worker %d silent for %.0f s: killing it (it will be restarted)", w.index, now - w.heard)
                w.heard = now  # once: the reaper takes it from here
                _send_signal(w.pid, signal.SIGKILL)


def _send_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class _WorkerTag(logging.Filter):
    """`worker=N` on every log line of worker N (a JSON key, or the start of the text)."""

    def __init__(self, index: int, as_key: bool) -> None:
        super().__init__()
        self.index, self.as_key = index, as_key

    def filter(self, record: logging.LogRecord) -> bool:
        if self.as_key:
            record.worker = self.index
        elif not getattr(record, "worker_tagged", False):
            record.msg, record.worker_tagged = f"worker={self.index} {record.msg}", True
        return True


def _tag_logs(index: int) -> None:
    from smtpguard.runtime.logs import JournalFormatter, JsonFormatter

    for handler in logging.getLogger().handlers:
        fmt = handler.formatter
        inner = fmt.inner if isinstance(fmt, JournalFormatter) else fmt
        handler.addFilter(_WorkerTag(index, isinstance(inner, JsonFormatter)))


def _worker(
    index: int,
    settings: Settings,
    listeners: list[Listeners],
    status: int,
    config_path: Path | None,
    db: Path | None,
    inherited: list[int],
    metrics_dir: Path | None = None,
) -> int:
    """A forked worker: its sockets only, default signals, then the relay until SIGTERM."""
    signal.set_wakeup_fd(-1)
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler: a reload must not kill it
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    close_all([s for i, s in enumerate(listeners) if i != index - 1])  # the others' sockets: never ours
    from smtpguard.runtime.loops import run_with
    from smtpguard.runtime.server import Role, serve_forever
    from smtpguard.smtp.session import number_sessions
    from smtpguard.suppression.store import StoreError

    number_sessions(index, len(listeners))
    _tag_logs(index)

    def tell(*lines: str) -> None:
        # Well under PIPE_BUF: one write, whole. The supervisor gone: nobody to tell.
        with contextlib.suppress(OSError):
            os.write(status, "\n".join(lines).encode() + b"\0")

    role = Role(index, listeners[index - 1], tell, metrics_dir)
    try:
        return run_with(
            settings.server.event_loop, lambda: serve_forever(settings, config_path=config_path, db=db, role=role)
        )
    except (ConfigError, StoreError) as exc:
        print(f"smtpguard: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("worker %d failed", index)
        return 70


def serve_workers(settings: Settings, *, config_path: Path | None = None, db: Path | None = None) -> int:
    """`smtpguard serve` with [server] workers > 1: check, bind, fork, supervise; the exit code."""
    from smtpguard.runtime.preflight import problems
    from smtpguard.runtime.safety import relay_problems

    refused = relay_problems(settings) or problems(settings)
    if refused:
        raise ConfigError("refusing to start: " + "; ".join(refused))
    listeners = bind_listeners(settings, settings.server.workers)
    metrics_dir = Path(tempfile.mkdtemp(prefix="smtpguard-metrics-"))  # 0700, this user's only
    try:
        return Supervisor(settings, listeners, config_path, db, metrics_dir).run()
    finally:
        close_all(listeners)
        shutil.rmtree(metrics_dir, ignore_errors=True)
