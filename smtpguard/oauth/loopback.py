"""Catching the browser's redirect after sign-in: a one-shot listener on 127.0.0.1, or a pasted URL.

Headless servers have no browser: the user opens the sign-in address elsewhere and
pastes back the address the browser ended on (`http://localhost:PORT/?code=...`),
which `parse_redirect` reads the same way the listener would.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_DONE_PAGE = b"<!doctype html><title>smtpguard</title><p>Signed in. You can close this window.</p>\n"


def parse_redirect(url: str) -> dict[str, str]:
    """The query of the final redirect address, checked to be an authorization answer."""
    params = dict(parse_qsl(urlsplit(url.strip()).query))
    if "code" not in params and "error" not in params:
        raise ValueError("this address has no ?code= or ?error=: paste the whole address the browser ended on")
    return params


class _Handler(BaseHTTPRequestHandler):
    server: _OneShot

    def do_GET(self) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query))
        if "code" not in params and "error" not in params:
            self.send_error(404)  # a favicon or a stray request: keep waiting
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_DONE_PAGE)))
        self.end_headers()
        self.wfile.write(_DONE_PAGE)
        self.server.params = params
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query holds the authorization code: never print it


class _OneShot(HTTPServer):
    params: dict[str, str] | None = None
    done: threading.Event


class RedirectCatcher:
    """`with RedirectCatcher() as catcher:` use `catcher.redirect_uri(...)`, then `catcher.wait()`."""

    def __init__(self) -> None:
        self._server = _OneShot(("127.0.0.1", 0), _Handler)
        self._server.done = threading.Event()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="oauth-redirect", daemon=True
        )

    def redirect_uri(self, host: str = "localhost") -> str:
        """Microsoft registers `http://localhost`; Google desktop clients use `127.0.0.1`."""
        return f"http://{host}:{self.port}"

    def wait(self, timeout: float) -> dict[str, str]:
        if not self._server.done.wait(timeout) or self._server.params is None:
            raise TimeoutError(f"no sign-in came back within {timeout:.0f} s")
        return self._server.params

    def __enter__(self) -> RedirectCatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
