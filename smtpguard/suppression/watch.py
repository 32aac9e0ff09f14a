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

Nothing follows a symlink (see watchfs): a symlinked folder, done/ or
failed/, or a file in their place, is refused with one error line and the
watcher waits until it is fixed.  Names are escaped in every log line.

The parsing runs in a memory-capped child process (watchchild: a bomb kills
the child, not the relay); `add_entries` hands the stream of entries it sends
to aiosqlite's worker thread (sqlite3 `executemany` pulls the rows there), so
the event loop keeps serving SMTP; tests/test_watch.py measures the loop's
longest stall during a big import.
Folder scans and report writing go through `asyncio.to_thread` because a
network folder can take long to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from smtpguard.config import Settings
from smtpguard.suppression import watchfs
from smtpguard.suppression.formats import COLUMN_HINT, ImportFormatError, detect_encoding
from smtpguard.suppression.ingest import DEFAULT_REASON as REASON
from smtpguard.suppression.store import AddResult, Store, StoreError, utc_now
from smtpguard.suppression.watchchild import ChildImport
from smtpguard.suppression.watchfs import FileId, FolderProblem, Folders, shown
from smtpguard.suppression.watchreport import DONE, FAILED, Outcome, file_away

__all__ = ["DONE", "FAILED", "UNTERMINATED_GRACE", "Outcome", "watch_folder"]

log = logging.getLogger("smtpguard.watch")


class WatchContext(Protocol):
    """What the watcher needs: the live settings (swapped on reload) and the list."""

    settings: Settings
    store: Store


WATCH_COLUMN_HINT = (
    "; name the address column email (or E-mail, Courriel, Adresse mail…) and drop the file again,"
    " or import it with `smtpguard import FILE --column NAME`"
)
UNTERMINATED_GRACE = 30.0  # seconds a file that looks cut off must stay unchanged
RETRY_MAX = 60.0  # seconds: cap of the back-off after a store failure

# Names writers use while a file is incomplete (browsers, WinSCP, rsync, editors).
_IGNORED_SUFFIXES = (".part", ".partial", ".filepart", ".tmp", ".temp", ".crdownload", ".download", "~")
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end of central directory: written last
_ZIP_TAIL = 22 + 65535  # the end record plus the longest ZIP comment
_LINE_ENDS = (b"\n", b"\r", b"\n\x00", b"\r\x00")  # UTF-16-LE puts the NUL after


def ignored(name: str) -> bool:
    """Names never imported: hidden files, Office locks, files still being downloaded."""
    lower = name.lower()
    return name.startswith((".", "~$")) or lower.endswith(_IGNORED_SUFFIXES)


def looks_unfinished(fd: int) -> str | None:
    """Why the file looks cut off by a writer still at work, or None when it looks whole."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
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


async def import_dropped(ctx: WatchContext, fd: int, name: str) -> Outcome:
    """Import the open file `name` as `smtpguard import FILE` does; StoreError propagates (transient).

    The file is parsed in a memory-capped child (watchchild); the entries it
    sends are written here, in one transaction that a failing child rolls back.
    """
    out = Outcome(name, utc_now())
    begin = time.monotonic()
    settings = ctx.settings
    rules = await ctx.store.rules()  # the list keys its own way, whatever [matching] says
    child = ChildImport(fd, Path(name).stem, REASON, out.started, rules, settings.watch.import_memory_mb)
    try:
        await asyncio.to_thread(child.start)
        out.result = await _add_all(ctx.store, child)
        out.stats, out.rejects = child.stats, child.rejects
    except ImportFormatError as exc:
        out.error = str(exc).replace(COLUMN_HINT, WATCH_COLUMN_HINT)  # no --column for a dropped file
        out.stats = child.stats
    except (UnicodeError, OSError) as exc:  # a read failing half-way, e.g. a vanished network share
        out.error = f"unreadable: {exc}"
    finally:
        await asyncio.to_thread(child.stop)
        out.seconds = time.monotonic() - begin
    if out.error is None and out.result is not None and out.result.rows == 0:
        if out.stats.invalid:
            out.error = f"none of its {out.stats.rows} rows holds a valid address; nothing was added"
        else:
            out.error = "no entries found in the file"
    return out


async def _add_all(store: Store, child: ChildImport) -> AddResult:
    """`store.add_entries` of the child's stream; cancelled, the child is killed first so the rollback need not wait."""
    adding = asyncio.create_task(store.add_entries(child.rows()))
    try:
        await asyncio.wait({adding})
    except asyncio.CancelledError:
        child.kill()  # ends the stream the store's thread is reading
        adding.cancel()
        with contextlib.suppress(BaseException):
            await adding
        raise
    return adding.result()


@dataclass
class _Seen:
    file_id: FileId
    since: float  # monotonic time this file_id was first seen


def _gone(exc: OSError) -> bool:
    """The file vanished or was swapped (for a symlink, another file) since the scan."""
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP


class Watcher:
    """The state of the scans: one per folder, reset when reload changes the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dirs: Folders | None = None  # re-opened at each scan
        self.seen: dict[str, _Seen] = {}
        self.handled: dict[str, FileId] = {}  # dealt with but still here (could not be moved)
        self.retry: dict[str, tuple[float, float]] = {}  # name -> (not before, delay)
        self.held: dict[str, FileId] = {}  # told the log we wait for these
        self.problem: str | None = None  # last folder error logged, to log it once

    def _open(self) -> dict[str, FileId]:
        self.close()
        self.dirs = Folders.open(self.folder, DONE, FAILED)
        return watchfs.scan(self.dirs.root, ignored)

    def close(self) -> None:
        if self.dirs is not None:
            self.dirs.close()
            self.dirs = None

    async def scan(self, interval: float) -> list[str]:
        """Names ready for import: unchanged across two scans at least `interval` apart."""
        try:
            files = await asyncio.to_thread(self._open)
        except FolderProblem as exc:
            return self._unusable(str(exc))
        except OSError as exc:
            return self._unusable(f"watch folder {self.folder}: {exc.strerror or exc}")
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

    def _unusable(self, problem: str) -> list[str]:
        self.close()
        if problem != self.problem:
            log.error("%s; nothing is imported from it until this is fixed", problem)
            self.problem = problem
        return []

    async def complete(self, name: str) -> bool:
        """True when `name` also looks whole, or has been left alone long enough anyway."""
        assert self.dirs is not None
        seen = self.seen[name]
        try:
            fd = await asyncio.to_thread(watchfs.open_file, self.dirs.root, name, seen.file_id)
        except OSError:
            return True  # gone or swapped: handle() looks again; unreadable: the import says so
        try:
            why = await asyncio.to_thread(looks_unfinished, fd)
        except OSError:
            return True
        finally:
            os.close(fd)
        if why is None or time.monotonic() - seen.since >= UNTERMINATED_GRACE:
            return True
        if self.held.get(name) != seen.file_id:
            self.held[name] = seen.file_id
            log.info(
                "watch: waiting for %s to be finished (%s); importing it anyway if unchanged for %.0f s",
                shown(name),
                why,
                UNTERMINATED_GRACE,
            )
        return False

    async def _import(self, ctx: WatchContext, name: str, fid: FileId) -> Outcome | None:
        """The outcome of importing `name`, None when it changed or went since the scan."""
        assert self.dirs is not None
        try:
            fd = await asyncio.to_thread(watchfs.open_file, self.dirs.root, name, fid)
        except OSError as exc:
            if _gone(exc):
                return None  # the next scans decide
            return Outcome(name, utc_now(), error=f"unreadable: {exc.strerror or exc}")
        try:
            return await import_dropped(ctx, fd, name)
        finally:
            os.close(fd)

    async def handle(self, ctx: WatchContext, name: str) -> None:
        assert self.dirs is not None
        dirs = self.dirs
        fid = self.seen[name].file_id
        try:
            out = await self._import(ctx, name, fid)
        except StoreError as exc:
            # The file is fine and nothing was written: try again later.
            delay = min(RETRY_MAX, max(self.retry.get(name, (0.0, 0.0))[1] * 2, 1.0))
            self.retry[name] = (time.monotonic() + delay, delay)
            log.error("watch: %s not imported, the store failed (retrying in %.0f s): %s", shown(name), delay, exc)
            return
        except Exception as exc:  # a bug must not stop the watcher, nor make it retry forever
            log.exception("watch: %s: unexpected error", shown(name))
            out = Outcome(name, utc_now(), error=f"internal error: {type(exc).__name__}: {exc}")
        if out is None:
            return
        self.retry.pop(name, None)
        if await asyncio.to_thread(watchfs.current_id, dirs.root, name) != fid:
            log.warning("watch: %s changed while it was imported; importing it again once it is stable", shown(name))
            del self.seen[name]
            return
        moved, move_error = await asyncio.to_thread(file_away, self.folder, dirs, name, out)
        where = f"{out.target}/{shown(moved.name)}" if moved is not None else f"left in place ({move_error})"
        if moved is None:
            self.handled[name] = fid
        self.seen.pop(name, None)
        s = out.stats
        if out.error is None and out.result is not None:
            log.info(
                'watch: imported %s: %d rows, %d added, %d duplicates, %d invalid, source "%s", %.1fs -> %s',
                shown(name),
                s.rows,
                out.result.added,
                out.result.duplicates,
                s.invalid,
                shown(Path(name).stem),
                out.seconds,
                where,
            )
        else:
            log.error("watch: %s not imported: %s -> %s", shown(name), out.error, where)
        if move_error is not None:
            log.error("watch: %s: %s; it will not be imported again until it changes", shown(name), move_error)


async def watch_folder(ctx: WatchContext) -> None:
    """Import the files dropped into `[watch] folder` until cancelled.

    Settings are read every round, so a reload may change the folder or the
    interval; with no folder configured the watcher idles.
    """
    watcher: Watcher | None = None
    try:
        while True:
            settings = ctx.settings.watch
            if watcher is not None and watcher.folder != settings.folder:
                watcher.close()
                watcher = None
            if settings.folder is not None:
                if watcher is None:
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
    finally:
        if watcher is not None:
            watcher.close()
