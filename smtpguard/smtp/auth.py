"""AUTH PLAIN and LOGIN: decode the client's credentials, then check them.

`auth = "local"`: against the relay's own accounts (scrypt hashes in the
store), with failures throttled per client address and logged in one fixed
line for fail2ban.  `auth = "passthrough"`: the upstream decides, with the
client's own login; its answer goes back verbatim.  Credentials are never
logged and never kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import deque

import aiosmtplib
from aiosmtpd.smtp import MISSING, AuthResult

from smtpguard import replies
from smtpguard.passwords import unknown_user_hash, verify_password
from smtpguard.replies import upstream_error
from smtpguard.smtp.link import UpstreamLink
from smtpguard.smtp.session import RelaySession
from smtpguard.smtp.upstream import UpstreamUnavailable, close_quietly, connect, describe

log = logging.getLogger("smtpguard.relay")

FAILURE_WINDOW = 300.0  # seconds a failed local login counts against its client address
FAILURES_ALLOWED = 5  # failed local logins per client address and window; then 454 at once
FAILURE_DELAY = 1.0  # seconds a failed attempt waits before its 535


def failures_allowed(workers: int) -> int:
    """This process's share of FAILURES_ALLOWED: each worker counts its own connections only,
    and the kernel spreads a guesser's connections over all of them."""
    return max(1, -(-FAILURES_ALLOWED // workers))


def _refused(reply: replies.Reply, lang: str) -> AuthResult:
    return AuthResult(success=False, handled=False, message=reply.say(lang))


class AuthHooks(UpstreamLink):
    """The handler's AUTH mechanisms (aiosmtpd finds them by their `auth_` names)."""

    def _failures(self, client_ip: str, now: float) -> deque[float]:
        failures = self.ctx.auth_failures
        if len(failures) > 4096:  # many addresses: forget those with nothing recent
            for ip in [ip for ip, times in failures.items() if not times or now - times[-1] > FAILURE_WINDOW]:
                del failures[ip]
        recent = failures.setdefault(client_ip, deque())
        while recent and now - recent[0] > FAILURE_WINDOW:
            recent.popleft()
        return recent

    async def auth_PLAIN(self, server: RelaySession, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return _refused(replies.AUTH_BAD_BASE64, self.lang)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            return _refused(replies.AUTH_MALFORMED, self.lang)
        return await self._authenticate(server, parts[1], parts[2], "PLAIN")

    async def auth_LOGIN(self, server: RelaySession, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth("Username:")
        else:
            try:
                login = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return _refused(replies.AUTH_BAD_BASE64, self.lang)
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password, "LOGIN")

    async def _authenticate(self, server: RelaySession, login_b: bytes, password_b: bytes, mech: str) -> AuthResult:
        try:
            login, password = login_b.decode("utf-8"), password_b.decode("utf-8")
        except UnicodeDecodeError:
            return _refused(replies.AUTH_NOT_UTF8, self.lang)
        mode = self.ctx.settings.server.auth
        if mode == "none":
            return _refused(replies.AUTH_NOT_OFFERED, self.lang)
        if mode == "local":
            return await self._local(server, login, password, mech)
        return await self._passthrough(server, login, password)

    async def _local(self, server: RelaySession, login: str, password: str, mech: str) -> AuthResult:
        loop = asyncio.get_running_loop()
        recent = self._failures(server.client_ip, loop.time())
        if len(recent) >= failures_allowed(self.ctx.settings.server.workers):
            # Not even checked: guessing from one address gets nowhere.
            log.warning("auth throttled: user=%s client=%s mechanism=%s", login, server.client_ip, mech)
            return _refused(replies.AUTH_THROTTLED, self.lang)
        stored = await self.ctx.store.user_hash(login)
        # An unknown user costs the same hash as a known one: the reply
        # time must not tell which names exist.
        ok = await loop.run_in_executor(None, verify_password, password, stored or unknown_user_hash())
        if not (ok and stored is not None):
            recent.append(loop.time())
            # One fixed line for fail2ban (examples/fail2ban/).
            log.warning("auth failed: user=%s client=%s mechanism=%s", login, server.client_ip, mech)
            await asyncio.sleep(FAILURE_DELAY)  # slows guessing; the client waits, nothing else does
            return _refused(replies.AUTH_FAILED, self.lang)
        server.user = login
        return AuthResult(success=True, auth_data=login)

    async def _passthrough(self, server: RelaySession, login: str, password: str) -> AuthResult:
        settings = self.ctx.settings
        if server.upstream is not None:
            await close_quietly(server.upstream)
            server.upstream = None
        try:
            up = await connect(settings.upstream, settings.server.hostname)
        except UpstreamUnavailable as exc:
            log.warning("session=%d auth: upstream unreachable: %s", server.sid, exc)
            return _refused(replies.AUTH_UNAVAILABLE, self.lang)
        try:
            await up.login(login, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            log.info("session=%d auth refused upstream for user %s: %d", server.sid, login, exc.code)
            await close_quietly(up)
            return AuthResult(success=False, handled=False, message=upstream_error(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("session=%d auth: upstream failed: %s", server.sid, describe(exc))
            await close_quietly(up)
            return _refused(replies.AUTH_UNAVAILABLE, self.lang)
        server.upstream, server.upstream_key = up, None  # the user's own login: never pooled
        server.user = login
        log.info("session=%d authenticated as %s (passthrough)", server.sid, login)
        return AuthResult(success=True, auth_data=login)
