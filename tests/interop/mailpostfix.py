"""A private Postfix that delivers to a maildir, and what it delivered or still holds.

Builds on mta.py's PrivatePostfix (same layout, start/stop, maillog, marks) but
delivers its own domains with the virtual delivery agent to one maildir
(DIR/mail/inbox/) instead of relaying to smtp-sink.  `Delivered-To` in each file
names the envelope recipient, `Return-Path` the envelope sender.  The queue is read
with `postqueue -j` (the JSON form of `postqueue -p`).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from .mta import (
    POSTFIX,
    POSTMAP,
    POSTQUEUE,
    START_TIMEOUT,
    Delivery,
    Mark,
    PrivatePostfix,
    _alive,
    free_port,
    port_open,
)

WAIT_TIMEOUT = 15.0
POSTSUPER = "/usr/sbin/postsuper"
NOBODY = 65534  # owner of the maildir: the virtual delivery agent refuses root


# -- what was delivered -------------------------------------------------------------------


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient block of a bounce's message/delivery-status part (RFC 3464)."""

    final_recipient: str  # the address, without its `rfc822;` type
    action: str  # failed, delayed, delivered, ...
    status: str  # e.g. 5.7.1
    diagnostic: str  # e.g. `smtp; 550 5.7.1 <jane@x>: suppressed ...`, unfolded


@dataclass(frozen=True)
class MaildirMessage(Delivery):
    """One message a bed Postfix delivered to its maildir (`rcpts` = its Delivered-To)."""

    @classmethod
    def read(cls, path: Path) -> MaildirMessage:
        raw = path.read_bytes()
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        sender = str(msg.get("Return-Path") or "").strip().strip("<>")  # str(): a Header when not ASCII
        return cls(path, sender, tuple(str(v).strip() for v in msg.get_all("Delivered-To", [])), raw)

    @property
    def delivered_to(self) -> str:
        return self.rcpts[0] if self.rcpts else ""

    @property
    def original_to(self) -> str:
        return (self.header("X-Original-To") or [""])[0]

    @property
    def subject(self) -> str:
        return (self.header("Subject") or [""])[0]

    def parsed(self) -> Message:
        return email.message_from_bytes(self.message, policy=email.policy.compat32)

    @property
    def body(self) -> str:
        """Every text part, decoded, in order (a bounce's human-readable part, a plain message's body)."""
        texts = []
        for part in self.parsed().walk():
            if part.get_content_maintype() == "text":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
        return "\n".join(texts)

    def is_bounce(self) -> bool:
        return self.parsed().get_content_type() == "multipart/report"

    def dsn(self) -> list[DsnRecipient]:
        """The per-recipient reports of a bounce; [] for an ordinary message."""
        found = []
        for part in self.parsed().walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            blocks = part.get_payload()
            assert isinstance(blocks, list)
            for block in blocks[1:]:  # the first block is per-message (Reporting-MTA, ...)
                assert isinstance(block, Message)
                found.append(
                    DsnRecipient(
                        final_recipient=flat(block.get("Final-Recipient", "")).split(";", 1)[-1].strip(),
                        action=flat(block.get("Action", "")),
                        status=flat(block.get("Status", "")),
                        # str(): compat32 gives a Header object for a non-ASCII (e.g. French) reason
                        diagnostic=flat(str(block.get("Diagnostic-Code", ""))),
                    )
                )
        return found


def flat(text: str) -> str:
    """Whitespace collapsed: Postfix wraps the reasons it quotes in a bounce at ~80 columns."""
    return " ".join(text.split())


@dataclass(frozen=True)
class QueuedRecipient:
    address: str
    delay_reason: str  # e.g. `connect to 127.0.0.1[127.0.0.1]:PORT: Connection refused`


@dataclass(frozen=True)
class QueuedMessage:
    """One entry of `postqueue -j` (the JSON form of `postqueue -p`)."""

    queue_id: str
    queue_name: str  # incoming, active, deferred, hold, maildrop
    sender: str
    recipients: tuple[QueuedRecipient, ...]

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients)


# -- one Postfix of the bed ---------------------------------------------------------------------


class MailPostfix(PrivatePostfix):
    """A private Postfix that delivers its own domains to a maildir (no smtp-sink).

    `mark()` / `deliveries(since)` / `wait_done(queue_id, since)` work as in mta.py,
    with maildir files in place of the sink's dump files.
    """

    def __init__(self, root: Path, hostname: str, extra: dict[str, str]) -> None:
        super().__init__(root)
        self.hostname = hostname
        self.mail = root / "mail"
        self.extra = dict(extra)  # main.cf settings of this role, written after the common ones
        self.tables: dict[str, str] = {}  # etc/<name> -> content, postmap'ed as hash tables
        self.initial: tuple[dict[str, str], dict[str, str]] = ({}, {})  # (extra, tables) once started

    def main_cf(self) -> str:
        common = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.hostname,
            "myorigin": self.hostname,
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_connect_timeout": "5s",
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_recipient_restrictions": f"check_recipient_access hash:{self.etc}/recipient_access",
            # Local mail goes to one maildir; Delivered-To tells the recipients apart.
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{NOBODY}",
            "virtual_gid_maps": f"static:{NOBODY}",
            "virtual_mailbox_limit": "0",
            "message_size_limit": str(64 * 1024 * 1024),  # big attachments must fit
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
        }
        return "".join(f"{k} = {v}\n" for k, v in {**common, **self.extra}.items())

    def start(self, *, recipient_access: dict[str, str] | None = None, header_checks: Sequence[str] = ()) -> None:
        """Create the instance and start it on a free port; after stop(), start it again on the same port."""
        if self.etc.exists():
            self._launch()
            return
        for folder in (self.etc, self.queue, self.mail):
            folder.mkdir()
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, user="postfix")
        shutil.chown(self.mail, user=NOBODY, group=NOBODY)
        self.tables.setdefault("recipient_access", "")
        self.tables["recipient_access"] += "".join(f"{a} {v}\n" for a, v in (recipient_access or {}).items())
        self.extra.setdefault("header_checks", f"regexp:{self.etc}/header_checks")
        (self.etc / "header_checks").write_text("".join(f"{line}\n" for line in header_checks))
        for attempt in range(3):
            self.port = free_port()
            self._write_cf()
            if attempt == 0:
                self._write_tables()  # postmap reads main.cf
                self._run(POSTFIX, "-c", str(self.etc), "check")
            if self._launch(fail=False):
                self.initial = (dict(self.extra), dict(self.tables))
                return
        raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{self.port}\n{self.diagnostics()}")

    def _write_cf(self) -> None:
        for name, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            path = self.etc / name
            path.write_text(text)
            # Postfix waits (up to 2 s) before it reads a file changed less than a second ago.
            stamp = time.time() - 5
            os.utime(path, (stamp, stamp))

    def _write_tables(self) -> None:
        for name, content in self.tables.items():
            (self.etc / name).write_text(content)
            self._run(POSTMAP, "-c", str(self.etc), f"hash:{self.etc}/{name}")

    def _launch(self, *, fail: bool = True) -> bool:
        self._run(POSTFIX, "-c", str(self.etc), "start")
        self.started = True
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if port_open(self.port):
                return True
            pid = self._master_pid()
            if pid is not None and not _alive(pid):
                break  # the master died (e.g. the port was taken in between)
            time.sleep(0.05)
        self._stop_master()
        if fail:
            raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{self.port} again\n{self.diagnostics()}")
        return False

    def configure(self, settings: dict[str, str], tables: dict[str, str] | None = None) -> None:
        """Change main.cf settings (and hash tables) of the running instance: `postfix reload`.

        Sessions already open keep the old settings; new connections get the new ones.
        """
        self.extra.update(settings)
        self.tables.update(tables or {})
        self._apply()

    def _apply(self) -> None:
        self._write_cf()
        self._write_tables()
        if self.started:
            offset = self.mark().log_offset
            self._run(POSTFIX, "-c", str(self.etc), "reload")
            deadline = time.monotonic() + START_TIMEOUT
            while "reload -- version" not in self.log_text(offset) and time.monotonic() < deadline:
                time.sleep(0.05)

    def reset(self) -> None:
        """Running again, with its first settings and an empty queue (what a failed test may leave behind)."""
        if not self.started:
            self.start()
        extra, tables = self.initial
        if (self.extra, self.tables) != (extra, tables):
            self.extra, self.tables = dict(extra), dict(tables)
            self._apply()
        if self.queued():
            self._run(POSTSUPER, "-c", str(self.etc), "-d", "ALL")

    # -- what happened -------------------------------------------------------------------

    def mail_files(self) -> set[Path]:
        return {p for p in self.mail.glob("*/*/*") if p.is_file() and p.parent.name in ("new", "cur")}

    def mark(self) -> Mark:
        """The bed as a test starts; `Mark.sink_files` holds the maildir's files here."""
        size = self.maillog.stat().st_size if self.maillog.exists() else 0
        return Mark(size, frozenset(self.mail_files()))

    def deliveries(self, since: Mark | None = None) -> list[Delivery]:
        return list(self.messages(since))

    def messages(self, since: Mark | None = None, *, to: str | None = None) -> list[MaildirMessage]:
        """Messages delivered since `since` (all by default), oldest first; only those for `to` if given."""
        files = self.mail_files() - (since.sink_files if since else frozenset())
        found = [MaildirMessage.read(p) for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]
        return [m for m in found if to is None or m.delivered_to.lower() == to.lower()]

    async def wait_messages(
        self, count: int, since: Mark | None = None, *, to: str | None = None, timeout: float = WAIT_TIMEOUT
    ) -> list[MaildirMessage]:
        """Wait until at least `count` messages (for `to`) arrived since `since`; all of them."""
        end = time.monotonic() + timeout
        while True:
            found = self.messages(since, to=to)
            if len(found) >= count:
                return found
            if time.monotonic() > end:
                raise AssertionError(
                    f"{self.hostname}: {len(found)} of {count} messages for {to or 'anyone'} after {timeout:.0f} s\n"
                    + self.diagnostics(since)
                )
            await asyncio.sleep(0.05)

    def queued(self) -> list[QueuedMessage]:
        """The queue as `postqueue -j` lists it ([] when empty)."""
        r = self.postqueue("-j")
        if r.returncode != 0:
            raise AssertionError(f"postqueue -j exited {r.returncode}: {r.stderr}\n{self.diagnostics()}")
        return [_queued(json.loads(line)) for line in r.stdout.splitlines() if line.strip()]

    def deferred(self) -> dict[str, str]:
        """Recipients waiting in the deferred queue -> why."""
        return {r.address: r.delay_reason for m in self.queued() if m.queue_name == "deferred" for r in m.recipients}

    def flush(self) -> None:
        """`postqueue -f`: retry every queued message now (forgets that a destination was down)."""
        self._run(POSTQUEUE, "-c", str(self.etc), "-f")

    async def wait_until(self, what: str, test: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> None:
        end = time.monotonic() + timeout
        while not test():
            if time.monotonic() > end:
                raise AssertionError(f"{self.hostname}: not {what} after {timeout:.0f} s\n{self.diagnostics()}")
            await asyncio.sleep(0.05)

    async def wait_queue_empty(self, timeout: float = WAIT_TIMEOUT) -> None:
        await self.wait_until("empty queue", lambda: self.queued() == [], timeout)

    async def wait_deferred(self, address: str, timeout: float = WAIT_TIMEOUT) -> str:
        """Wait until `address` sits in the deferred queue; the delay reason."""
        await self.wait_until(f"deferred for {address}", lambda: address in self.deferred(), timeout)
        return self.deferred()[address]

    async def wait_log(self, needle: str, since: Mark | None = None, timeout: float = WAIT_TIMEOUT) -> str:
        """Wait until the maillog (since `since`) contains `needle`; that log text."""
        offset = since.log_offset if since else 0
        await self.wait_until(f"logging {needle!r}", lambda: needle in self.log_text(offset), timeout)
        return self.log_text(offset)

    def client_cert_subjects(self, since: Mark | None = None) -> list[str]:
        """CNs of the verified client certificates smtpd saw since `since` (needs smtpd_tls_loglevel 2)."""
        return re.findall(r"\]: subject_CN=([^,]*), issuer=", self.log_text(since.log_offset if since else 0))

    def diagnostics(self, since: Mark | None = None) -> str:
        log = self.log_text(since.log_offset if since else 0)
        queue = self.queue_listing() if self.started else "(not running)"
        files = sorted(str(p.relative_to(self.root)) for p in self.mail_files())
        return (
            f"--- {self.hostname} maillog ({self.maillog}) ---\n{log or '(empty)'}\n"
            f"--- postqueue -p ---\n{queue}\n--- maildir files ---\n{files}"
        )


def _queued(entry: dict[str, object]) -> QueuedMessage:
    rcpts = entry.get("recipients")
    return QueuedMessage(
        queue_id=str(entry.get("queue_id", "")),
        queue_name=str(entry.get("queue_name", "")),
        sender=str(entry.get("sender", "")),
        recipients=tuple(
            QueuedRecipient(str(r.get("address", "")), str(r.get("delay_reason", "")))
            for r in (rcpts if isinstance(rcpts, list) else [])
        ),
    )
