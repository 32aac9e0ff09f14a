"""A stub identity provider on 127.0.0.1 over HTTPS (trustme): Entra-shaped and Google-shaped endpoints.

Entra: `/<tenant>/v2.0/.well-known/openid-configuration`, `/<tenant>/oauth2/v2.0/devicecode`,
`.../authorize` (signs in `signed_in_user` at once; PKCE S256 enforced), `.../token` for the
device_code, authorization_code, refresh_token and client_credentials grants.
Google: `/google/authorize`, `/google/token`. Refresh tokens rotate strictly here (the old one
stops working), so a client that did not store the newest one fails the next refresh.
Knobs: pending_polls, deny_device, access_lifetime, revoke_user(), expire_access_tokens(), outage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MS_SCOPE = "https://outlook.office.com/SMTP.Send"
APP_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"

Reply = tuple[int, dict[str, str], bytes]


def _json(status: int, body: dict[str, Any]) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _error(error: str, description: str = "") -> Reply:
    return _json(400, {"error": error, "error_description": description or error})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Grant:
    user: str
    client_id: str
    scope: str
    expires_at: float = 0.0


@dataclass
class StubIdP:
    ssl_context: ssl.SSLContext
    tenant: str = "contoso"
    tenant_id: str = "11111111-2222-3333-4444-555555555555"
    signed_in_user: str = "alice@contoso.test"  # who "signs in" at authorize / device approval
    pending_polls: int = 0  # device flow: answer authorization_pending this many times first
    deny_device: bool = False
    access_lifetime: int = 3600
    outage: bool = False  # every endpoint answers 503
    app_clients: dict[str, str] = field(default_factory=lambda: {"app-client": "app-secret"})
    google_clients: dict[str, str] = field(default_factory=lambda: {"g-client": "g-not-secret"})
    access: dict[str, Grant] = field(default_factory=dict)
    refresh: dict[str, Grant] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every token ever handed out
    revoked: set[str] = field(default_factory=set)
    grants_seen: list[str] = field(default_factory=list)
    hosts_seen: set[str] = field(default_factory=set)
    _devices: dict[str, str] = field(default_factory=dict)  # device_code -> requested scope
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    port: int = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> StubIdP:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _make_handler(self))
        server.daemon_threads = True
        server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server, self.port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), name="stub-idp", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.base}/{self.tenant}"

    # -- knobs and checks --------------------------------------------------------------
    def revoke_user(self, user: str) -> None:
        with self._lock:
            self.revoked.add(user)

    def expire_access_tokens(self) -> None:
        """As if the clock had passed every access token's expiry (the client's cache does not know)."""
        with self._lock:
            for grant in self.access.values():
                grant.expires_at = 0

    def validate(self, token: str, user: str) -> bool:
        """What the upstream asks: is this a live SMTP token of this user (or of an app)?"""
        with self._lock:
            grant = self.access.get(token)
        if grant is None or grant.expires_at < time.time() or grant.user in self.revoked:
            return False
        if grant.user.startswith("app:"):
            return APP_SCOPE in grant.scope.split()
        return grant.user.lower() == user.lower() and bool({MS_SCOPE, GOOGLE_SCOPE} & set(grant.scope.split()))

    # -- issuing -----------------------------------------------------------------------
    def _issue(self, grant: Grant, *, with_refresh: bool, nonce: str = "", google: bool = False) -> Reply:
        access, now = "at-" + secrets.token_urlsafe(24), time.time()
        body: dict[str, Any] = {"token_type": "Bearer", "scope": grant.scope, "expires_in": self.access_lifetime}
        body["access_token"] = access
        with self._lock:
            self.access[access] = Grant(grant.user, grant.client_id, grant.scope, now + self.access_lifetime)
            self.issued.append(access)
            if with_refresh:
                refresh = "rt-" + secrets.token_urlsafe(24)
                self.refresh[refresh] = Grant(grant.user, grant.client_id, grant.scope)
                self.issued.append(refresh)
                body["refresh_token"] = refresh
        if grant.user.startswith("app:"):
            return _json(200, body)
        claims = {"aud": grant.client_id, "iat": int(now), "exp": int(now) + 3600, "nonce": nonce}
        if google:
            claims |= {"iss": "https://accounts.google.test", "sub": grant.user, "email": grant.user}
        else:
            oid = hashlib.sha256(grant.user.encode()).hexdigest()[:32]
            claims |= {"iss": f"{self.base}/{self.tenant_id}/v2.0", "sub": oid, "oid": oid, "tid": self.tenant_id}
            claims |= {"preferred_username": grant.user, "name": grant.user, "ver": "2.0"}
            body["client_info"] = _b64url(json.dumps({"uid": oid, "utid": self.tenant_id}).encode())
        body["id_token"] = (
            ".".join(_b64url(json.dumps(part).encode()) for part in ({"alg": "none", "typ": "JWT"}, claims)) + "."
        )
        return _json(200, body)

    # -- endpoints ---------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], form: dict[str, str]) -> Reply:
        if self.outage:
            return _json(503, {"error": "temporarily_unavailable"})
        t = f"/{self.tenant}"
        routes = {
            ("GET", f"{t}/v2.0/.well-known/openid-configuration"): lambda: self._discovery(),
            ("POST", f"{t}/oauth2/v2.0/devicecode"): lambda: self._devicecode(form),
            ("GET", f"{t}/oauth2/v2.0/authorize"): lambda: self._authorize(query),
            ("POST", f"{t}/oauth2/v2.0/token"): lambda: self._token(form, google=False),
            ("GET", "/google/authorize"): lambda: self._authorize(query),
            ("POST", "/google/token"): lambda: self._token(form, google=True),
        }
        route = routes.get((method, path))
        return route() if route else _json(404, {"error": "not_found", "path": path})

    def _discovery(self) -> Reply:
        oauth = f"{self.authority}/oauth2/v2.0"
        return _json(
            200,
            {
                "issuer": f"{self.base}/{self.tenant_id}/v2.0",
                "authorization_endpoint": f"{oauth}/authorize",
                "token_endpoint": f"{oauth}/token",
                "device_authorization_endpoint": f"{oauth}/devicecode",
            },
        )

    def _devicecode(self, form: dict[str, str]) -> Reply:
        device_code = "dc-" + secrets.token_urlsafe(16)
        with self._lock:
            self._devices[device_code] = form.get("scope", "")
        return _json(
            200,
            {
                "device_code": device_code,
                "user_code": "ABCD-EFGH",
                "verification_uri": f"{self.base}/devicelogin",
                "expires_in": 900,
                "interval": 1,  # MSAL sleeps at least 1 s per poll anyway
                "message": f"To sign in, open {self.base}/devicelogin and enter the code ABCD-EFGH.",
            },
        )

    def _authorize(self, q: dict[str, str]) -> Reply:
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _error("invalid_request", "PKCE with S256 is required")
        code = "code-" + secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = dict(q, user=self.signed_in_user)
        location = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        return 302, {"Location": location}, b""

    def _scope(self, requested: str) -> str:
        return " ".join(s for s in requested.split() if s not in ("offline_access",))

    def _token(self, form: dict[str, str], *, google: bool) -> Reply:
        grant_type = form.get("grant_type", "")
        self.grants_seen.append(grant_type)
        client_id = form.get("client_id", "")
        if google and self.google_clients.get(client_id) != form.get("client_secret"):
            return _json(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if grant_type == DEVICE_GRANT:
            return self._device_token(form)
        if grant_type == "authorization_code":
            return self._code_token(form, google=google)
        if grant_type == "refresh_token":
            with self._lock:
                old = self.refresh.pop(form.get("refresh_token", ""), None)  # strict rotation
            if old is None or old.user in self.revoked:
                return _error("invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked.")
            return self._issue(old, with_refresh=True, google=google)
        if grant_type == "client_credentials":
            if self.app_clients.get(client_id) != form.get("client_secret"):
                return _json(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid secret."})
            return self._issue(Grant(f"app:{client_id}", client_id, form.get("scope", "")), with_refresh=False)
        return _error("unsupported_grant_type")

    def _device_token(self, form: dict[str, str]) -> Reply:
        code = form.get("device_code", "")
        if code not in self._devices:
            return _error("bad_verification_code")
        if self.deny_device:
            return _error("authorization_declined", "AADSTS70000: the user declined")
        if self.pending_polls > 0:
            self.pending_polls -= 1
            return _error("authorization_pending", "AADSTS70016: pending")
        scope = self._devices.pop(code)
        grant = Grant(self.signed_in_user, form.get("client_id", ""), self._scope(form.get("scope", scope)))
        return self._issue(grant, with_refresh=True)

    def _code_token(self, form: dict[str, str], *, google: bool) -> Reply:
        with self._lock:
            req = self._codes.pop(form.get("code", ""), None)  # single use
        if req is None or req.get("redirect_uri") != form.get("redirect_uri"):
            return _error("invalid_grant", "unknown code or redirect_uri mismatch")
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != req["code_challenge"]:
            return _error("invalid_grant", "PKCE verification failed")
        grant = Grant(req["user"], form.get("client_id", ""), self._scope(req.get("scope", "")))
        return self._issue(grant, with_refresh=True, nonce=req.get("nonce", ""), google=google)


def _make_handler(stub: StubIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str, form: dict[str, str]) -> None:
            url = urlsplit(self.path)
            stub.hosts_seen.add(self.headers.get("Host", ""))
            status, headers, body = stub.handle(method, url.path, dict(parse_qsl(url.query)), form)
            self.send_response(status)
            for name, value in (headers | {"Content-Length": str(len(body))}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply("GET", {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self._reply("POST", dict(parse_qsl(self.rfile.read(length).decode())))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
