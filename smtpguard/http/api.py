"""The JSON API under /api/v1: a client of `smtpguard.service`, like the CLI.

Reads need a read token, writes a write token; every write is recorded in
the audit trail as an event whose `user` is "token:NAME".
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from smtpguard.http.auth import Caller, Reader, Writer
from smtpguard.service import InvalidInput, Service, parse_date
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


class AddOut(BaseModel):
    entry: str
    key: str
    kind: str
    added: bool


class RemoveIn(BaseModel):
    entries: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class RemoveOut(BaseModel):
    entry: str
    key: str
    removed: bool


class CheckIn(BaseModel):
    addresses: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class CheckOut(BaseModel):
    address: str
    blocked: bool
    entry: str | None = None
    key: str | None = None
    kind: str | None = None
    source: str | None = None
    reason: str | None = None
    added: str | None = None
    expires: str | None = None


class RejectOut(BaseModel):
    line: int
    text: str
    reason: str


class ImportOut(BaseModel):
    file: str
    source: str
    rows: int
    added: int
    duplicates: int
    invalid: int
    rejects: list[RejectOut]


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


class EventOut(BaseModel):
    time: str
    action: str
    sender: str
    recipient: str
    entry: str
    source: str
    client: str
    user: str
    message_id: str


class SourceCountOut(BaseModel):
    source: str
    kind: str
    count: int


class StatsOut(BaseModel):
    entries: list[SourceCountOut]
    total: int
    expired: int
    events_last_30_days: dict[str, int]


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


@router.post("/entries", response_model=list[AddOut], summary="Add one or many entries")
async def add_entries(request: Request, caller: Writer, body: AddIn) -> list[AddOut]:
    service = await _service(request)
    source = _name(body.source, "source")
    done = await service.add(body.entries, source=source, reason=body.reason or "unsubscribed", expires=body.expires)
    await _audit(request, caller, "api-add", [(r.key, source) for r in done if r.added])
    return [AddOut(entry=r.entry, key=r.key, kind=r.kind, added=r.added) for r in done]


@router.post("/entries/remove", response_model=list[RemoveOut], summary="Remove entries")
async def remove_entries(request: Request, caller: Writer, body: RemoveIn) -> list[RemoveOut]:
    service = await _service(request)
    done = await service.remove(body.entries)
    await _audit(request, caller, "api-remove", [(r.key, "") for r in done if r.removed])
    return [RemoveOut(entry=r.entry, key=r.key, removed=r.removed) for r in done]


@router.post("/check", response_model=list[CheckOut], summary="Would these recipients be refused?")
async def check(request: Request, caller: Reader, body: CheckIn) -> list[CheckOut]:
    service = await _service(request)
    return [CheckOut.model_validate(r, from_attributes=True) for r in await service.check(body.addresses)]


@router.get("/check", response_model=CheckOut, summary="Would this recipient be refused?")
async def check_one(
    request: Request, caller: Reader, address: Annotated[str, Query(min_length=1, max_length=512)]
) -> CheckOut:
    service = await _service(request)
    return CheckOut.model_validate((await service.check([address]))[0], from_attributes=True)


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
) -> ImportOut:
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
    rejects = [RejectOut(line=r.line, text=r.text, reason=r.reason) for r in done.rejects]
    return ImportOut(file=name, source=done.source, rows=done.rows, added=done.added,
                     duplicates=done.duplicates, invalid=done.invalid, rejects=rejects)  # fmt: skip


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


@router.get("/events", response_model=list[EventOut], summary="Audit events (filter by user, sender, date)")
async def events(
    request: Request,
    caller: Reader,
    user: Annotated[str | None, Query(max_length=200)] = None,
    sender: Annotated[str | None, Query(max_length=512)] = None,
    since: Annotated[str | None, Query(description="YYYY-MM-DD or an ISO time")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD: events before that day")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[EventOut]:
    service = await _service(request)
    end = parse_date(until, "until")
    found = await service.log(since=since, sender=sender, limit=None if user or end else limit)
    kept = [e for e in found if (not user or e.user == user) and (not end or e.time < end)]
    return [EventOut.model_validate(e, from_attributes=True) for e in kept[-limit:]]


@router.get("/stats", response_model=StatsOut, summary="Entries by source and kind, events of the last 30 days")
async def stats(request: Request, caller: Reader) -> StatsOut:
    s = await (await _service(request)).stats()
    return StatsOut(entries=[SourceCountOut(source=c.source, kind=c.kind, count=c.count) for c in s.entries],
                    total=s.total, expired=s.expired, events_last_30_days=s.events_last_30_days)  # fmt: skip
