"""Soak: many messages through the relay in front of an upstream that misbehaves.

    .venv/bin/python bench/soak.py [--messages 20000] [--sessions 50] [--seed 1]

Everything runs in this process, on 127.0.0.1: a relay (`auth = "none"` from
loopback, `[policy] mode = "reject"`) in front of an aiosmtpd upstream that
injects faults at random (per upstream transaction: hang up at MAIL, RCPT or
DATA; 4xx or 5xx at RCPT or DATA; a slow DATA).  `--sessions` clients send
`--messages` messages in all, 1-3 recipients each from a pool where one in
three is on the suppression list; a client reconnects when its session ends.

Checked at the end (exit 1 when any fails):
- the upstream's record equals exactly what clients were told was accepted:
  every message a client got 250 for is there once, with exactly the
  recipients that got 250 at RCPT; nothing else is there;
- no suppressed recipient reached the upstream;
- back to idle: no client session left in the relay, file descriptors and
  temporary files as before the run, memory growth bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from smtpguard.config import Endpoint, PolicySettings, ServerSettings, Settings, StoreSettings, UpstreamSettings
from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules, parse_entry
from smtpguard.suppression.store import EntryRow, open_store

POOL = 300  # recipients: r0..r299@soak.example; every third is suppressed
SENDER = "soak@corp.example"
_MSGID = re.compile(rb"Message-ID: <(soak-\d+)@corp\.example>")
FAULTS = {  # per upstream transaction: probability
    "hangup-mail": 0.02,
    "hangup-rcpt": 0.02,
    "hangup-data": 0.02,
    "4xx-rcpt": 0.03,
    "5xx-rcpt": 0.03,
    "4xx-data": 0.03,
    "5xx-data": 0.03,
    "slow-data": 0.05,
}


def suppressed(rcpt: str) -> bool:
    return int(rcpt[1 : rcpt.index("@")]) % 3 == 0


@dataclass
class FaultyUpstream:
    """aiosmtpd handler: faults at random, and a record of what it accepted."""

    rng: random.Random
    record: dict[str, list[str]] = field(default_factory=dict)  # message id -> recipients
    duplicates: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    fault: dict[int, str] = field(default_factory=dict)  # id(session) -> this transaction's fault

    def _pick(self) -> str:
        roll = self.rng.random()
        for name, p in FAULTS.items():
            if roll < p:
                return name
            roll -= p
        return ""

    def _hangup(self, server: SMTP, what: str) -> str:
        self.injected[what] += 1
        assert server.transport is not None
        server.transport.close()
        return "421 4.3.0 gone"  # never reaches the relay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self.fault[id(session)] = self._pick()
        if fault == "hangup-mail":
            return self._hangup(server, fault)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self.fault.get(id(session), "")
        if fault == "hangup-rcpt":
            return self._hangup(server, fault)
        if fault in ("4xx-rcpt", "5xx-rcpt") and self.rng.random() < 0.5:
            self.injected[fault] += 1
            return "450 4.2.0 try later" if fault == "4xx-rcpt" else "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.fault.pop(id(session), "")
        if fault == "hangup-data":
            return self._hangup(server, fault)
        if fault in ("4xx-data", "5xx-data"):
            self.injected[fault] += 1
            return "451 4.3.0 try later" if fault == "4xx-data" else "554 5.6.0 refused"
        if fault == "slow-data":
            self.injected[fault] += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))
        found = _MSGID.search(envelope.original_content or b"")
        key = found.group(1).decode() if found else "?"
        if key in self.record:
            self.duplicates += 1
        self.record[key] = sorted(envelope.rcpt_tos)
        return "250 2.0.0 Ok"


@dataclass
class Told:
    """What the clients were told."""

    accepted: dict[str, list[str]] = field(default_factory=dict)  # message id -> recipients given 250
    refused_suppressed: int = 0
    not_accepted: int = 0
    unknown: int = 0  # the session ended between the message and its reply
    reconnects: int = 0


async def client(port: int, ids: list[int], rng: random.Random, told: Told) -> None:
    smtp: aiosmtplib.SMTP | None = None
    for n in ids:
        if smtp is None or not smtp.is_connected:
            if smtp is not None:
                told.reconnects += 1
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
            await smtp.connect()
        key = f"soak-{n}"
        rcpts = rng.sample([f"r{i}@soak.example" for i in range(POOL)], rng.randint(1, 3))
        body = (
            f"From: {SENDER}\r\nTo: {', '.join(rcpts)}\r\nSubject: soak {n}\r\nMessage-ID: <{key}@corp.example>\r\n\r\n"
        )
        try:
            await smtp.mail(SENDER)
            ok = []
            for r in rcpts:
                reply = await smtp.execute_command(f"RCPT TO:<{r}>".encode())
                if reply.code == 250:
                    ok.append(r)
                elif suppressed(r) and reply.code == 550:
                    told.refused_suppressed += 1
            if not ok:
                await smtp.rset()
                told.not_accepted += 1
                continue
            try:
                reply = await smtp.data(body + "Hello.\r\n")
            except aiosmtplib.SMTPResponseException:
                told.not_accepted += 1
                if smtp.is_connected:
                    await smtp.rset()
                continue
            if reply.code == 250:
                told.accepted[key] = sorted(ok)
            else:
                told.not_accepted += 1
        except aiosmtplib.SMTPServerDisconnected:
            told.unknown += 1
        except aiosmtplib.SMTPResponseException as exc:  # MAIL refused (e.g. 421): not accepted
            told.not_accepted += 1
            if exc.code == 421 or not smtp.is_connected:
                smtp.close()
    if smtp is not None and smtp.is_connected:
        await smtp.quit()


def open_fds() -> dict[str, str]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return fds


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def temp_files() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))  # the run's own (see run): others share /tmp


async def _seed(db: Path) -> None:
    store = await open_store(db, MatchRules())
    try:
        rows = []
        for i in range(0, POOL, 3):
            e = parse_entry(f"r{i}@soak.example")
            rows.append(EntryRow(e.key, e.kind, e.original, "soak", "unsubscribed", "2026-01-01T00:00:00+00:00", None))
        await store.add_entries(rows)
    finally:
        await store.close()


async def run(messages: int, sessions: int, seed: int, workdir: Path) -> list[str]:
    """Run the soak; print the figures; return the failed checks (empty: all good)."""
    rng = random.Random(seed)
    (workdir / "tmp").mkdir()
    tempfile.tempdir = str(workdir / "tmp")  # temporary files of this process only
    up = FaultyUpstream(random.Random(seed + 1))
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(lambda: SMTP(up, loop=loop, hostname="upstream.soak"), "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    db = workdir / "list.db"
    await _seed(db)
    settings = Settings(
        server=ServerSettings(
            listen=Endpoint("127.0.0.1", 0),
            auth="none",
            trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),),
            max_recipients=10,
        ),
        upstream=UpstreamSettings(host="127.0.0.1", port=up_port, security="none", timeout=10),
        policy=PolicySettings(mode="reject"),
        store=StoreSettings(db),
    )
    relay = await Relay.start(settings)
    port = relay.endpoints[0].port
    told = Told()
    # Warm-up (one message, checked with the rest): the list's WAL file, the pool, caches.
    await client(port, [messages], random.Random(seed), told)
    await relay.ctx.audit.flush()
    gc.collect()
    fds0, rss0, tmp0 = open_fds(), rss_mb(), temp_files()
    ids = list(range(messages))
    start = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(client(port, ids[i::sessions], random.Random(rng.random()), told) for i in range(sessions)))
    took = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    # Idle: clients gone; the relay's pooled upstream sessions may stay open (that is the pool).
    end = loop.time() + 10
    while relay.ctx.sessions and loop.time() < end:
        await asyncio.sleep(0.05)
    await relay.ctx.audit.flush()
    gc.collect()
    sessions_left = len(relay.ctx.sessions)
    await relay.ctx.pool.close()
    await asyncio.sleep(0.2)
    fds1, rss1, tmp1 = open_fds(), rss_mb(), temp_files()

    delivered = sum(len(v) for v in up.record.values())
    wrong = sorted(k for k in told.accepted.keys() | up.record.keys() if told.accepted.get(k) != up.record.get(k))
    leaked = [r for rs in up.record.values() for r in rs if suppressed(r)]
    new_fds = sorted((Counter(fds1.values()) - Counter(fds0.values())).elements())
    checks = {
        f"{len(wrong)} messages differ between clients and upstream, e.g. "
        + "; ".join(f"{k}: told {told.accepted.get(k)}, upstream {up.record.get(k)}" for k in wrong[:5]): bool(wrong),
        f"{len(leaked)} suppressed recipients reached the upstream": bool(leaked),
        f"{up.duplicates} messages delivered twice": bool(up.duplicates),
        f"{told.unknown} messages without an answer (client session cut)": bool(told.unknown),
        f"{sessions_left} client sessions still in the relay": bool(sessions_left),
        f"file descriptors left open: {new_fds}": bool(new_fds),
        f"temporary files left: {sorted(tmp1 - tmp0)[:5]}": bool(tmp1 - tmp0),
        f"memory grew {rss1 - rss0:.0f} MB": rss1 - rss0 > 64,
    }
    failed = [what for what, bad in checks.items() if bad]
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    for line in (
        f"soak: {messages} messages over {sessions} sessions in {took:.1f} s ({messages / took:.0f} msg/s,"
        f" {cpu / messages * 1000:.2f} ms CPU each, relay + clients + upstream in one process)",
        f"  accepted by the relay: {len(told.accepted)} messages; upstream recorded {len(up.record)} messages,"
        f" {delivered} recipients",
        f"  not accepted (4xx/5xx told): {told.not_accepted}; suppressed recipients refused:"
        f" {told.refused_suppressed}; client reconnects: {told.reconnects}",
        f"  faults injected: {dict(sorted(up.injected.items()))}",
        f"  idle after: fds {len(fds0)} -> {len(fds1)}, RSS {rss0:.0f} -> {rss1:.0f} MB,"
        f" temp files +{len(tmp1 - tmp0)}, sessions left {sessions_left}, audit pending {relay.ctx.audit.pending}",
        f"  mismatches {len(wrong)}, suppressed delivered {len(leaked)}, duplicates {up.duplicates},"
        f" unanswered {told.unknown}: {'OK' if not failed else 'FAILED'}",
    ):
        print(line)
    await relay.stop(deadline=2)
    upstream.close()
    tempfile.tempdir = None
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the relay warns at each injected fault: expected here
    with tempfile.TemporaryDirectory(prefix="smtpguard-soak-") as tmp:
        failed = asyncio.run(run(args.messages, args.sessions, args.seed, Path(tmp)))
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
