"""The watched folder: export files dropped there are imported, then filed away.

`watch_folder` scans `[watch] folder` every `interval` seconds.  A file is
imported once it looks complete, exactly as `smtpguard import FILE` would
(source = file stem, reason "unsubscribed", one transaction), then moved to
`done/` or `failed/` with `<name>.report.txt` beside it, and
`<name>.rejects.csv` when some rows were refused.

When is a file complete?  A folder has no "closed" signal a poller can see
(inotify misses writes over SMB/NFS), so:
- names that writers use while they work are never taken: dotfiles,
  `*.part`, `*.tmp`, `*.crdownload`, `~$*` Office locks, ... (the reliable
  way to deliver a file is to write it under such a name and rename it);
- the size and mtime must be unchanged across two consecutive scans, at
  least `interval` apart as measured by our own monotonic clock (a remote
  writer's mtime may come from a skewed clock);
- a text file whose last line has no line end, an XLSX without its ZIP
  central directory, or an empty file is a writer caught mid-way: it is held
  until unchanged for `UNTERMINATED_GRACE` seconds (some hand-written lists
  do lack the final newline, so it is imported then all the same).

Where does a file go?
- `done/`: it was read and at least one row held a valid entry (entries
  already listed count as valid); invalid rows are in the report.
- `failed/`: the file is unusable (ImportFormatError: no address column,
  binary, empty, legacy .xls...), unreadable, or not one of its rows was a
  valid entry -- almost certainly the wrong file or a wrong column, which an
  administrator must look at; nothing was added.
- left in place, retried with back-off: the store failed (locked, disk full);
  the file is fine and the import was rolled back.
- left in place: it changed while being imported (the import did no harm:
  adding entries twice is a no-op, and it is imported again once stable).
A file that cannot be moved (permissions) is remembered by (name, size,
mtime) and not imported again until it changes.

The parsing is CPU-bound and synchronous, but `import_file` runs it in a
worker thread, so the event loop only competes for the GIL and keeps serving SMTP;
tests/test_watch.py measures the loop's longest stall during a big import.
Folder scans and report writing go through `asyncio.to_thread` because a
network folder can take long to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from smtpguard.config import Settings
from smtpguard.suppression.formats import FileStats, ImportFormatError, Reject, detect_encoding, write_rejects
from smtpguard.suppression.ingest import DEFAULT_REASON as REASON
from smtpguard.suppression.ingest import import_file
from smtpguard.suppression.store import AddResult, Store, StoreError, utc_now

__all__ = ["DONE", "FAILED", "UNTERMINATED_GRACE", "watch_folder"]

log = logging.getLogger("smtpguard.watch")


class WatchContext(Protocol):
    """What the watcher needs: the live settings (swapped on reload) and the list."""

    settings: Settings
    store: Store


DONE = "done"
FAILED = "failed"
UNTERMINATED_GRACE = 30.0  # seconds a file that looks cut off must stay unchanged
REPORT_REJECTS = 200  # rejected rows listed in the report; the .rejects.csv has them all
RETRY_MAX = 60.0  # seconds: cap of the back-off after a store failure

# Names writers use while a file is incomplete (browsers, WinSCP, rsync, editors).
_IGNORED_SUFFIXES = (".part", ".partial", ".filepart", ".tmp", ".temp", ".crdownload", ".download", "~")
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end of central directory: written last
_ZIP_TAIL = 22 + 65535  # the end record plus the longest ZIP comment
_LINE_ENDS = (b"\n", b"\r", b"\n\x00", b"\r\x00")  # UTF-16-LE puts the NUL after

FileId = tuple[int, int]  # (size, mtime_ns): what "unchanged" compares


def ignored(name: str) -> bool:
    """Names never imported: hidden files, Office locks, files still being downloaded."""
    lower = name.lower()
    return name.startswith((".", "~$")) or lower.endswith(_IGNORED_SUFFIXES)


def _scan(folder: Path) -> dict[str, FileId]:
    """The regular files of `folder` that may be imports (not subfolders, not symlinks)."""
    found: dict[str, FileId] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if ignored(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone since listed
                continue
            if stat.S_ISREG(st.st_mode):
                found[entry.name] = (st.st_size, st.st_mtime_ns)
    return found


def _file_id(path: Path) -> FileId | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def looks_unfinished(path: Path) -> str | None:
    """Why `path` looks cut off by a writer still at work, or None when it looks whole."""
    with path.open("rb") as fh:
        head = fh.read(4096)
        if not head:
            return "the file is empty"
        if head.startswith(_ZIP_MAGIC):
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _ZIP_TAIL))
            return None if _ZIP_END in fh.read() else "the ZIP (XLSX) has no central directory yet"
        if detect_encoding(head) == "binary":
            return None  # no line structure to judge; the import will say what it is
        fh.seek(-min(4, fh.seek(0, os.SEEK_END)), os.SEEK_END)
        tail = fh.read()
    return None if tail.endswith(_LINE_ENDS) else "the last line has no line end"


@dataclass
class Outcome:
    """What importing one file gave; `error` set means it goes to failed/."""

    name: str
    started: str
    seconds: float = 0.0
    stats: FileStats = field(default_factory=FileStats)
    rejects: list[Reject] = field(default_factory=list)
    result: AddResult | None = None
    error: str | None = None

    @property
    def target(self) -> str:
        return FAILED if self.error is not None else DONE


async def import_dropped(ctx: WatchContext, path: Path) -> Outcome:
    """Import one file as `smtpguard import FILE` does; StoreError propagates (transient)."""
    out = Outcome(path.name, utc_now())
    begin = time.monotonic()
    try:
        # Cancelled (shutdown), the store stops reading rows at once and rolls back.
        done = await import_file(ctx.store, path, reason=REASON)
        out.stats, out.rejects, out.result = done.stats, done.rejects, done.result
    except ImportFormatError as exc:
        out.error = str(exc).replace(f"{path}: ", "", 1)
    except (UnicodeError, OSError) as exc:  # a read failing half-way, e.g. a vanished network share
        out.error = f"unreadable: {exc}"
    finally:
        out.seconds = time.monotonic() - begin
    if out.error is None and out.result is not None and out.result.rows == 0:
        if out.stats.invalid:
            out.error = f"none of its {out.stats.rows} rows holds a valid address; nothing was added"
        else:
            out.error = "no entries found in the file"
    return out


def _unique(folder: Path, name: str) -> Path:
    """`folder/name`, or with a timestamp suffix when it, its report or rejects exist."""

    def free(p: Path) -> bool:
        return not any(q.exists() for q in (p, _beside(p, ".report.txt"), _beside(p, ".rejects.csv")))

    candidate = folder / name
    if free(candidate):
        return candidate
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        tag = stamp if n == 1 else f"{stamp}-{n}"
        candidate = folder / f"{stem}.{tag}{dot}{suffix}"
        if free(candidate):
            return candidate
    raise FileExistsError(f"{folder / name}: no free name")


def _beside(path: Path, ending: str) -> Path:
    return path.with_name(path.name + ending)


def render_report(out: Outcome, source: Path, moved: Path | None, move_error: str | None) -> str:
    """The human report: what happened, the counts, the rejected lines."""
    lines = [
        f"smtpguard watched-folder import of {source.name}",
        "",
        f"result:     {'FAILED: ' + out.error if out.error else 'imported'}",
        f"file:       {moved if moved is not None else source}",
    ]
    if move_error:
        lines.append(f"NOT MOVED:  {move_error} (it stays in the folder and is not imported again)")
    lines += [
        f"started:    {out.started}",
        f"duration:   {out.seconds:.2f} s",
        f"source:     {source.stem}",
        f"reason:     {REASON}",
        "",
    ]
    s, r = out.stats, out.result
    lines.append(f"rows:       {s.rows}")
    if r is not None and out.error is None:
        lines += [f"added:      {r.added}", f"already listed: {r.duplicates}"]
    else:
        lines.append("added:      0 (nothing was changed)")
    lines += [f"invalid:    {s.invalid}", f"blank:      {s.blank}"]
    if out.rejects:
        where = _beside(moved if moved is not None else source, ".rejects.csv").name
        lines += ["", f"Rejected rows (line number: text -- reason); all {len(out.rejects)} in {where}:"]
        for rej in out.rejects[:REPORT_REJECTS]:
            lines.append(f"  line {rej.line}: {rej.text!r} -- {rej.reason}")
        if len(out.rejects) > REPORT_REJECTS:
            lines.append(f"  ... {len(out.rejects) - REPORT_REJECTS} more")
    return "\n".join(lines) + "\n"


def file_away(folder: Path, path: Path, out: Outcome) -> tuple[Path | None, str | None]:
    """Move `path` to done/ or failed/ and write its report(s); (new path, why not moved)."""
    target_dir = folder / out.target
    moved: Path | None = None
    move_error: str | None = None
    try:
        target_dir.mkdir(exist_ok=True)
        target = _unique(target_dir, path.name)
        path.rename(target)
        moved = target
    except OSError as exc:
        move_error = f"cannot move it to {out.target}/: {exc.strerror or exc}"
        target = target_dir / path.name
        with contextlib.suppress(OSError):
            target = _unique(target_dir, path.name)
    try:
        _beside(target, ".report.txt").write_text(render_report(out, path, moved, move_error), encoding="utf-8")
        if out.rejects:
            write_rejects(_beside(target, ".rejects.csv"), out.rejects)
    except OSError as exc:
        log.error("watch: cannot write the report of %s in %s/: %s", path.name, out.target, exc.strerror or exc)
    return moved, move_error


@dataclass
class _Seen:
    file_id: FileId
    since: float  # monotonic time this file_id was first seen


class Watcher:
    """The state of the scans: one per folder, reset when reload changes the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[str, _Seen] = {}
        self.handled: dict[str, FileId] = {}  # dealt with but still here (could not be moved)
        self.retry: dict[str, tuple[float, float]] = {}  # name -> (not before, delay)
        self.held: dict[str, FileId] = {}  # told the log we wait for these
        self.problem: str | None = None  # last folder error logged, to log it once

    def _prepare(self) -> None:
        for d in (self.folder, self.folder / DONE, self.folder / FAILED):
            d.mkdir(parents=True, exist_ok=True)

    async def scan(self, interval: float) -> list[str]:
        """Names ready for import: unchanged across two scans at least `interval` apart."""
        try:
            await asyncio.to_thread(self._prepare)
            files = await asyncio.to_thread(_scan, self.folder)
        except OSError as exc:
            problem = f"watch folder {self.folder}: {exc.strerror or exc}"
            if problem != self.problem:
                log.error("%s; nothing is imported from it until this is fixed", problem)
                self.problem = problem
            return []
        if self.problem is not None:
            log.info("watch folder %s is usable again", self.folder)
            self.problem = None
        now = time.monotonic()
        ready = []
        for name, fid in files.items():
            if self.handled.get(name) == fid:
                continue
            self.handled.pop(name, None)
            before = self.seen.get(name)
            if before is None or before.file_id != fid:
                self.seen[name] = _Seen(fid, now)
                continue
            if now - before.since >= interval and now >= self.retry.get(name, (0.0, 0.0))[0]:
                ready.append(name)
        for table in (self.seen, self.handled, self.retry, self.held):
            for name in [n for n in table if n not in files]:
                del table[name]
        return ready

    async def complete(self, name: str) -> bool:
        """True when `name` also looks whole, or has been left alone long enough anyway."""
        path = self.folder / name
        try:
            why = await asyncio.to_thread(looks_unfinished, path)
        except OSError:
            return True  # the import will report it as unreadable
        seen = self.seen[name]
        if why is None or time.monotonic() - seen.since >= UNTERMINATED_GRACE:
            return True
        if self.held.get(name) != seen.file_id:
            self.held[name] = seen.file_id
            log.info(
                "watch: waiting for %s to be finished (%s); importing it anyway if unchanged for %.0f s",
                name,
                why,
                UNTERMINATED_GRACE,
            )
        return False

    async def handle(self, ctx: WatchContext, name: str) -> None:
        path = self.folder / name
        fid = self.seen[name].file_id
        if await asyncio.to_thread(_file_id, path) != fid:
            return  # changed or gone since the scan: the next scans decide
        try:
            out = await import_dropped(ctx, path)
        except StoreError as exc:
            # The file is fine and nothing was written: try again later.
            delay = min(RETRY_MAX, max(self.retry.get(name, (0.0, 0.0))[1] * 2, 1.0))
            self.retry[name] = (time.monotonic() + delay, delay)
            log.error("watch: %s not imported, the store failed (retrying in %.0f s): %s", name, delay, exc)
            return
        except Exception as exc:  # a bug must not stop the watcher, nor make it retry forever
            log.exception("watch: %s: unexpected error", name)
            out = Outcome(name, utc_now(), error=f"internal error: {type(exc).__name__}: {exc}")
        self.retry.pop(name, None)
        if await asyncio.to_thread(_file_id, path) != fid:
            log.warning("watch: %s changed while it was imported; importing it again once it is stable", name)
            del self.seen[name]
            return
        moved, move_error = await asyncio.to_thread(file_away, self.folder, path, out)
        where = f"{out.target}/{moved.name}" if moved is not None else f"left in place ({move_error})"
        if moved is None:
            self.handled[name] = fid
        self.seen.pop(name, None)
        s = out.stats
        if out.error is None and out.result is not None:
            log.info(
                "watch: imported %s: %d rows, %d added, %d duplicates, %d invalid, source %r, %.1fs -> %s",
                name,
                s.rows,
                out.result.added,
                out.result.duplicates,
                s.invalid,
                path.stem,
                out.seconds,
                where,
            )
        else:
            log.error("watch: %s not imported: %s -> %s", name, out.error, where)
        if move_error is not None:
            log.error("watch: %s: %s; it will not be imported again until it changes", name, move_error)


async def watch_folder(ctx: WatchContext) -> None:
    """Import the files dropped into `[watch] folder` until cancelled.

    Settings are read every round, so a reload may change the folder or the
    interval; with no folder configured the watcher idles.
    """
    watcher: Watcher | None = None
    while True:
        settings = ctx.settings.watch
        if settings.folder is None:
            watcher = None
        else:
            if watcher is None or watcher.folder != settings.folder:
                watcher = Watcher(settings.folder)
                log.info("watching %s every %g s", settings.folder, settings.interval)
            try:
                for name in await watcher.scan(settings.interval):
                    if await watcher.complete(name):
                        await watcher.handle(ctx, name)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching: the next round may succeed
                log.exception("watch folder %s: unexpected error", settings.folder)
        await asyncio.sleep(settings.interval)
