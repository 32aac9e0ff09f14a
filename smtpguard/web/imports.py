"""Imports from the page: what detection finds in an uploaded file, and the running jobs.

The import itself is `Service.import_file`, the one import path; this
module only keeps the uploaded file, shows what the importer will see, and
follows a running import for the progress bar.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from smtpguard.inputs import InvalidInput
from smtpguard.service import ImportResult, Service
from smtpguard.suppression.formats import (
    SAMPLE_BYTES,
    ImportFormatError,
    detect_encoding,
    sniff_layout,
    total_size,
    write_rejects,
)
from smtpguard.suppression.store import StoreError

PREVIEW_ROWS = 5
DELIMITER_NAMES = {",": "comma ,", ";": "semicolon ;", "\t": "tab", "|": "pipe |"}


@dataclass(frozen=True, slots=True)
class Detection:
    encoding: str
    delimiter: str  # shown name, "" for a text list or a workbook
    column: str  # header of the address column
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # the first data rows


def detect(path: Path, name: str) -> Detection:
    """What the importer will find in the file (ImportFormatError: why it cannot be read)."""
    with path.open("rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    if not head:
        raise ImportFormatError(f"{name}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return Detection("XLSX", "", "", (), ())
    final = len(head) < SAMPLE_BYTES
    encoding = detect_encoding(head, final=final)
    if encoding == "binary":
        raise ImportFormatError(f"{name}: this is not a text, CSV or XLSX file")
    text = codecs.getincrementaldecoder(encoding)("replace").decode(head, final).removeprefix("\ufeff")
    layout = sniff_layout(text, final=final, name=name)
    if layout.kind == "text":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return Detection(encoding, "", "", (), tuple((ln,) for ln in lines[:PREVIEW_ROWS]))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter, skipinitialspace=True)
    rows = [r for r in reader]
    header = tuple(rows[layout.skip - 1]) if layout.skip else ()
    data = tuple(tuple(r) for r in rows[layout.skip :] if any(c.strip() for c in r))[:PREVIEW_ROWS]
    column = header[layout.column] if layout.column < len(header) else f"#{layout.column + 1}"
    return Detection(encoding, DELIMITER_NAMES.get(layout.delimiter, layout.delimiter), column.strip(), header, data)


@dataclass
class Job:
    """One uploaded file, from its preview to the end of its import."""

    id: str
    owner: str
    name: str
    folder: Path
    size: int
    done: int = 0
    state: str = "uploaded"  # uploaded, running, done, failed
    result: ImportResult | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> Path:
        return self.folder / "upload"

    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        return min(99, self.done * 100 // self.size) if self.size else 0

    def rejects_csv(self) -> bytes:
        out = self.folder / "rejects.csv"
        write_rejects(out, self.result.rejects if self.result else ())
        return out.read_bytes()


ServiceOpener = Callable[[], AbstractAsyncContextManager[Service]]


class Jobs:
    """The page's uploads, kept in a private temporary folder each, dropped after `keep` seconds."""

    def __init__(self, keep: float = 3600.0, limit: int = 20) -> None:
        self.keep = keep
        self.limit = limit
        self._jobs: dict[str, Job] = {}

    async def upload(self, owner: str, name: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Job:
        self._expire()
        folder = Path(tempfile.mkdtemp(prefix="smtpguard-web-"))
        job = Job(secrets.token_urlsafe(16), owner, Path(name).name or "upload", folder, 0)
        self._jobs[job.id] = job
        with job.path.open("wb") as fh:
            async for chunk in chunks:
                job.size += len(chunk)
                if job.size > max_bytes:
                    self.drop(job.id)
                    raise InvalidInput(f"{job.name}: larger than the {max_bytes // 2**20} MB a page upload may be")
                fh.write(chunk)
        return job

    def get(self, job_id: str, owner: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def start(self, job: Job, open_service: ServiceOpener, source: str, reason: str) -> None:
        if job.state != "uploaded":
            return
        job.state = "running"
        job.size = total_size(job.path) or job.size

        def progress(read: int) -> None:  # bytes read since the last call; from the parsing thread (one writer)
            job.done += read

        async def run() -> None:
            try:
                async with open_service() as service:
                    job.result = await service.import_file(job.path, source=source, reason=reason, progress=progress)
                job.state = "done"
            except (ImportFormatError, InvalidInput, StoreError, OSError) as exc:
                job.error = str(exc).replace(str(job.path), job.name)
                job.state = "failed"

        job.task = asyncio.get_running_loop().create_task(run())

    def drop(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            if job.task is not None and not job.task.done():
                job.task.cancel()
            shutil.rmtree(job.folder, ignore_errors=True)

    def _expire(self) -> None:
        now = time.monotonic()
        old = [j.id for j in self._jobs.values() if now - j.started > self.keep and j.state != "running"]
        finished = sorted((j for j in self._jobs.values() if j.state in ("done", "failed")), key=lambda j: j.started)
        old += [j.id for j in finished[: max(0, len(self._jobs) - self.limit)]]
        for job_id in set(old):
            self.drop(job_id)

    def close(self) -> None:
        for job_id in list(self._jobs):
            self.drop(job_id)
