"""Real peers for the gateway mode: the organisation's Postfix in front, a delivering Postfix behind.

    swaks -> ORG Postfix --relayhost--> 127.0.0.1:GATEWAY_PORT --(gateway)--> NEXTHOP Postfix -> maildir
                 |                         (smtpguard, or a stand-in)           (TLS required,
                 +-> local maildir: the bounces (DSN) for corp.example senders    client cert checked)

Both Postfix instances are private (`postfix -c DIR`, see mta.py) and on 127.0.0.1 only.

- ORG plays the organisation's mail server: accepts submission from 127.0.0.0/8,
  relays every domain but its own to `[127.0.0.1]:GATEWAY_PORT`, speaks TLS there
  (`smtp_tls_security_level`, "may" unless told) and presents its own client
  certificate when asked.  Its own domains (corp.example) are local maildirs, so
  a bounce for sales@corp.example lands where a test can read it.  It retries
  deferred mail only when flushed (`retry_after` is long) so a test decides when.
- NEXTHOP plays Exchange Online / Google's relay: requires STARTTLS, asks for a
  client certificate and, as told, requires one (any from the bed's CA) or
  requires one of a pinned list (fingerprints, like an inbound connector that
  recognises smtpguard's certificate).  Every domain is a local maildir.

Each delivered message is one file in the instance's maildir (mailpostfix.py).

Use from a test module: `from .gateway_bed import bed_mark, gateway_bed, make_gateway_bed`
(see test_gateway_bed.py).  A session fixture imported into two modules starts one bed
per module; importing the fixtures in conftest.py instead would share one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .mailpostfix import MailPostfix
from .mta import LOOPBACK, Mark, free_port, missing_tools

ORG_DOMAIN = "corp.example"
GATEWAY_NAME = "smtpguard.corp.example"  # the gateway's certificate subject (an accepted domain)
ORG_NAME = "mail.corp.example"  # the organisation's server, as a TLS client of the gateway
STRANGER_NAME = "intruder.example"  # same CA, never trusted by name or fingerprint

# The mail the tests send through the bed: bounces for SENDER land in ORG's maildir.
SENDER = f"sales@{ORG_DOMAIN}"
ALLOWED = "bob@ok.example"
SUPPRESSED = "jane.doe@example.com"
_tokens = itertools.count(1)

ClientCertMode = Literal["none", "ask", "require", "pinned"]


def bed_message(prefix: str, text: str, *extra_headers: str) -> tuple[str, list[str]]:
    """A unique subject (`prefix-PID-N`) and the swaks options for a message carrying it."""
    token = f"{prefix}-{os.getpid()}-{next(_tokens)}"
    headers = [a for h in extra_headers for a in ("--add-header", h)]
    return token, ["--header", f"Subject: {token}", *headers, "--body", f"{text}\n{token}\n"]


# -- certificates -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A certificate (leaf first) and its key, as files Postfix, swaks and ssl all read."""

    name: str
    cert_file: Path
    key_file: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf, `AB:CD:...`: Postfix's check_ccert_access key (smtpd_tls_fingerprint_digest)."""
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


class BedCerts:
    """One private CA (trustme) and the bed's certificates, all valid for localhost and 127.0.0.1 too."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca = trustme.CA(organization_name="smtpguard gateway bed")
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.nexthop = self._issue("nexthop.test")
        self.gateway = self._issue(GATEWAY_NAME)  # STARTTLS to ORG, client cert to NEXTHOP
        self.org = self._issue(ORG_NAME)  # ORG's client cert to the gateway
        self.stranger = self._issue(STRANGER_NAME)

    def _issue(self, name: str) -> KeyPair:
        leaf = self.ca.issue_cert(name, "localhost", LOOPBACK, common_name=name)
        pair = KeyPair(name, self.folder / f"{name}.pem", self.folder / f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(str(pair.cert_file))
        leaf.private_key_pem.write_to_path(str(pair.key_file))
        pair.key_file.chmod(0o600)
        return pair

    def server_context(self, pair: KeyPair, *, ask_client_cert: bool = False) -> ssl.SSLContext:
        """A TLS server context; with ask_client_cert, a client certificate from the CA is asked for."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pair.cert_file, pair.key_file)
        if ask_client_cert:
            ctx.load_verify_locations(cafile=str(self.ca_file))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


# -- the two roles ------------------------------------------------------------------------


def org_settings(
    certs: BedCerts, gateway_port: int, *, tls: str, client_cert: bool, retry_after: str
) -> dict[str, str]:
    """main.cf of the organisation's server: its own domain local, the rest to the gateway."""
    settings = {
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": ORG_DOMAIN,
        "relayhost": f"[{LOOPBACK}]:{gateway_port}",
        "smtp_tls_security_level": tls,
        "smtp_tls_CAfile": str(certs.ca_file),
        "smtp_tls_loglevel": "1",
        # Retries only when a test flushes the queue (`postqueue -f`), never behind its back.
        "minimal_backoff_time": retry_after,
        "maximal_backoff_time": retry_after,
        "queue_run_delay": retry_after,
    }
    if client_cert:
        settings |= {"smtp_tls_cert_file": str(certs.org.cert_file), "smtp_tls_key_file": str(certs.org.key_file)}
    return settings


def nexthop_settings(certs: BedCerts, etc: Path, *, tls: str, client_cert: ClientCertMode) -> dict[str, str]:
    """main.cf of the next hop: every domain local, TLS required, the client certificate checked as told."""
    checks = {
        "none": "",
        "ask": "",
        "require": "",  # smtpd_tls_req_ccert: no verified certificate, no mail
        "pinned": f"check_ccert_access hash:{etc}/ccert_access, reject",
    }
    return {
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": "static:all",
        "smtpd_tls_security_level": tls,
        "smtpd_tls_cert_file": str(certs.nexthop.cert_file),
        "smtpd_tls_key_file": str(certs.nexthop.key_file),
        "smtpd_tls_CAfile": str(certs.ca_file),
        "smtpd_tls_ask_ccert": "no" if client_cert == "none" else "yes",
        "smtpd_tls_req_ccert": "yes" if client_cert == "require" else "no",
        "smtpd_tls_fingerprint_digest": "sha256",
        "smtpd_tls_loglevel": "2",  # 2: logs `subject_CN=..., issuer=..., fingerprint=...`
        "smtpd_tls_received_header": "yes",  # `(Client CN "...", Issuer "..." (verified OK))`
        "smtpd_client_restrictions": checks[client_cert],
    }


def ccert_table(pinned: Sequence[KeyPair]) -> str:
    return "".join(f"{pair.fingerprint} OK\n" for pair in pinned)


# -- the whole bed --------------------------------------------------------------------------


@dataclass(frozen=True)
class BedMark:
    """Both Postfix instances as a test starts: what comes after is this test's."""

    org: Mark
    nexthop: Mark


@dataclass
class GatewayBed:
    """ORG Postfix -> 127.0.0.1:gateway_port (yours to serve) -> NEXTHOP Postfix."""

    root: Path
    certs: BedCerts
    org: MailPostfix
    nexthop: MailPostfix
    gateway_port: int
    started: list[MailPostfix] = field(default_factory=list)

    def mark(self) -> BedMark:
        return BedMark(self.org.mark(), self.nexthop.mark())

    def diagnostics(self, since: BedMark | None = None) -> str:
        return (
            f"=== ORG (submission 127.0.0.1:{self.org.port}, relayhost 127.0.0.1:{self.gateway_port}) ===\n"
            f"{self.org.diagnostics(since.org if since else None)}\n"
            f"=== NEXTHOP (127.0.0.1:{self.nexthop.port}) ===\n"
            f"{self.nexthop.diagnostics(since.nexthop if since else None)}"
        )

    def set_nexthop_client_cert(self, mode: ClientCertMode, pinned: Sequence[KeyPair] | None = None) -> None:
        """Change what NEXTHOP asks of a client certificate (a reload: new connections only)."""
        tls = self.nexthop.extra["smtpd_tls_security_level"]
        pinned = [self.certs.gateway] if pinned is None else pinned
        self.nexthop.configure(
            nexthop_settings(self.certs, self.nexthop.etc, tls=tls, client_cert=mode),
            {"ccert_access": ccert_table(pinned)},
        )

    def reset(self) -> None:
        """Both instances running, with their first settings and empty queues."""
        for pf in self.started:
            pf.reset()

    def cleanup(self) -> None:
        try:
            for pf in self.started:
                pf.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_bed(
    *,
    gateway_port: int | None = None,
    org_tls: str = "may",
    org_client_cert: bool = True,
    org_retry_after: str = "1h",
    nexthop_tls: str = "encrypt",
    nexthop_client_cert: ClientCertMode = "pinned",
    pinned: Sequence[KeyPair] | None = None,
    nexthop_recipient_access: dict[str, str] | None = None,
) -> GatewayBed:
    """Start NEXTHOP, then ORG relaying to 127.0.0.1:gateway_port (a free port unless given).

    org_tls: ORG's smtp_tls_security_level towards the gateway (none, may, encrypt).
    org_client_cert: ORG presents certs.org when the gateway asks for a client certificate.
    org_retry_after: ORG's backoff; long, so that deferred mail moves only on `org.flush()`.
    nexthop_tls: NEXTHOP's smtpd_tls_security_level (encrypt: STARTTLS required).
    nexthop_client_cert: none | ask (logged, not required) | require (any certificate of the
        bed's CA) | pinned (only the `pinned` certificates, by fingerprint; certs.gateway by default).
    nexthop_recipient_access: NEXTHOP's own refusals (`address -> "REJECT text"`), like a tenant's.
    """
    root = Path(tempfile.mkdtemp(prefix="sggw-", dir="/tmp"))  # short: unix socket paths in the queue
    root.chmod(0o755)  # Postfix daemons run as `postfix` and must reach the queue
    certs = BedCerts(root / "certs")
    pinned = [certs.gateway] if pinned is None else pinned
    port = gateway_port or free_port()
    nexthop_root = root / "nexthop"
    nexthop = MailPostfix(
        nexthop_root,
        "nexthop.test",
        nexthop_settings(certs, nexthop_root / "etc", tls=nexthop_tls, client_cert=nexthop_client_cert),
    )
    nexthop.tables["ccert_access"] = ccert_table(pinned)
    org = MailPostfix(
        root / "org",
        ORG_NAME,
        org_settings(certs, port, tls=org_tls, client_cert=org_client_cert, retry_after=org_retry_after),
    )
    bed = GatewayBed(root, certs, org, nexthop, port)
    try:
        for pf, access in ((nexthop, nexthop_recipient_access), (org, None)):
            pf.root.mkdir()
            bed.started.append(pf)
            pf.start(recipient_access=access)
    except BaseException:
        bed.cleanup()
        raise
    return bed


@pytest.fixture(scope="session")
def gateway_bed() -> Iterator[GatewayBed]:
    """The default bed for the whole session: ORG (TLS may, client cert) -> gateway_port -> NEXTHOP (pinned)."""
    if reason := missing_tools():
        pytest.skip(reason)
    bed = start_bed()
    yield bed
    bed.cleanup()


@pytest.fixture
def bed_mark(gateway_bed: GatewayBed) -> Iterator[BedMark]:
    """The shared bed as this test starts: only what comes after is this test's.

    Afterwards the bed is reset (running, first settings, queues emptied), so that a
    failed test leaves nothing for the next one.
    """
    yield gateway_bed.mark()
    gateway_bed.reset()


@pytest.fixture
def make_gateway_bed() -> Iterator[Callable[..., GatewayBed]]:
    """`make_gateway_bed(org_tls="encrypt", nexthop_client_cert="require")`: a bed of its own
    (start_bed's options), stopped and removed after the test."""
    beds: list[GatewayBed] = []

    def make(**options: Any) -> GatewayBed:
        if reason := missing_tools():
            pytest.skip(reason)
        beds.append(start_bed(**options))
        return beds[-1]

    yield make
    for bed in beds:
        bed.cleanup()
