"""The gateway's next hop: connect with TLS (and a client certificate, and AUTH) to the first that answers.

Microsoft 365 recognises smtpguard by the certificate it presents to
`<tenant>.mail.protection.outlook.com`; Google's smtp-relay by its address or
by SMTP AUTH over TLS.  Several next hops are tried in the order configured;
when none answers, MAIL gets 451 so the organisation's server keeps the mail
queued and retries (nothing lost).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import aiosmtplib

from smtpguard.config import NextHopSettings
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, describe

log = logging.getLogger("smtpguard.relay")


def next_hop_tls_context(hop: NextHopSettings) -> ssl.SSLContext:
    """Verification on by default; `ca_file` for a private CA; our client certificate when set."""
    ctx = ssl.create_default_context(cafile=str(hop.ca_file) if hop.ca_file else None)
    if not hop.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if hop.client_cert is not None and hop.client_key is not None:
        ctx.load_cert_chain(hop.client_cert, hop.client_key)
    return ctx


async def connect_one(hop: NextHopSettings, local_hostname: str) -> aiosmtplib.SMTP:
    """One next hop past greeting, TLS, EHLO and (when set) AUTH, or UpstreamUnavailable."""
    try:
        tls = next_hop_tls_context(hop) if hop.security != "none" else None
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamUnavailable(f"client certificate {hop.client_cert}: {exc}") from None
    client = aiosmtplib.SMTP(
        hostname=hop.host,
        port=hop.port,
        timeout=hop.timeout,
        use_tls=hop.security == "tls",
        start_tls=hop.security == "starttls",
        tls_context=tls,
        local_hostname=local_hostname,
    )
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        if hop.username:
            await client.login(hop.username, hop.password())
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
        await close_quietly(client, quit=client.is_connected)
        raise UpstreamUnavailable(describe(exc)) from None
    return client


async def connect_first(hops: tuple[NextHopSettings, ...], local_hostname: str) -> aiosmtplib.SMTP:
    """The first next hop that takes a session, in order; UpstreamUnavailable naming every failure."""
    failures: list[str] = []
    for hop in hops:
        try:
            return await connect_one(hop, local_hostname)
        except UpstreamUnavailable as exc:
            log.warning("next hop %s:%d unavailable: %s", hop.host, hop.port, exc)
            failures.append(f"{hop.host}:{hop.port}: {exc}")
    raise UpstreamUnavailable("; ".join(failures) or "no next hop configured")


async def probe_next_hops(hops: tuple[NextHopSettings, ...], local_hostname: str, say: Callable[[str], None]) -> bool:
    """`config check`: each next hop as the gateway would reach it (TLS, client certificate, AUTH)."""
    ok = True
    for hop in hops:
        name = f"next hop {hop.host}:{hop.port} security={hop.security}"
        try:
            client = await connect_one(hop, local_hostname)
        except UpstreamUnavailable as exc:
            say(f"{name}: FAILED: {exc}")
            ok = False
            continue
        tls = client.get_transport_info("ssl_object")
        dsn = "DSN passed on" if client.supports_extension("dsn") else "no DSN (parameters dropped)"
        login = f", logged in as {hop.username}" if hop.username else ""
        say(f"{name}: ok, TLS {tls.version() if tls else 'not used'}{login}, {dsn}")
        await close_quietly(client)
    return ok
