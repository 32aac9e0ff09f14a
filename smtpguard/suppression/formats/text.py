"""Entries out of CSV and plain-text exports, streamed (the hot loops of an import)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from smtpguard.suppression.addresses import AddressError, address_key
from smtpguard.suppression.formats.rows import RowReader
from smtpguard.suppression.formats.sniff import NEVER, PROGRESS_ROWS, Layout, dialect
from smtpguard.suppression.store import EntryRow


def csv_entries(
    text: IO[str],
    raw: IO[bytes],
    layout: Layout,
    careful: RowReader,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    reader = csv.reader(text, **dialect(layout.delimiter))
    for _ in range(layout.skip):
        next(reader, None)
    col, rules, key_of, new = layout.column, careful.rules, address_key, tuple.__new__
    kinds = layout.kind_column  # None for every file but smtpguard's own export
    source, reason, expires = careful.source, careful.reason, careful.expires
    last = reader.line_num
    tick = last + PROGRESS_ROWS if progress is not None else NEVER
    done = ok = 0
    try:
        while True:
            try:
                for row in reader:
                    start = last + 1
                    last = reader.line_num
                    if last >= tick:
                        tick = last + PROGRESS_ROWS
                        done = _report(progress, raw, done)
                    if last == start:  # one physical line: the common case
                        try:
                            cell = row[col].strip()
                            key = key_of(cell, rules) if "<" not in cell and ":" not in cell else ""
                        except (IndexError, AddressError):
                            key = ""
                        if key and (kinds is None or row[kinds : kinds + 1] != ["allow"]):
                            ok += 1
                            yield new(EntryRow, (key, "address", cell, source, reason, added, expires))
                            continue
                    yield from _careful_csv(careful, layout, row, start, last, added)
            except csv.Error as exc:
                # The reader starts afresh on the next line; only this row is lost.
                careful.stats.rows += 1
                careful.reject(last + 1, "", f"unreadable CSV: {exc} (an unbalanced quote?)")
                last = reader.line_num
                continue
            break
    finally:
        careful.stats.rows += ok
    _report(progress, raw, done)


def _report(progress: Callable[[int], None] | None, raw: IO[bytes], done: int) -> int:
    """Tell `progress` the bytes read since `done`; the new `done`."""
    pos = raw.tell()
    if progress is not None and pos > done:
        progress(pos - done)
    return pos


def _careful_csv(
    careful: RowReader, layout: Layout, row: list[str], start: int, end: int, added: str
) -> Iterator[EntryRow]:
    if not any(cell.strip() for cell in row):
        careful.stats.blank += 1
        return
    text = layout.delimiter.join(row)
    if end > start and _swallowed(row, layout):
        # An unbalanced quote ran over the next lines: refuse the line that
        # opened it and read the lines it swallowed again (quotes are lost).
        lines = text.splitlines()
        careful.stats.rows += 1
        careful.reject(start, lines[0], f'unbalanced quote ("), the field runs to line {end}')
        reread = csv.reader(lines[1:], **dialect(layout.delimiter))
        for n, again in enumerate(reread, start + 1):
            yield from _careful_csv(careful, layout, again, n, n, added)
        return
    fields = f"the row has {len(row)} fields, the header {layout.width}"
    if len(row) <= layout.column:
        careful.stats.rows += 1
        careful.reject(start, text, f"no address field: {fields}")
        return
    note = f" ({fields})" if len(row) != layout.width else ""
    kinds = layout.kind_column
    if kinds is not None and len(row) > kinds and row[kinds].strip().lower() == "allow":
        careful.allow(row[layout.column], start, text)
        return
    entry = careful.address(row[layout.column], start, text, added, note)
    if entry is not None:
        yield entry


def _swallowed(row: Sequence[str], layout: Layout) -> bool:
    """A multi-line field holding what looks like whole rows: a quote never closed.

    A swallowed line has an address and the delimiters of a row; a quoted
    note with line breaks rarely has both.
    """
    enough = layout.width - 1
    return any(
        line.count(layout.delimiter) >= enough and "@" in line
        for cell in row
        if "\n" in cell or "\r" in cell
        for line in cell.splitlines()[1:]
    )


def text_entries(
    text: IO[str],
    raw: IO[bytes],
    careful: RowReader,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    rules, key_of, new = careful.rules, address_key, tuple.__new__
    source, reason, expires = careful.source, careful.reason, careful.expires
    tick = PROGRESS_ROWS if progress is not None else NEVER
    done = ok = 0
    try:
        for line, raw_line in enumerate(text, 1):
            if line >= tick:
                tick = line + PROGRESS_ROWS
                done = _report(progress, raw, done)
            entry = raw_line.strip()
            if entry and entry[0] != "@" and "@" in entry and " " not in entry and "<" not in entry:
                try:
                    key = key_of(entry, rules) if ":" not in entry and "#" not in entry else ""
                except AddressError:
                    key = ""
                if key:
                    ok += 1
                    yield new(EntryRow, (key, "address", entry, source, reason, added, expires))
                    continue
            if not entry:
                careful.stats.blank += 1
            else:
                found = careful.entry(entry, line, added)
                if found is not None:
                    yield found
    finally:
        careful.stats.rows += ok
    _report(progress, raw, done)
