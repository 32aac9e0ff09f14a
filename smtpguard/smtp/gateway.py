"""Gateway mode: who may hand mail over, and the loop-prevention header (docs/gateway.md).

Trust: the organisation's servers, by address (`networks`) or by the name
in the TLS client certificate they present (`client_cert_names`, checked
against `client_ca_file` during the handshake).  Nobody else may send, and
no AUTH is offered on the gateway listener.

Loop prevention: allowed mail goes back to the organisation's system (the
Microsoft 365 tenant, Google's relay), whose routing rule must not send it to
smtpguard again.  smtpguard adds `X-Smtpguard-Checked` carrying an HMAC, keyed
by the deployment's secret, over the message's identity (Message-ID, envelope
sender and recipients, time); the rule skips mail that carries it.  On mail
*arriving* at the gateway the header is never trusted: every copy is
removed and every message is checked anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpguard.config import ConfigError, GatewaySettings, Settings
from smtpguard.smtp.message import _fields, split_header_block
from smtpguard.smtp.session import is_trusted

if TYPE_CHECKING:
    from smtpguard.smtp.session import RelaySession

LOOP_HEADER = "X-Smtpguard-Checked"
_LOOP_NAME = LOOP_HEADER.lower().encode()
MIN_SECRET = 16  # bytes of secret below which an HMAC key is guessable


def peer_names(peercert: dict[str, Any] | None) -> set[str]:
    """The DNS names a verified client certificate carries: subject CN and SAN (lower case)."""
    if not peercert:
        return set()
    names = {v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"}
    names |= {v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"}
    return {n.lower().rstrip(".") for n in names}


def cert_trusted(peercert: dict[str, Any] | None, gw: GatewaySettings) -> bool:
    """A certificate the handshake verified against client_ca_file, naming one of client_cert_names."""
    return bool(gw.client_cert_names) and not peer_names(peercert).isdisjoint(gw.client_cert_names)


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The gateway listener's STARTTLS context; asks for a client certificate when names are configured."""
    gw, srv = settings.gateway, settings.server
    cert, key = (gw.tls_cert, gw.tls_key) if gw.tls_cert else (srv.tls_cert, srv.tls_key)
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if gw.client_ca_file is not None:
            ctx.load_verify_locations(cafile=str(gw.client_ca_file))
            ctx.verify_mode = ssl.CERT_OPTIONAL  # asked, verified if given; trust is decided at MAIL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[gateway] TLS files {cert}, {key}, {gw.client_ca_file}: {exc}") from None
    return ctx


def loop_secret(gw: GatewaySettings) -> bytes:
    """The HMAC key, read when needed (a reload may point to a new file)."""
    path = gw.loop_secret_file
    if path is None:
        raise ConfigError("[gateway] loop_secret_file is not set")
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"[gateway] loop_secret_file {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"[gateway] loop_secret_file {path}: at least {MIN_SECRET} bytes of random text needed")
    return secret


def secret_problem(gw: GatewaySettings) -> str:
    """Why the loop secret is unusable, or ''; `serve` and `config check` refuse to start on it."""
    if not gw.enabled:
        return ""
    try:
        loop_secret(gw)
    except ConfigError as exc:
        return str(exc)
    return ""


def loop_mac(secret: bytes, stamp: int, message_id: str, sender: str, recipients: Sequence[str]) -> str:
    identity = "\n".join(["v1", str(stamp), message_id, sender, *sorted(r.lower() for r in recipients)])
    digest = hmac.new(secret, identity.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def loop_value(secret: bytes, message_id: str, sender: str, recipients: Sequence[str], now: float | None = None) -> str:
    stamp = int(time.time() if now is None else now)
    return f"v=1; t={stamp}; m={loop_mac(secret, stamp, message_id, sender, recipients)}"


def verify_loop_value(value: str, secret: bytes, message_id: str, sender: str, recipients: Sequence[str]) -> bool:
    """Whether `value` is a header smtpguard made for this message (for audits; the gateway never trusts one)."""
    parts = dict(p.strip().partition("=")[::2] for p in value.split(";"))
    stamp = parts.get("t", "")
    if parts.get("v") != "1" or not stamp.isdigit():
        return False
    return hmac.compare_digest(parts.get("m", ""), loop_mac(secret, int(stamp), message_id, sender, recipients))


def strip_loop_headers(content: bytes) -> bytes:
    """The message without any loop-prevention header (however spelt or folded)."""
    headers, body = split_header_block(content)
    kept = [f for f in _fields(headers) if f.partition(b":")[0].strip().lower() != _LOOP_NAME]
    return b"".join(kept) + body


def stamp(content: bytes, value: str) -> bytes:
    """Any existing loop header removed, ours added first."""
    eol = b"\r\n" if b"\r\n" in content[:2000] or not content else b"\n"
    return f"{LOOP_HEADER}: {value}".encode("ascii") + eol + strip_loop_headers(content)


def trusted(server: RelaySession, gw: GatewaySettings) -> bool:
    """May this client hand mail to the gateway (settings of now: a reload narrowing them applies at once)?"""
    return is_trusted(server.client_ip, gw.networks) or cert_trusted(server.peercert, gw)


def stamp_message(
    content: bytes, gw: GatewaySettings, sender: str, recipients: Sequence[str], message_id: str
) -> bytes:
    """The message as the next hop gets it: incoming loop headers removed, ours added."""
    return stamp(content, loop_value(loop_secret(gw), message_id, sender, recipients))
