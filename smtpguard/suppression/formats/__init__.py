"""Stream suppression entries out of export files: CSV, plain text and XLSX.

Files come straight from the export buttons of prospecting tools, so the
format, encoding, delimiter and address column are detected from the
content, never from the file name.  Detection looks at the first 64 KiB only;
the rows are then streamed, so a million-row file is never held in memory.

A bad row never stops a file: it is counted in `FileStats.invalid` and, when
the caller passes a list, recorded as a `Reject` with its line number.  Only a
file that is unusable as a whole raises `ImportFormatError`.

The per-row path is the cost of a big import, so the loops in `csv_entries`
and `text_entries` are written flat: plain ASCII addresses go straight to
`address_key` (which has its own fast path) and everything unusual falls to
`RowReader`, the slow and careful path.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.formats.rows import RowReader
from smtpguard.suppression.formats.sniff import (
    COLUMN_HINT,
    OLE_MAGIC,
    SAMPLE_BYTES,
    ZIP_MAGIC,
    FileStats,
    ImportFormatError,
    Layout,
    Reject,
    decode_errors,
    decode_sample,
    detect_encoding,
    find_column,
    sniff_delimiter,
    sniff_layout,
)
from smtpguard.suppression.formats.text import csv_entries, text_entries
from smtpguard.suppression.formats.xlsx import check_xlsx, open_xlsx, xlsx_entries
from smtpguard.suppression.store import EntryRow

__all__ = [
    "COLUMN_HINT",
    "SAMPLE_BYTES",
    "FileStats",
    "ImportFormatError",
    "Layout",
    "Reject",
    "detect_encoding",
    "find_column",
    "iter_entries",
    "check_xlsx",
    "sniff_delimiter",
    "sniff_layout",
    "total_size",
    "write_rejects",
]


# --- reading -------------------------------------------------------------------


def iter_entries(
    path: Path,
    *,
    rules: MatchRules,
    source: str,
    reason: str,
    added: str,
    expires: str | None = None,
    column: str | None = None,
    stats: FileStats,
    rejects: list[Reject] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[EntryRow]:
    """The entries of one export file, streamed; bad rows go to `stats` / `rejects`.

    `progress(n)` gets the bytes (XLSX: rows) read since its previous call.
    Raises ImportFormatError (on first iteration) when the file is unusable.
    """
    path = Path(path)
    rows = RowReader(rules, (source, reason, expires), stats, rejects)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ImportFormatError(f"{path}: {exc.strerror or exc}") from None
    with fh:
        head = fh.read(SAMPLE_BYTES)
        if head.startswith(ZIP_MAGIC):
            fh.close()
            yield from xlsx_entries(path, rows, added, column, progress)
            return
        if head.startswith(OLE_MAGIC):
            raise ImportFormatError(f"{path}: a legacy Excel .xls file; save it as .xlsx or CSV")
        if not head:
            raise ImportFormatError(f"{path}: the file is empty")
        final = len(head) < SAMPLE_BYTES
        encoding = detect_encoding(head, final=final)
        if encoding == "binary":
            raise ImportFormatError(f"{path}: binary content, not a CSV, text or XLSX export")
        sample = decode_sample(head, encoding, final)
        layout = sniff_layout(sample, final=final, column=column, name=str(path))
        fh.seek(0)
        newline = "" if layout.kind == "csv" else None
        text = io.TextIOWrapper(fh, encoding=encoding, errors=decode_errors(), newline=newline)
        if layout.kind == "csv":
            yield from csv_entries(text, fh, layout, rows, added, progress)
        else:
            yield from text_entries(text, fh, rows, added, progress)


# --- around the import -----------------------------------------------------------


def total_size(path: Path) -> int:
    """The progress total of `iter_entries`: bytes, or rows for an XLSX file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            is_zip = fh.read(4) == ZIP_MAGIC
        if not is_zip:
            return path.stat().st_size
    except OSError:  # the import itself will say what is wrong
        return 0
    try:
        book = open_xlsx(path)
    except ImportFormatError:  # the import itself will say what is wrong
        return 0
    try:
        return int(book.worksheets[0].max_row or 0) if book.worksheets else 0
    finally:
        book.close()


def write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    """The rows that were not imported, as CSV: line,text,reason (UTF-8)."""
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["line", "text", "reason"])
        out.writerows((r.line, r.text, r.reason) for r in rejects)
