"""The real outgoing server: connect with TLS and EHLO, describe failures, close (aiosmtplib)."""

from __future__ import annotations

import ssl

import aiosmtplib

from smtpguard.config import UpstreamSettings
from smtpguard.metrics import METRICS


class UpstreamUnavailable(Exception):
    """Could not reach or set up the upstream session (connect, TLS, EHLO)."""


def client_tls_context(up: UpstreamSettings) -> ssl.SSLContext:
    """Verification on by default; `ca_file` for a private CA."""
    ctx = ssl.create_default_context(cafile=str(up.ca_file) if up.ca_file else None)
    if not up.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def new_client(up: UpstreamSettings, local_hostname: str) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=up.host,
        port=up.port,
        timeout=up.timeout,
        use_tls=up.security == "tls",
        start_tls=up.security == "starttls",
        tls_context=client_tls_context(up) if up.security != "none" else None,
        local_hostname=local_hostname,
    )


async def connect(up: UpstreamSettings, local_hostname: str) -> aiosmtplib.SMTP:
    """An upstream session past greeting, TLS and EHLO, or UpstreamUnavailable."""
    client = new_client(up, local_hostname)
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        METRICS.upstream(True)
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        client.close()
        METRICS.upstream(False)
        raise UpstreamUnavailable(describe(exc)) from None
    return client


def describe(exc: BaseException) -> str:
    """A short log-friendly text of a client-side failure (never credentials)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


async def close_quietly(client: aiosmtplib.SMTP | None, *, quit: bool = True) -> None:
    """QUIT politely when we can, close in any case; never raises."""
    if client is None:
        return
    try:
        if quit and client.is_connected:
            await client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
