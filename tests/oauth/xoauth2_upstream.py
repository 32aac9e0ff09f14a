"""An aiosmtpd upstream that accepts ONLY XOAUTH2 with a live token the stub identity provider issued.

Refusals look like Exchange Online's (`535 5.7.3 Authentication unsuccessful` at once) or,
with `google_style`, like Gmail's (`334 <base64 JSON>`, the client answers empty, then 535 5.7.8).
STARTTLS is required before AUTH (trustme certificate), PLAIN and LOGIN are not offered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..smtp_fixtures import Certs, serve_smtp
from .stub_idp import StubIdP

MS_REFUSAL = "535 5.7.3 Authentication unsuccessful [stub]"
GOOGLE_REFUSAL = "535 5.7.8 Username and Password not accepted [stub]"
GOOGLE_CHALLENGE = b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'


def parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    """(user, token) from the decoded `user=U^Aauth=Bearer T^A^A`, or None if malformed."""
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        return None
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    if "user" not in fields or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth.removeprefix("Bearer ")


@dataclass
class XOAuth2Upstream:
    idp: StubIdP
    google_style: bool = False
    logins: list[str] = field(default_factory=list)
    refused: int = 0
    delivered: list[tuple[str, list[str]]] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        try:  # the initial response (aiosmtplib sends one), or the answer to an empty challenge
            blob = base64.b64decode(args[1], validate=True) if len(args) > 1 else await server.challenge_auth("")
        except binascii.Error:
            blob = b""
        parsed = parse_xoauth2(blob) if isinstance(blob, bytes) else None
        if parsed is None or not self.idp.validate(parsed[1], parsed[0]):
            self.refused += 1
            if self.google_style:
                await server.challenge_auth(GOOGLE_CHALLENGE)  # the client's empty answer is ignored
                return AuthResult(success=False, handled=False, message=GOOGLE_REFUSAL)
            return AuthResult(success=False, handled=False, message=MS_REFUSAL)
        self.logins.append(parsed[0])
        return AuthResult(success=True, auth_data=LoginPassword(parsed[0].encode(), b""))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return "250 2.0.0 Ok: queued"

    async def start(self, certs: Certs) -> XOAuth2Upstream:
        self.server, self.port = await serve_smtp(
            self,
            hostname="outlook.test",
            tls_context=certs.server_context(),
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
        )
        return self
