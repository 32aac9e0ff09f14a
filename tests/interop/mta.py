"""Real mail software on loopback for the interop tests: a private Postfix, smtp-sink, swaks.

Layout of one test bed (a short folder under /tmp: Postfix's unix sockets live
in the queue directory and socket paths are limited to ~108 bytes)::

    DIR/etc/       main.cf, master.cf, lookup tables, TLS certificate
    DIR/queue/     queue_directory (root), created by `postfix check`
    DIR/data/      data_directory (postfix, 0700)
    DIR/maillog    Postfix's log, through postlogd (no syslog needed)
    DIR/sink/      one file per transaction smtp-sink accepted (owned by nobody)

Postfix listens on 127.0.0.1:<free port> only, delivers nothing locally and
relays everything to smtp-sink on 127.0.0.1:<another free port>.  The tests
read the sink's dump files to see what was really delivered (envelope and
content), and the maillog to know when Postfix is done with a queue id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"
POSTQUEUE = "/usr/sbin/postqueue"
SMTP_SINK = "/usr/sbin/smtp-sink"
START_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 15.0

# The sink's own lines at the top of each dump file (smtp-sink(1), "-d").
_SINK_HEADERS = (b"X-Client-Addr:", b"X-Client-Proto:", b"X-Helo-Args:", b"X-Mail-Args:", b"X-Rcpt-Args:")
_ANGLE = re.compile(rb"<([^>]*)>")


def missing_tools() -> str | None:
    """Why the interop suite cannot run here, or None when it can."""
    missing = [t for t in ("swaks", "postfix", "postmap", "postqueue", "smtp-sink") if not _which(t)]
    if missing:
        return f"needs {', '.join(missing)}: run `bash scripts/install-interop.sh` (Debian, as root)"
    if os.geteuid() != 0:
        return "a private Postfix instance (postfix -c DIR start) must be started as root"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/lib/postfix/sbin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _alive(pid: int) -> bool:
    """True while pid runs; a zombie (nobody reaps daemons on some CI init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True)
class Delivery:
    """One transaction smtp-sink accepted from Postfix."""

    path: Path
    mail_from: str
    rcpts: tuple[str, ...]
    message: bytes  # as the sink received it, Postfix's Received header included

    @classmethod
    def parse(cls, path: Path) -> Delivery:
        raw = path.read_bytes()
        mail_from = ""
        rcpts: list[str] = []
        lines = raw.split(b"\n")
        i = 0
        while i < len(lines) and lines[i].startswith(_SINK_HEADERS):
            line = lines[i]
            m = _ANGLE.search(line)
            value = m.group(1).decode("utf-8", "replace") if m else ""
            if line.startswith(b"X-Mail-Args:"):
                mail_from = value
            elif line.startswith(b"X-Rcpt-Args:"):
                rcpts.append(value)
            i += 1
        return cls(path, mail_from, tuple(rcpts), b"\n".join(lines[i:]))

    @property
    def text(self) -> str:
        return self.message.decode("utf-8", "replace")

    def header(self, name: str) -> list[str]:
        """Values of a header of the delivered message (unfolded, last Received first as stored)."""
        head = self.text.replace("\r\n", "\n").split("\n\n", 1)[0]
        unfolded = re.sub(r"\n[ \t]+", " ", head)
        prefix = name.lower() + ":"
        return [line[len(prefix) :].strip() for line in unfolded.split("\n") if line.lower().startswith(prefix)]


class SmtpSink:
    """`smtp-sink -d`: accepts everything on 127.0.0.1:port, one dump file per transaction."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder.parent / "sink.log"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, user="nobody")
        for _ in range(5):
            self.port = free_port()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    # -u: required as root, the sink drops to nobody after binding.
                    [
                        _which("smtp-sink") or SMTP_SINK,
                        "-u",
                        "nobody",
                        "-d",
                        f"{self.folder}/%Y%m%d%H%M%S.",
                        f"{LOOPBACK}:{self.port}",
                        "64",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if port_open(self.port):
                    return
                time.sleep(0.05)
            self.stop()  # port taken in between, or the sink died: try another port
        raise RuntimeError(f"smtp-sink did not start; its output:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def files(self) -> set[Path]:
        return {p for p in self.folder.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class Mark:
    """A point in time of the test bed: what came after it belongs to one test."""

    log_offset: int
    sink_files: frozenset[Path]


class PrivatePostfix:
    """A Postfix instance of its own (`postfix -c DIR`), on loopback, relaying to smtp-sink."""

    def __init__(self, root: Path, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
        self.root = root
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.data = root / "data"
        self.maillog = root / "maillog"
        self.sink = SmtpSink(root / "sink")
        self.port = 0
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.started = False

    # -- set-up ------------------------------------------------------------------

    @classmethod
    def create(cls, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> PrivatePostfix:
        root = Path(tempfile.mkdtemp(prefix="sgpf-", dir="/tmp"))
        root.chmod(0o755)  # Postfix daemons run as `postfix` and must reach the queue
        return cls(root, tls_cert=tls_cert, tls_key=tls_key)

    def base_cf(self, *, hostname: str, domain: str, relay_port: int) -> list[str]:
        """The main.cf lines every private instance shares: loopback, no local delivery, no DNS."""
        return [
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.data}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"myhostname = {hostname}",
            f"mydomain = {domain}",
            f"myorigin = {domain}",
            # Loopback only, IPv4 only; the smtpd listener itself is bound in master.cf.
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_peername_lookup = no",
            # No local delivery at all.
            "mydestination =",
            "local_recipient_maps =",
            "local_transport = error:local delivery is disabled",
            "alias_maps =",
            "alias_database =",
            # Everything goes on to the next hop, at once, without DNS.
            f"relayhost = [{LOOPBACK}]:{relay_port}",
            "smtp_dns_support_level = disabled",
            "smtp_tls_security_level = none",
            # A log file without syslog (postlogd in master.cf).
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.root}",
        ]

    def main_cf(self) -> str:
        tables = self.etc
        lines = [
            *self.base_cf(hostname="upstream.test", domain="upstream.test", relay_port=self.sink.port),
            "smtp_connect_timeout = 5s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            "queue_run_delay = 1s",
            # Postfix's own verdicts, relayed by smtpguard to its client.
            f"smtpd_recipient_restrictions = check_recipient_access hash:{tables}/recipient_access,"
            " permit_mynetworks, reject",
            f"header_checks = regexp:{tables}/header_checks",
        ]
        if self.tls_cert and self.tls_key:
            lines += [
                f"smtpd_tls_cert_file = {self.tls_cert}",
                f"smtpd_tls_key_file = {self.tls_key}",
                "smtpd_tls_security_level = may",
                "smtpd_tls_loglevel = 1",
                "smtpd_tls_received_header = yes",
            ]
        return "\n".join(lines) + "\n"

    def master_cf(self) -> str:
        # The Debian defaults without chroot (a chroot would need copies of /etc files)
        # and with smtpd on 127.0.0.1:PORT instead of port 25.
        services = [
            f"{LOOPBACK}:{self.port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"

    def start(self, *, recipient_access: dict[str, str], header_checks: Sequence[str]) -> None:
        self.etc.mkdir()
        self.queue.mkdir()
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, user="postfix")
        self.sink.start()
        table = "".join(f"{addr} {action}\n" for addr, action in recipient_access.items())
        (self.etc / "recipient_access").write_text(table)
        (self.etc / "header_checks").write_text("".join(f"{line}\n" for line in header_checks))
        for attempt in range(3):
            self.port = free_port()
            (self.etc / "main.cf").write_text(self.main_cf())
            (self.etc / "master.cf").write_text(self.master_cf())
            if attempt == 0:
                self._run(POSTMAP, "-c", str(self.etc), f"hash:{self.etc}/recipient_access")
                self._run(POSTFIX, "-c", str(self.etc), "check")
            self._run(POSTFIX, "-c", str(self.etc), "start")
            self.started = True
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if port_open(self.port):
                    return
                pid = self._master_pid()
                if pid is not None and not _alive(pid):
                    break  # master died (e.g. the port was taken in between)
                time.sleep(0.05)
            self._stop_master()  # the port may have been taken in between: try another
        raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{self.port}\n{self.diagnostics()}")

    def _run(self, *argv: str) -> str:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}\n" + self.diagnostics()
            )
        return r.stdout + r.stderr

    # -- tear-down ---------------------------------------------------------------

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _stop_master(self) -> None:
        if not self.started:
            return
        pid = self._master_pid()
        subprocess.run(
            [POSTFIX, "-c", str(self.etc), "stop"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        deadline = time.monotonic() + 10
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our own master only, by its pid file
        (self.queue / "pid" / "master.pid").unlink(missing_ok=True)
        self.started = False

    def stop(self) -> None:
        try:
            self._stop_master()
        finally:
            self.sink.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what happened -----------------------------------------------------------

    def log_text(self, since: int = 0) -> str:
        try:
            with self.maillog.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def mark(self) -> Mark:
        size = self.maillog.stat().st_size if self.maillog.exists() else 0
        return Mark(size, frozenset(self.sink.files()))

    def deliveries(self, since: Mark | None = None) -> list[Delivery]:
        files = self.sink.files() - (since.sink_files if since else frozenset())
        return [Delivery.parse(p) for p in sorted(files)]

    def postqueue(self, flag: str) -> subprocess.CompletedProcess[str]:
        """`postqueue -c ETC FLAG` (-p: the listing, -j: JSON lines), whatever its exit status."""
        return subprocess.run(
            [POSTQUEUE, "-c", str(self.etc), flag],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def queue_listing(self) -> str:
        r = self.postqueue("-p")
        return (r.stdout + r.stderr).strip()

    def diagnostics(self, since: Mark | None = None) -> str:
        """What to print in a failed assertion: the maillog, the queue, the sink."""
        log = self.log_text(since.log_offset if since else 0)
        sink_log = self.sink.log.read_text(errors="replace") if self.sink.log.exists() else ""
        files = sorted(str(p.relative_to(self.root)) for p in self.sink.files())
        queue = self.queue_listing() if self.started else "(not running)"
        return (
            f"--- Postfix maillog ({self.maillog}) ---\n{log or '(empty)'}\n"
            f"--- postqueue -p ---\n{queue}\n"
            f"--- smtp-sink dump files ---\n{files}\n--- smtp-sink output ---\n{sink_log or '(empty)'}"
        )

    async def wait_done(self, queue_id: str, since: Mark, timeout: float = DELIVERY_TIMEOUT) -> list[Delivery]:
        """Wait until Postfix has finished with queue_id; its deliveries at the sink."""
        done = re.compile(rf"\b{re.escape(queue_id)}: removed\b")
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if done.search(self.log_text(since.log_offset)):
                return [d for d in self.deliveries(since) if _received_by(d, queue_id)]
            await asyncio.sleep(0.05)
        raise AssertionError(f"Postfix did not finish with {queue_id} in {timeout:.0f} s\n{self.diagnostics(since)}")

    async def settle(self, since: Mark, timeout: float = DELIVERY_TIMEOUT) -> None:
        """Wait until every queue file Postfix created after `since` is gone (delivered or bounced)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        queued = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): ")
        while loop.time() < end:
            log = self.log_text(since.log_offset)
            ids = set(queued.findall(log))
            # Done with a queue file: removed after delivery, or refused by cleanup (never queued).
            if all(re.search(rf"\b{qid}: (removed|reject:|discard:)", log) for qid in ids):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"Postfix still has mail queued after {timeout:.0f} s\n{self.diagnostics(since)}")


def _received_by(d: Delivery, queue_id: str) -> bool:
    return any(f" id {queue_id};" in r or f" id {queue_id} " in r for r in d.header("Received"))


# swaks' transcript marks what the server said: `<-` in clear, `<~` over TLS, `*` for an error.
_SWAKS_OK = ("<-  ", "<~  ")
_SWAKS_ERROR = ("<** ", "<~* ")


@dataclass(frozen=True)
class SwaksRun:
    argv: tuple[str, ...]
    returncode: int
    output: str

    def server_replies(self) -> list[str]:
        """The reply lines swaks shows as coming from the server, in order."""
        return [line[4:] for line in self.output.splitlines() if line.startswith(_SWAKS_OK + _SWAKS_ERROR)]

    def errors(self) -> list[str]:
        """The reply lines swaks flags as errors (unexpected codes)."""
        return [line[4:] for line in self.output.splitlines() if line.startswith(_SWAKS_ERROR)]

    def queue_id(self) -> str:
        """Postfix's queue id from the final 250 relayed by smtpguard (`... queued as ABC123`)."""
        for line in self.server_replies():
            m = re.search(r"queued as ([0-9A-F]+)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"no 'queued as' in swaks' transcript:\n{self}")

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n(exit {self.returncode})\n{self.output}"


async def swaks(port: int, *args: str, timeout: float = 30.0) -> SwaksRun:
    """Run swaks against 127.0.0.1:port, never interactively; its whole transcript kept."""
    argv = ("swaks", "--server", f"{LOOPBACK}:{port}", "--helo", "client.test", "--timeout", "20", *args)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"swaks did not finish in {timeout:.0f} s:\n{out.decode(errors='replace')}") from None
    assert proc.returncode is not None
    return SwaksRun(argv, proc.returncode, out.decode("utf-8", "replace"))
