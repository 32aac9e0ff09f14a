"""The JSON API under /api/v1: a client of `smtpguard.service`, like the CLI.

Reads need a read token, writes a write token; every write is recorded in
the audit trail as an event whose `user` is "token:NAME".
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from smtpguard.http.auth import Caller, Reader, Writer
from smtpguard.http.views import list_of, view
from smtpguard.inputs import InvalidInput, parse_date
from smtpguard.service import AddResult, CheckResult, ImportResult, RemoveResult, Service, StatsResult
from smtpguard.suppression.formats import ImportFormatError
from smtpguard.suppression.store import Event, Store, utc_now
from smtpguard.sync.sync import SyncRefused, sync_source


class Problem(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "Bad input: `detail` says what is wrong; nothing was written"},
    401: {"model": Problem, "description": "No token, or an unknown or revoked one"},
    403: {"model": Problem, "description": "A read token used for a write"},
    503: {"model": Problem, "description": "The list cannot be read or written right now"},
}
router = APIRouter(prefix="/api/v1", tags=["api"], responses=_ERRORS)
MAX_BATCH = 10_000  # entries in one add, remove or check
MAX_SYNC = 2_000_000


class EntryOut(BaseModel):
    key: str
    kind: str
    original: str
    source: str
    reason: str
    added: str
    expires: str | None


class EntryPage(BaseModel):
    entries: list[EntryOut]
    offset: int
    limit: int
    next_offset: int | None = Field(description="the offset of the next page, null on the last one")


class AddIn(BaseModel):
    entries: list[str] = Field(min_length=1, max_length=MAX_BATCH, description="addresses or @domains")
    source: str = Field("api", min_length=1, max_length=200)
    reason: str = Field("unsubscribed", max_length=500)
    expires: str | None = Field(None, description="YYYY-MM-DD: no longer blocks from that day on")


class RemoveIn(BaseModel):
    entries: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class CheckIn(BaseModel):
    addresses: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class SourceIn(BaseModel):
    entries: list[str] = Field(max_length=MAX_SYNC, description="the source's whole list")
    force: bool = Field(False, description="accept removing more than half of the source (or all of it)")


class SourceOut(BaseModel):
    source: str
    added: int
    removed: int
    unchanged: int
    elsewhere: int = Field(description="wanted, but already listed under another source")
    invalid: list[str]


# The service's results as the API answers them (the fields the API has always had).
AddOut = view("AddOut", AddResult)
RemoveOut = view("RemoveOut", RemoveResult)
CheckOut = view("CheckOut", CheckResult, drop=("allowed_by_exception",))
ImportOut = view("ImportOut", ImportResult)
EventOut = view("EventOut", Event, drop=("relay",))
StatsOut = view("StatsOut", StatsResult)


def _store(request: Request) -> Store:
    store: Store = request.app.state.http.store
    return store


async def _service(request: Request) -> Service:
    store = _store(request)
    return Service(store, await store.rules())


async def _audit(request: Request, caller: Caller, action: str, entries: list[tuple[str, str]]) -> None:
    """One event per (entry, source) written, with the token's name as the user."""
    now = utc_now()
    events = [Event(now, action, "", "", e[:300], s, caller.client, caller.user, "") for e, s in entries]  # type: ignore[arg-type]
    await _store(request).record_events(events)


def _name(text: str, what: str) -> str:
    text = text.strip()
    if not text or len(text) > 200 or any(c in text for c in "\r\n\0"):
        raise InvalidInput(f"{what} must be 1-200 characters on one line")
    return text


@router.get("/entries", response_model=EntryPage, summary="List entries (search, source, paging)")
async def list_entries(
    request: Request,
    caller: Reader,
    search: Annotated[str | None, Query(max_length=200)] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EntryPage:
    service = await _service(request)
    rows: list[EntryOut] = []
    found = service.entries(source=source, search=search)
    more = False
    async with contextlib.aclosing(found):
        i = 0
        async for e in found:
            if i >= offset + limit:
                more = True
                break
            if i >= offset:
                rows.append(EntryOut(**e._asdict()))
            i += 1
    return EntryPage(entries=rows, offset=offset, limit=limit, next_offset=offset + limit if more else None)


@router.post("/entries", response_model=list_of(AddOut), summary="Add one or many entries")
async def add_entries(request: Request, caller: Writer, body: AddIn) -> list[AddResult]:
    service = await _service(request)
    source = _name(body.source, "source")
    done = await service.add(body.entries, source=source, reason=body.reason or "unsubscribed", expires=body.expires)
    await _audit(request, caller, "api-add", [(r.key, source) for r in done if r.added])
    return done


@router.post("/entries/remove", response_model=list_of(RemoveOut), summary="Remove entries")
async def remove_entries(request: Request, caller: Writer, body: RemoveIn) -> list[RemoveResult]:
    service = await _service(request)
    done = await service.remove(body.entries)
    await _audit(request, caller, "api-remove", [(r.key, "") for r in done if r.removed])
    return done


@router.post("/check", response_model=list_of(CheckOut), summary="Would these recipients be refused?")
async def check(request: Request, caller: Reader, body: CheckIn) -> list[CheckResult]:
    service = await _service(request)
    return await service.check(body.addresses)


@router.get("/check", response_model=CheckOut, summary="Would this recipient be refused?")
async def check_one(
    request: Request, caller: Reader, address: Annotated[str, Query(min_length=1, max_length=512)]
) -> CheckResult:
    service = await _service(request)
    return (await service.check([address]))[0]


@router.post("/imports", response_model=ImportOut, summary="Import a file (CSV, text, XLSX), as `smtpguard import`")
async def import_file(
    request: Request,
    caller: Writer,
    file: Annotated[UploadFile, File(description="the export: CSV, text list or XLSX")],
    source: Annotated[str | None, Form(max_length=200)] = None,
    reason: Annotated[str, Form(max_length=500)] = "unsubscribed",
    expires: Annotated[str | None, Form()] = None,
    column: Annotated[str | None, Form(max_length=200)] = None,
    dry_run: Annotated[bool, Form()] = False,
) -> ImportResult:
    service = await _service(request)
    parse_date(expires, "expires")
    name = Path(file.filename or "upload.csv").name or "upload.csv"
    with tempfile.TemporaryDirectory(prefix="smtpguard-upload-") as folder:
        path = Path(folder) / name
        with path.open("wb") as out:
            while chunk := await file.read(1 << 20):
                out.write(chunk)
        try:
            done = await service.import_file(
                path, source=_name(source, "source") if source else None, reason=reason or "unsubscribed",
                expires=expires, column=column, dry_run=dry_run,
            )  # fmt: skip
        except ImportFormatError as exc:
            raise InvalidInput(str(exc).replace(str(path), name)) from None
    if not dry_run:
        await _audit(request, caller, "api-import", [(f"{name}: {done.added} added", done.source)])
    return dataclasses.replace(done, file=name)


@router.put("/sources/{source}", response_model=SourceOut, summary="Make a source's entries exactly this list")
async def put_source(request: Request, caller: Writer, source: str, body: SourceIn) -> SourceOut:
    source = _name(source, "source")
    store = _store(request)
    try:
        done = await sync_source(store, source, body.entries, rules=await store.rules(), force=body.force)
    except SyncRefused as exc:
        raise InvalidInput(str(exc)) from None
    summary = f"sync: +{done.added} -{done.removed} ={done.unchanged}"
    await _audit(request, caller, "api-sync", [(summary, source)])
    return SourceOut(source=done.source, added=done.added, removed=done.removed, unchanged=done.unchanged,
                     elsewhere=done.elsewhere, invalid=done.invalid)  # fmt: skip


@router.get("/events", response_model=list_of(EventOut), summary="Audit events (filter by user, sender, date)")
async def events(
    request: Request,
    caller: Reader,
    user: Annotated[str | None, Query(max_length=200)] = None,
    sender: Annotated[str | None, Query(max_length=512)] = None,
    since: Annotated[str | None, Query(description="YYYY-MM-DD or an ISO time")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD: events before that day")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[Event]:
    service = await _service(request)
    end = parse_date(until, "until")
    found = await service.log(since=since, sender=sender, limit=None if user or end else limit)
    kept = [e for e in found if (not user or e.user == user) and (not end or e.time < end)]
    return kept[-limit:]


@router.get("/stats", response_model=StatsOut, summary="Entries by source and kind, events of the last 30 days")
async def stats(request: Request, caller: Reader) -> StatsResult:
    return await (await _service(request)).stats()
