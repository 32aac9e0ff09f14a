"""What every page handler shares: options, sessions, rendering, and the guards.

A handler never sees a stack trace leave it: an unreadable store becomes the
"cannot be read" page (503), bad input its one-line reason (400).
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smtpguard.inputs import InvalidInput
from smtpguard.service import Service
from smtpguard.suppression.store import StoreError
from smtpguard.suppression.store.base import WebRole
from smtpguard.web.i18n import LANG_COOKIE, pick_language, translator
from smtpguard.web.imports import Jobs
from smtpguard.web.sessions import PRESIGN_COOKIE, SESSION_COOKIE, Session, Sessions, Throttle, same_token

log = logging.getLogger("smtpguard.web")

ServiceOpener = Callable[[], AbstractAsyncContextManager[Service]]


@dataclass(frozen=True, slots=True)
class SyncState:
    """One sync connector's last runs, as the HTTP side reports them (times ISO 8601, or None)."""

    source: str
    last_success: str | None = None
    last_failure: str | None = None
    error: str = ""


SyncStatus = Callable[[], Awaitable[Sequence[SyncState]]]


@dataclass
class Web:
    """The page's state: one per router."""

    open_service: ServiceOpener
    prefix: str = ""
    sync_status: SyncStatus | None = None
    secure_cookies: bool | None = None  # None: Secure exactly when the request came over TLS
    max_upload_bytes: int = 200 * 2**20
    sessions: Sessions = field(default_factory=Sessions)
    throttle: Throttle = field(default_factory=Throttle)
    jobs: Jobs = field(default_factory=Jobs)
    templates: jinja2.Environment = field(
        default_factory=lambda: jinja2.Environment(
            loader=jinja2.PackageLoader("smtpguard.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
    )

    # -- requests -----------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def lang(self, request: Request) -> str:
        return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))

    def secure(self, request: Request) -> bool:
        return self.secure_cookies if self.secure_cookies is not None else request.url.scheme == "https"

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=self.prefix or "/", httponly=True,
            samesite="strict" if name == SESSION_COOKIE else "lax", secure=self.secure(request),
        )  # fmt: skip

    def url(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(self.url(path), status_code=303)

    # -- rendering ----------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        session = self.session(request)
        lang = self.lang(request)
        presign = request.cookies.get(PRESIGN_COOKIE) or secrets.token_urlsafe(32)
        page = self.templates.get_template(name).render(
            t=translator(lang), lang=lang, session=session, base=self.prefix, path=request.url.path,
            csrf=session.csrf if session else presign, query=request.url.query, **values,
        )  # fmt: skip
        response = HTMLResponse(page, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        if session is None and PRESIGN_COOKIE not in request.cookies:
            self.set_cookie(request, response, PRESIGN_COOKIE, presign, None)
        return response

    def problem(self, request: Request, status: int, message: str, title_key: str = "error") -> HTMLResponse:
        return self.render(request, "problem.html", status, title_key=title_key, message=message)

    # -- guards -------------------------------------------------------------

    async def form_for_write(self, request: Request, role: WebRole = "editor") -> tuple[Session, dict[str, str]]:
        """The signed-in editor's form, its CSRF token checked; else Denied."""
        session = self.session(request)
        if session is None:
            raise Denied(401)
        form = await request.form()
        token = form.get("csrf")
        given = token if isinstance(token, str) else request.headers.get("x-csrf-token")
        if not same_token(given, session.csrf):
            log.warning("web: write refused without a valid CSRF token for %s from %s", session.user, client(request))
            raise Denied(403, "csrf.bad")
        if not session.may(role):
            log.warning("web: %s (%s) may not do %s", session.user, session.role, request.url.path)
            raise Denied(403, "forbidden")
        return session, {k: v for k, v in form.items() if isinstance(v, str)}


class Denied(Exception):
    def __init__(self, status: int, key: str = "") -> None:
        super().__init__(key)
        self.status = status
        self.key = key


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


P = ParamSpec("P")


def guarded(web: Web) -> Callable[[Callable[P, Awaitable[Response]]], Callable[P, Awaitable[Response]]]:
    """Wrap a handler (its first argument the Request): store failures and bad input become pages."""

    def wrap(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
        @functools.wraps(handler)
        async def run(*args: P.args, **kwargs: P.kwargs) -> Response:
            request = kwargs.get("request")
            assert isinstance(request, Request)
            try:
                return await handler(*args, **kwargs)
            except Denied as exc:
                if exc.status == 401:
                    return web.redirect("/login")
                return web.problem(request, exc.status, translator(web.lang(request))(exc.key))
            except InvalidInput as exc:
                return web.problem(request, 400, str(exc))
            except (StoreError, OSError) as exc:
                log.error("web: the store cannot be read: %s", exc)
                t = translator(web.lang(request))
                return web.problem(request, 503, t("store.down.help"), title_key="store.down")

        return run

    return wrap
