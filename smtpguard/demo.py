"""`smtpguard demo`: the relay on 127.0.0.1:2525 in front of a built-in upstream.

The upstream is a tiny local SMTP server that writes every message it
receives as a .eml file, so a newcomer sees the whole path work without any
real mail account: an allowed message lands in the folder, a message to a
suppressed address is refused before it gets there.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from smtpguard.config import Endpoint, PolicySettings, ServerSettings, Settings, StoreSettings, UpstreamSettings
from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.ingest import import_file
from smtpguard.suppression.store import open_store

log = logging.getLogger("smtpguard.demo")


def demo_list() -> Path:
    """The demo list shipped inside the package (smtpguard/data), wherever it is installed."""
    from importlib.resources import files

    return Path(str(files("smtpguard") / "data" / "unsubscribed.csv"))


DEMO_SOURCE = "lemlist export (demo)"
ALLOWED = "colleague@example.com"
REFUSED = "jane.doe@example.com"
SENDER = "you@example.com"


@dataclass
class MailFolder:
    """The demo upstream's handler: each accepted message becomes a .eml file."""

    folder: Path
    count: int = 0
    names: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.count:04d}.eml"
        head = (
            f"X-Demo-Envelope-From: <{envelope.mail_from}>\r\n"
            f"X-Demo-Envelope-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}\r\n"
        ).encode()
        (self.folder / name).write_bytes(head + (envelope.original_content or b""))
        self.names.append(name)
        return f"250 2.0.0 Ok: stored as {name}"


async def start_mail_folder(folder: Path) -> tuple[asyncio.Server, int]:
    folder.mkdir(parents=True, exist_ok=True)
    handler = MailFolder(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler, loop=loop, hostname="demo-upstream.localhost", ident="demo upstream", enable_SMTPUTF8=True
        ),
        "127.0.0.1",
        0,
    )
    return server, int(server.sockets[0].getsockname()[1])


def demo_settings(folder: Path, port: int, upstream_port: int) -> Settings:
    return Settings(
        server=ServerSettings(listen=Endpoint("127.0.0.1", port), auth="none", hostname="smtpguard-demo.localhost"),
        upstream=UpstreamSettings(host="127.0.0.1", port=upstream_port, security="none", timeout=10),
        policy=PolicySettings(mode="reject"),
        store=StoreSettings(folder / "list.db"),
    )


async def import_list(db: Path, path: Path, rules: MatchRules) -> tuple[int, int]:
    store = await open_store(db, rules)
    try:
        done = await import_file(store, path, source=DEMO_SOURCE)
    finally:
        await store.close()
    return done.stats.rows, done.result.added


def instructions(port: int, folder: Path) -> str:
    # The command as the user started it, so the lines paste as they are.
    if Path(sys.argv[0]).name == "smtpguard":
        exe = shlex.quote(sys.argv[0])
    else:
        exe = f"{shlex.quote(sys.executable)} -m smtpguard"
    mail = shlex.quote(str(folder / "mail"))
    return f"""
smtpguard demo is running: relay on 127.0.0.1:{port}, received mail goes to {mail}/

Try it from another terminal (copy and paste):

  1. allowed — delivered, a new .eml file appears:
     {exe} send --server 127.0.0.1:{port} --from {SENDER} --to {ALLOWED}

  2. refused — {REFUSED} unsubscribed, the relay answers 550 and nothing is sent:
     {exe} send --server 127.0.0.1:{port} --from {SENDER} --to {REFUSED}

  3. look at the result — the delivered mail and the audit log of refusals:
     ls -l {mail}/ && {exe} log --db {shlex.quote(str(folder / "list.db"))}

Point a mail program at 127.0.0.1:{port} (no password) to try it by hand. Ctrl-C stops the demo.
"""


async def run_demo(folder: Path, port: int, list_file: Path | None = None) -> int:
    list_file = list_file or demo_list()
    if not list_file.exists():
        raise FileNotFoundError(
            2, "the demo list is missing from this installation (reinstall smtpguard)", str(list_file)
        )
    folder.mkdir(parents=True, exist_ok=True)
    upstream, upstream_port = await start_mail_folder(folder / "mail")
    settings = demo_settings(folder, port, upstream_port)
    rows, added = await import_list(settings.store.path, list_file, settings.matching)
    log.info("imported %s: %d rows, %d new entries", list_file, rows, added)
    relay = await Relay.start(settings)
    print(instructions(relay.endpoints[0].port, folder), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await relay.stop(deadline=5)
    upstream.close()
    print("demo stopped", flush=True)
    return 0
