"""`smtpguard config check`: try the upstream as the relay would (connect, TLS, EHLO, login)."""

from __future__ import annotations

from collections.abc import Callable

import aiosmtplib

from smtpguard.config import Settings
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, connect, describe


async def probe(settings: Settings, say: Callable[[str], None]) -> bool:
    """`config check`: connect, TLS, EHLO (and a login with the relay's own account)."""
    up = settings.upstream
    say(f"upstream {up.host}:{up.port} security={up.security}: connecting …")
    try:
        client = await connect(up, settings.server.hostname)
    except UpstreamUnavailable as exc:
        say(f"upstream: FAILED: {exc}")
        return False
    ok = True
    try:
        tls = client.get_transport_info("ssl_object")
        say(f"upstream: connected, TLS {tls.version() if tls else 'not used'}")
        exts = sorted(client.esmtp_extensions)
        say(f"upstream: EHLO ok, extensions: {', '.join(exts) or 'none'}")
        if settings.server.auth in ("local", "none") and up.username:
            try:
                await client.login(up.username, settings.upstream_password())
                say(f"upstream: login as {up.username}: ok")
            except aiosmtplib.SMTPException as exc:
                say(f"upstream: login as {up.username}: FAILED: {describe(exc)}")
                ok = False
        elif settings.server.auth == "passthrough":
            auth = client.esmtp_extensions.get("auth", "")
            say(f"upstream: AUTH mechanisms for passthrough: {auth or 'none advertised'}")
    finally:
        await close_quietly(client)
    return ok
