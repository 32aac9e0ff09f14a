"""What importing one dropped file gave, its report, and filing it in done/ or failed/."""

from __future__ import annotations

import csv
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from smtpguard.suppression import watchfs
from smtpguard.suppression.formats import FileStats, Reject
from smtpguard.suppression.ingest import DEFAULT_REASON as REASON
from smtpguard.suppression.store import AddResult
from smtpguard.suppression.watchfs import Folders, shown

log = logging.getLogger("smtpguard.watch")

DONE = "done"
FAILED = "failed"
REPORT_REJECTS = 200  # rejected rows listed in the report; the .rejects.csv has them all


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


_REPORT, _REJECTS = ".report.txt", ".rejects.csv"


def _unique(dir_fd: int, name: str) -> str:
    """`name`, or with a timestamp suffix when it, its report or rejects exist (dangling symlinks count)."""

    def free(n: str) -> bool:
        return not any(watchfs.exists(dir_fd, n + end) for end in ("", _REPORT, _REJECTS))

    if free(name):
        return name
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        tag = stamp if n == 1 else f"{stamp}-{n}"
        candidate = f"{stem}.{tag}{dot}{suffix}"
        if free(candidate):
            return candidate
    raise FileExistsError(f"{shown(name)}: no free name")


def render_report(out: Outcome, source: Path, moved: Path | None, move_error: str | None) -> str:
    """The human report: what happened, the counts, the rejected lines."""
    lines = [
        f"smtpguard watched-folder import of {shown(source.name)}",
        "",
        f"result:     {'FAILED: ' + out.error if out.error else 'imported'}",
        f"file:       {shown(str(moved if moved is not None else source))}",
    ]
    if move_error:
        lines.append(f"NOT MOVED:  {move_error} (it stays in the folder and is not imported again)")
    lines += [
        f"started:    {out.started}",
        f"duration:   {out.seconds:.2f} s",
        f"source:     {shown(source.stem)}",
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
        where = shown((moved if moved is not None else source).name + _REJECTS)
        lines += ["", f"Rejected rows (line number: text -- reason); all {len(out.rejects)} in {where}:"]
        for rej in out.rejects[:REPORT_REJECTS]:
            lines.append(f"  line {rej.line}: {rej.text!r} -- {rej.reason}")
        if len(out.rejects) > REPORT_REJECTS:
            lines.append(f"  ... {len(out.rejects) - REPORT_REJECTS} more")
    return "\n".join(lines) + "\n"


def _write_rejects(fh: TextIO, rejects: list[Reject]) -> None:
    rows = csv.writer(fh)
    rows.writerow(["line", "text", "reason"])
    rows.writerows((r.line, r.text, r.reason) for r in rejects)


def file_away(folder: Path, dirs: Folders, name: str, out: Outcome) -> tuple[Path | None, str | None]:
    """Move `name` to done/ or failed/ with its report(s); (new path, why not moved).

    The reports are in place before the file arrives, so whoever sees the file
    can read its report.
    """
    target_fd = dirs.done if out.target == DONE else dirs.failed
    moved: Path | None = None
    move_error: str | None = None
    target = name
    try:
        target = _unique(target_fd, name)
        _write_reports(folder, target_fd, target, name, out, folder / out.target / target, None)
        watchfs.move(dirs.root, name, target_fd, target)
        moved = folder / out.target / target
    except OSError as exc:
        move_error = f"cannot move it to {out.target}/: {exc.strerror or exc}"
        _write_reports(folder, target_fd, target, name, out, None, move_error)
    return moved, move_error


def _write_reports(
    folder: Path, dir_fd: int, target: str, name: str, out: Outcome, moved: Path | None, move_error: str | None
) -> None:
    """Write (or, after a failed move, rewrite) the report and rejects of `name` as `target`."""
    again = move_error is not None
    try:
        if out.rejects:
            watchfs.write_new(dir_fd, target + _REJECTS, lambda fh: _write_rejects(fh, out.rejects), replace=again)
        text = render_report(out, folder / name, moved, move_error)
        watchfs.write_new(dir_fd, target + _REPORT, lambda fh: fh.write(text), replace=again)
    except OSError as exc:
        log.error("watch: cannot write the report of %s in %s/: %s", shown(name), out.target, exc.strerror or exc)
