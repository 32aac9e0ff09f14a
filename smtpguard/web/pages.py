"""The page's routes, as one `APIRouter` the HTTP app includes.

    app.include_router(smtpguard.web.router(settings, prefix="/page"))

Every route calls `smtpguard.service` (the same layer as the CLI and the
JSON API); nothing here reads or writes the store directly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from smtpguard.inputs import InvalidInput
from smtpguard.service import Service, open_service
from smtpguard.suppression.formats import ImportFormatError
from smtpguard.suppression.store import EntryRow, Event
from smtpguard.web import activity
from smtpguard.web.context import Denied, ServiceOpener, SyncStatus, Web, client, guarded
from smtpguard.web.i18n import LANG_COOKIE, LANGUAGES, translator
from smtpguard.web.imports import Job, detect
from smtpguard.web.sessions import PRESIGN_COOKIE, SESSION_COOKIE, same_token

if TYPE_CHECKING:
    from smtpguard.config import Settings

log = logging.getLogger("smtpguard.web")
MESSAGES = ("added", "already", "removed", "not_listed")
STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}


def router(
    settings: Settings | None = None,
    *,
    service: ServiceOpener | None = None,
    prefix: str = "",
    sync_status: SyncStatus | None = None,
    secure_cookies: bool | None = None,
) -> APIRouter:
    """The page under `prefix` (e.g. "/page"), over `service` (a factory of open `Service`s)
    or, by default, the store `settings` names, opened per request."""
    if service is None:
        if settings is None:
            raise ValueError("router() needs settings or a service factory")
        configured = settings

        def service() -> AbstractAsyncContextManager[Service]:
            return open_service(configured, create=False)

    web = Web(service, prefix.rstrip("/"), sync_status, secure_cookies)
    api = APIRouter(prefix=web.prefix, include_in_schema=False)
    add_session_routes(api, web)
    add_list_routes(api, web)
    add_import_routes(api, web)
    add_report_routes(api, web)
    return api


def add_session_routes(api: APIRouter, web: Web) -> None:
    @api.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return Response(status_code=404)
        body = resources.files("smtpguard.web").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    @api.get("/login")
    @guarded(web)
    async def login_form(request: Request) -> Response:
        return web.render(request, "login.html", error="")

    @api.post("/login")
    @guarded(web)
    async def login(request: Request) -> Response:
        form = await request.form()
        address = client(request)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        if not same_token(str(form.get("csrf", "")), request.cookies.get(PRESIGN_COOKIE)):
            raise Denied(403, "csrf.bad")
        if web.throttle.blocked(address):
            log.warning("web: sign-in refused for %r from %s: too many attempts", name, address)
            return web.render(request, "login.html", 429, error="signin.throttled")
        async with web.open_service() as svc:
            role = await svc.sign_in(name, password)
        if role is None:
            web.throttle.failed(address)
            log.warning("web: failed sign-in for %r from %s", name, address)
            return web.render(request, "login.html", 401, error="signin.bad")
        web.throttle.succeeded(address)
        session = web.sessions.open(name, role)
        log.info("web: %s signed in (%s) from %s", name, role, address)
        response = web.redirect("/")
        web.set_cookie(request, response, SESSION_COOKIE, session.id, None)
        return response

    @api.post("/logout")
    @guarded(web)
    async def logout(request: Request) -> Response:
        session, _ = await web.form_for_write(request, "viewer")
        web.sessions.close(session.id)
        response = web.redirect("/login")
        response.delete_cookie(SESSION_COOKIE, path=web.prefix or "/")
        return response

    @api.get("/lang/{code}")
    async def language(request: Request, code: str, next: str = "/") -> Response:
        local = next.startswith(web.prefix + "/") and not next.startswith("//") and "\\" not in next
        back = next if local else web.url("/")  # never off-site: a browser reads "/\\" as "//"
        response = Response(status_code=303, headers={"Location": back})
        if code in LANGUAGES:
            web.set_cookie(request, response, LANG_COOKIE, code, 365 * 86400)
        return response


def add_list_routes(api: APIRouter, web: Web) -> None:
    @api.get("/")
    @guarded(web)
    async def home(request: Request, q: str = "", msg: str = "") -> Response:
        if web.session(request) is None:
            raise Denied(401)
        found, entries, error = None, [], ""
        if q.strip():
            async with web.open_service() as svc:
                try:
                    found = (await svc.check([q.strip()]))[0]
                except InvalidInput as exc:
                    error = str(exc)
                entries = [e async for e in limited(svc.entries(search=q.strip()), 50)]
        return web.render(
            request, "list.html", q=q, found=found, entries=entries, error=error,
            msg=msg if msg in MESSAGES else "",
        )  # fmt: skip

    @api.post("/add")
    @guarded(web)
    async def add(request: Request) -> Response:
        session, form = await web.form_for_write(request)
        entry = form.get("entry", "").strip()
        async with web.open_service() as svc:
            done = await svc.add([entry], source="web", reason=form.get("reason", "").strip() or "added by hand")
        log.info("web: %s added %s", session.user, entry)
        return web.redirect(f"/?q={quote(entry)}&msg={'added' if done[0].added else 'already'}")

    @api.get("/remove")
    @guarded(web)
    async def remove_confirm(request: Request, entry: str = "") -> Response:
        session = web.session(request)
        if session is None:
            raise Denied(401)
        if not session.may("editor"):
            raise Denied(403, "forbidden")
        return web.render(request, "remove.html", entry=entry)

    @api.post("/remove")
    @guarded(web)
    async def remove(request: Request) -> Response:
        session, form = await web.form_for_write(request)
        entry = form.get("entry", "").strip()
        async with web.open_service() as svc:
            done = await svc.remove([entry])
        log.info("web: %s removed %s", session.user, entry)
        return web.redirect(f"/?q={quote(entry)}&msg={'removed' if done[0].removed else 'not_listed'}")


def add_import_routes(api: APIRouter, web: Web) -> None:
    def job_for(request: Request, job_id: str) -> tuple[str, Job]:
        session = web.session(request)
        if session is None:
            raise Denied(401)
        job = web.jobs.get(job_id, session.user)
        if job is None:
            raise InvalidInput(web_t(web, request)("import.gone"))
        return session.user, job

    @api.get("/import")
    @guarded(web)
    async def import_form(request: Request) -> Response:
        session = web.session(request)
        if session is None:
            raise Denied(401)
        return web.render(request, "import.html", detection=None, job=None, error="")

    @api.post("/import")
    @guarded(web)
    async def upload(request: Request) -> Response:
        session, _ = await web.form_for_write(request)
        form = await request.form()  # parsed once by Starlette, cached on the request
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise InvalidInput("choose a file to import")
        job = await web.jobs.upload(session.user, file.filename, chunks(file), web.max_upload_bytes)
        try:
            detection = detect(job.path, job.name)
        except ImportFormatError as exc:
            web.jobs.drop(job.id)
            return web.render(request, "import.html", 400, detection=None, job=None, error=str(exc))
        return web.render(request, "import.html", detection=detection, job=job, error="")

    @api.post("/import/{job_id}/start")
    @guarded(web)
    async def start(request: Request, job_id: str) -> Response:
        session, form = await web.form_for_write(request)
        _, job = job_for(request, job_id)
        source = form.get("source", "").strip() or job.name.rsplit(".", 1)[0]
        web.jobs.start(job, web.open_service, source, form.get("reason", "").strip() or "unsubscribed")
        log.info("web: %s imports %s into source %s", session.user, job.name, source)
        return web.redirect(f"/import/{job_id}")

    @api.get("/import/{job_id}")
    @guarded(web)
    async def status(request: Request, job_id: str) -> Response:
        _, job = job_for(request, job_id)
        return web.render(request, "import_status.html", job=job)

    @api.get("/import/{job_id}/progress")
    @guarded(web)
    async def progress(request: Request, job_id: str) -> Response:
        _, job = job_for(request, job_id)
        return JSONResponse({"state": job.state, "percent": job.percent, "read": job.done, "size": job.size})

    @api.get("/import/{job_id}/rejects.csv")
    @guarded(web)
    async def rejects(request: Request, job_id: str) -> Response:
        _, job = job_for(request, job_id)
        return Response(
            job.rejects_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="refused-rows.csv"'},
        )


def add_report_routes(api: APIRouter, web: Web) -> None:
    @api.get("/sources")
    @guarded(web)
    async def sources(request: Request) -> Response:
        if web.session(request) is None:
            raise Denied(401)
        async with web.open_service() as svc:
            stats = await svc.stats()
        counts: dict[str, int] = {}
        for row in stats.entries:
            counts[row.source] = counts.get(row.source, 0) + row.count
        syncs = {s.source: s for s in (await web.sync_status() if web.sync_status else ())}
        names = sorted(set(counts) | set(syncs))
        return web.render(request, "sources.html", names=names, counts=counts, syncs=syncs, total=stats.total)

    async def filtered(request: Request, person: str, start: str, end: str) -> tuple[activity.Filter, list[Event]]:
        if web.session(request) is None:
            raise Denied(401)
        f = activity.Filter.parse(person, start, end)
        async with web.open_service() as svc:
            return f, await activity.events(svc, f)

    @api.get("/activity")
    @guarded(web)
    async def activity_page(request: Request, person: str = "", start: str = "", end: str = "") -> Response:
        f, found = await filtered(request, person, start, end)
        t = web_t(web, request)
        chart = activity.chart_svg(activity.per_day(found), t("activity.per_day"))
        return web.render(request, "activity.html", f=f, events=found[:500], total=len(found), chart=chart)

    @api.get("/activity.csv")
    @guarded(web)
    async def activity_csv(request: Request, person: str = "", start: str = "", end: str = "") -> Response:
        _, found = await filtered(request, person, start, end)
        return Response(
            activity.to_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="smtpguard-activity.csv"'},
        )


def web_t(web: Web, request: Request) -> Callable[..., str]:
    return translator(web.lang(request))


def quote(text: str) -> str:
    from urllib.parse import quote as q

    return q(text, safe="@")


async def chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while block := await file.read(1 << 20):
        yield block


async def limited(rows: AsyncGenerator[EntryRow], n: int) -> AsyncIterator[EntryRow]:
    async with aclosing(rows) as found:
        i = 0
        async for row in found:
            yield row
            i += 1
            if i >= n:
                break
