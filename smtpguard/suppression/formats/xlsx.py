"""Entries out of XLSX workbooks (first sheet), with bounds against decompression bombs."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

from smtpguard.suppression.addresses import AddressError, address_key
from smtpguard.suppression.formats.rows import RowReader
from smtpguard.suppression.formats.sniff import (
    NEVER,
    PROGRESS_ROWS,
    SAMPLE_ROWS,
    ImportFormatError,
    Layout,
    find_column,
)
from smtpguard.suppression.store import EntryRow

# An XLSX is a ZIP of XML: a few KB can inflate to gigabytes (openpyxl holds
# the shared strings in memory). Real exports stay far below these bounds;
# zipfile never inflates a member past its declared size (CRC error instead).
XLSX_MAX_MEMBER = 256 * 1024 * 1024  # bytes, any member once inflated
XLSX_MAX_STRINGS = 64 * 1024 * 1024  # bytes, the shared strings (a million addresses: ~45 MB)
XLSX_MAX_TOTAL = 512 * 1024 * 1024  # bytes, all members
XLSX_MAX_RATIO = 100  # inflated / compressed, for members over 1 MiB (XML exports: ~5-20)
XLSX_MAX_CELLS = 50_000_000  # cells read, blank ones included


def check_xlsx(path: Path) -> None:
    """ImportFormatError unless the ZIP's inflated sizes are those of a real export."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportFormatError(f"{path}: not a readable XLSX workbook ({exc})") from None
    total = 0
    for m in members:
        total += m.file_size
        ratio = m.file_size / max(m.compress_size, 1)
        limit = XLSX_MAX_STRINGS if m.filename.lower().endswith("sharedstrings.xml") else XLSX_MAX_MEMBER
        if m.file_size > limit or (m.file_size > 1 << 20 and ratio > XLSX_MAX_RATIO):
            raise ImportFormatError(
                f"{path}: refused, {m.filename} would inflate to {m.file_size / 1e6:.0f} MB"
                f" ({ratio:.0f} times its packed size): not a normal export (a ZIP bomb?)"
            )
    if total > XLSX_MAX_TOTAL:
        raise ImportFormatError(f"{path}: refused, the workbook would inflate to {total / 1e6:.0f} MB")


def open_xlsx(path: Path) -> Any:
    import openpyxl  # only XLSX imports pay for it
    from openpyxl.utils.exceptions import InvalidFileException

    check_xlsx(path)
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ParseError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not a readable XLSX workbook ({exc})") from None


def xlsx_entries(
    path: Path,
    careful: RowReader,
    added: str,
    column: str | None,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    book = open_xlsx(path)
    try:
        if not book.worksheets:
            raise ImportFormatError(f"{path}: the workbook has no sheet")
        values = _bounded(book.worksheets[0].iter_rows(values_only=True), path)
        head = list(islice(values, SAMPLE_ROWS + 10))
        sample = [[_cell_text(v) for v in _trim(row)] for row in head]
        header_at, col, width, headerless = find_column(sample, column, str(path))
        layout = Layout("xlsx", ",", header_at + (0 if headerless else 1), col, width)
        yield from _xlsx_rows(chain(head, values), layout, careful, added, progress)
    finally:
        book.close()


def _bounded(rows: Iterator[Sequence[object]], path: Path) -> Iterator[Sequence[object]]:
    """The sheet's rows; one ImportFormatError for broken XML or too many cells."""
    cells = 0
    try:
        for row in rows:
            cells += len(row)
            if cells > XLSX_MAX_CELLS:
                raise ImportFormatError(f"{path}: refused, the sheet has more than {XLSX_MAX_CELLS:,} cells")
            yield row
    except ImportFormatError:
        raise
    except (ParseError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not a readable XLSX workbook (broken sheet: {exc})") from None


def _trim(row: Sequence[object]) -> Sequence[object]:
    """Drop trailing empty cells (sheets pad rows to their widest)."""
    end = len(row)
    while end and (row[end - 1] is None or row[end - 1] == ""):
        end -= 1
    return row[:end]


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _xlsx_rows(
    values: Iterable[Sequence[object]],
    layout: Layout,
    careful: RowReader,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    col, rules, key_of, new = layout.column, careful.rules, address_key, tuple.__new__
    source, reason, expires = careful.source, careful.reason, careful.expires
    tick = PROGRESS_ROWS if progress is not None else NEVER
    ok = done = line = 0
    try:
        for line, row in enumerate(values, 1):
            if line >= tick and progress is not None:
                tick = line + PROGRESS_ROWS
                progress(line - done)
                done = line
            if line <= layout.skip:
                continue
            try:
                cell = row[col]
                if isinstance(cell, str) and "<" not in cell and ":" not in cell:
                    cell = cell.strip()
                    key = key_of(cell, rules)
                else:
                    key = ""
            except (IndexError, AddressError):
                key = ""
            if key:
                ok += 1
                yield new(EntryRow, (key, "address", cell, source, reason, added, expires))
            else:
                cells = [_cell_text(v) for v in _trim(row)]
                if not any(c.strip() for c in cells):
                    careful.stats.blank += 1
                elif len(row) <= col:
                    careful.stats.rows += 1
                    careful.reject(line, ",".join(cells), "no address column in this row")
                else:
                    found = careful.address(_cell_text(row[col]), line, ",".join(cells), added)
                    if found is not None:
                        yield found
    finally:
        careful.stats.rows += ok
    if progress is not None:
        progress(line - done)
