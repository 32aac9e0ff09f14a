"""Stream suppression entries out of export files: CSV, plain text and XLSX.

Files come straight from the export buttons of prospecting tools, so the
format, encoding, delimiter and address column are detected from the
content, never from the file name.  Detection looks at the first 64 KiB only;
the rows are then streamed, so a million-row file is never held in memory.

A bad row never stops a file: it is counted in `FileStats.invalid` and, when
the caller passes a list, recorded as a `Reject` with its line number.  Only a
file that is unusable as a whole raises `ImportFormatError`.

The per-row path is the cost of a big import, so the loops in `_csv_entries`
and `_text_entries` are written flat: plain ASCII addresses go straight to
`address_key` (which has its own fast path) and everything unusual falls to
`_Rows`, the slow and careful path.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote
from xml.etree.ElementTree import ParseError

from smtpguard.suppression.addresses import AddressError, MatchRules, address_key, parse_entry
from smtpguard.suppression.store import EntryRow

__all__ = [
    "FileStats",
    "ImportFormatError",
    "Layout",
    "Reject",
    "detect_encoding",
    "find_column",
    "iter_entries",
    "sniff_layout",
    "total_size",
    "write_rejects",
]

SAMPLE_BYTES = 64 * 1024
SAMPLE_ROWS = 50
PROGRESS_ROWS = 4096  # progress() at most once per this many rows
_NEVER = 1 << 62
DELIMITERS = ",;\t|"
_REASON_MAX = 200
_TEXT_MAX = 300

_ZIP_MAGIC = b"PK\x03\x04"
# An XLSX is a ZIP of XML: a few KB can inflate to gigabytes (openpyxl holds
# the shared strings in memory). Real exports stay far below these bounds;
# zipfile never inflates a member past its declared size (CRC error instead).
XLSX_MAX_MEMBER = 256 * 1024 * 1024  # bytes, any member once inflated
XLSX_MAX_STRINGS = 64 * 1024 * 1024  # bytes, the shared strings (a million addresses: ~45 MB)
XLSX_MAX_TOTAL = 512 * 1024 * 1024  # bytes, all members
XLSX_MAX_RATIO = 100  # inflated / compressed, for members over 1 MiB (XML exports: ~5-20)
XLSX_MAX_CELLS = 50_000_000  # cells read, blank ones included
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # legacy .xls

# Header names of the address column, normalised by `_header_key`.
_ADDRESS_HEADERS = frozenset(
    {
        "email", "mail", "emailaddress", "mailaddress", "emailaddresses", "emails",
        "adresseemail", "adressemail", "adressemel", "adressecourriel", "courriel",
        "email1", "emailadresse", "emailadres", "correoelectronico", "correo",
        "workemail", "businessemail", "contactemail", "primaryemail", "emailprimary",
        "emailpro", "emailprofessionnel", "emailprofessionnelle", "mailpro",
        "personalemail", "emailperso", "recipient", "subscriberemail", "memberemail",
        "useremail", "unsubscribedemail", "leademail", "prospectemail",
    }
)  # fmt: skip
# A header containing one of these is probably about the address, not the address.
_NOT_ADDRESS = re.compile(
    r"status|statut|valid|verif|bounce|domain|domaine|type|date|count|nombre|open|click|clic|sent|envoy"
    r"|consent|optin|optout|format|score|source|campaign|campagne|id$"
)
_INLINE_COMMENT = re.compile(r"\s#")
_SEP_LINE = re.compile(r"sep=(.)\s*", re.IGNORECASE)


class ImportFormatError(ValueError):
    """The whole file is unusable; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not imported: 1-based physical line (XLSX: row), its text, why."""

    line: int
    text: str
    reason: str


@dataclass
class FileStats:
    """Counts for one file: data rows seen (not header, not blank), invalid, blank."""

    rows: int = 0
    invalid: int = 0
    blank: int = 0  # blank rows, and comment lines of text files


@dataclass(frozen=True, slots=True)
class Layout:
    """What detection found: text list or CSV, and where the addresses are."""

    kind: str  # "csv" or "text"
    delimiter: str = ","
    skip: int = 0  # CSV rows before the data: title lines, `sep=`, the header
    column: int = 0
    width: int = 1  # fields in the header


# --- encoding ------------------------------------------------------------------

# Bytes that are not UTF-8 are read as Windows-1252, and its five undefined
# bytes as Latin-1, so that a file never fails to decode half-way through
# (a sample that looked like UTF-8 or ASCII may hide a cp1252 row further on).
_CP1252 = "".join(
    bytes([b]).decode("cp1252") if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else chr(b) for b in range(256)
)
_ERRORS = "smtpguard.cp1252"


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(_CP1252[b] for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(_ERRORS, _cp1252_fallback)


_BINARY_CONTROLS = bytes([*range(0, 9), 11, *range(14, 27), *range(28, 32)])


def detect_encoding(sample: bytes, *, final: bool = False) -> str:
    """The codec of a text file from its first bytes (`final`: the sample is the whole file)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # the codec reads the BOM and drops it
    head = sample[:4096]
    if head.count(0) * 100 > len(head):  # a stray NUL or two is not UTF-16
        # UTF-16 without BOM: mostly-ASCII text has a NUL in every other byte.
        even, odd = head[0::2].count(0), head[1::2].count(0)
        half = len(head) // 2 or 1
        if odd > 0.3 * half and even < 0.05 * half:
            return "utf-16-le"
        if even > 0.3 * half and odd < 0.05 * half:
            return "utf-16-be"
        return "binary"
    # Text exports hold no C0 controls beyond TAB/CR/LF (and a rare FF/ESC);
    # more than 1% of them means an image, a PDF, an archive…
    if sum(head.count(c) for c in _BINARY_CONTROLS) * 100 > len(head):
        return "binary"
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(sample, final)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _decode_sample(sample: bytes, encoding: str, final: bool) -> str:
    text: str = codecs.getincrementaldecoder(encoding)(_ERRORS).decode(sample, final)
    return text.removeprefix("\ufeff")


# --- layout --------------------------------------------------------------------


def _header_key(name: str) -> str:
    """`" Adresse E-mail "` -> `adresseemail`: no accents, case, spaces or punctuation."""
    folded = unicodedata.normalize("NFKD", name.strip().strip("\ufeff\"'").casefold())
    return "".join(c for c in folded if c.isalnum() and not unicodedata.combining(c))


def sniff_delimiter(lines: Sequence[str]) -> str | None:
    """The delimiter that splits most rows into the same number (>1) of fields, if any.

    Rows are parsed with the csv module, so delimiters inside quotes (and
    quoted line breaks) do not count.
    """
    best: tuple[float, int] = (0.0, 0)
    found = None
    for delimiter in DELIMITERS:
        widths = [len(row) for row in csv.reader(lines, **_dialect(delimiter)) if row]
        common = Counter(w for w in widths if w > 1).most_common(1)
        if not common:
            continue
        width, times = common[0]
        score = (times / len(widths), width)
        if score[0] >= 0.5 and score > best:
            best, found = score, delimiter
    return found


def _looks_like_address(cell: str) -> bool:
    at = cell.find("@")
    return 0 <= at < len(cell) - 3 and "." in cell[at:]


# The way out of "no address column" from the command line; the watched
# folder, where no option can be given, says something else (watch.py).
COLUMN_HINT = " — use --column"


def find_column(
    rows: Sequence[Sequence[str]], column: str | None, name: str, separator: str = ", "
) -> tuple[int, int, int, bool]:
    """(header row index, address column, header width, headerless) of sample rows.

    The header is the first non-blank row as wide as most rows (title lines
    above it are skipped).  The column is `column` when given, else found by
    its header name, else by its content; a file whose first row already
    holds addresses has no header.
    """
    nonblank = [i for i, row in enumerate(rows) if any(c.strip() for c in row)]
    if not nonblank:
        raise ImportFormatError(f"{name}: no rows found")
    width = Counter(len(rows[i]) for i in nonblank).most_common(1)[0][0]
    header_at = next((i for i in nonblank if len(rows[i]) == width), nonblank[0])
    header = list(rows[header_at])
    keys = [_header_key(h) for h in header]
    shown = separator.join(h.strip() for h in header)  # as the file has it: a header the user recognises
    if column is not None:
        wanted = column.strip().casefold()
        for i, h in enumerate(header):
            if h.strip().strip("\ufeff\"'").casefold() == wanted:
                return header_at, i, width, False
        for i, k in enumerate(keys):
            if k and k == _header_key(column):
                return header_at, i, width, False
        raise ImportFormatError(f"{name}: no column {column!r}; the header has: {shown}")
    for i, k in enumerate(keys):
        if k in _ADDRESS_HEADERS:
            return header_at, i, width, False
    for i, k in enumerate(keys):
        if ("mail" in k or "courriel" in k) and not _NOT_ADDRESS.search(k):
            return header_at, i, width, False
    # By content: the column where most sample rows hold an address.
    data = [rows[i] for i in nonblank if i > header_at][:SAMPLE_ROWS]
    hits = Counter(j for row in data for j, cell in enumerate(row) if _looks_like_address(cell))
    if hits:
        j, n = hits.most_common(1)[0]
        if n * 2 >= len(data):
            headerless = j < len(header) and _looks_like_address(header[j])
            return header_at, j, width, headerless
    if not data:  # a single row: headerless when it holds an address
        for j, cell in enumerate(header):
            if _looks_like_address(cell):
                return header_at, j, width, True
    raise ImportFormatError(f"{name}: no address column found in header: {shown}{COLUMN_HINT}")


def sniff_layout(text: str, *, final: bool, column: str | None = None, name: str = "file") -> Layout:
    """Text list or CSV, the delimiter and the address column, from the decoded sample."""
    if not final:
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else text
    lines = [ln for ln in text.splitlines() if ln.strip()][: SAMPLE_ROWS + 10]
    if not lines:
        raise ImportFormatError(f"{name}: no rows found")
    skip = 0
    sep = _SEP_LINE.fullmatch(lines[0])
    if sep:  # Excel's "sep=;" first line
        delimiter: str | None = sep.group(1)
        skip = 1
    else:
        delimiter = sniff_delimiter([ln for ln in lines if not ln.lstrip().startswith("#")] or lines)
    if delimiter is None:
        first = next((ln for ln in lines if not ln.lstrip().startswith("#")), "")
        if column is None and _header_key(first) not in _ADDRESS_HEADERS:
            return Layout("text")
        delimiter = ","  # one-column CSV: a header, then addresses
    reader = csv.reader(io.StringIO(text, newline=""), **_dialect(delimiter))
    rows = list(islice(reader, SAMPLE_ROWS + 10 + skip))[skip:]
    header_at, col, width, headerless = find_column(rows, column, name, ", " if delimiter in ",\t" else delimiter)
    return Layout("csv", delimiter, skip + header_at + (0 if headerless else 1), col, width)


def _dialect(delimiter: str) -> dict[str, Any]:
    return {"delimiter": delimiter, "quotechar": '"', "doublequote": True, "skipinitialspace": True}


# --- cells -------------------------------------------------------------------


def _clean(cell: str) -> str:
    """The address inside a cell: `"Doe, Jane" <jane@x>`, `mailto:jane@x?subject=`, quotes."""
    text = cell.strip().strip("\"'").strip()
    if "<" in text:
        text = text[text.rfind("<") + 1 :]
        text = text.split(">", 1)[0]
    if text[:7].lower() == "mailto:":
        text = unquote(text[7:].split("?", 1)[0])
    return text.strip().strip("\"'").strip()


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Rows:
    """The careful path for the rows the flat loops do not take: counts, rejects, cleanup."""

    def __init__(
        self,
        rules: MatchRules,
        fields: tuple[str, str, str | None],
        stats: FileStats,
        rejects: list[Reject] | None,
    ) -> None:
        self.rules = rules
        self.source, self.reason, self.expires = fields
        self.stats = stats
        self.rejects = rejects

    def reject(self, line: int, text: str, reason: str) -> None:
        self.stats.invalid += 1
        if self.rejects is not None:
            self.rejects.append(Reject(line, _one_line(text, _TEXT_MAX), _one_line(reason, _REASON_MAX)))

    def row(self, key: str, kind: str, original: str, added: str) -> EntryRow:
        return EntryRow(key, "domain" if kind == "domain" else "address", original, self.source,
                        self.reason, added, self.expires)  # fmt: skip

    def address(self, cell: str, line: int, text: str, added: str, note: str = "") -> EntryRow | None:
        """A data row whose address cell is `cell`; None when it is rejected."""
        self.stats.rows += 1
        address = _clean(cell)
        if not address:
            self.reject(line, text, "the address cell is empty" + note)
            return None
        try:
            key = address_key(address, self.rules)
        except AddressError as exc:
            self.reject(line, text, str(exc) + note)
            return None
        return self.row(key, "address", address, added)

    def entry(self, raw: str, line: int, added: str) -> EntryRow | None:
        """A line of a text list: an address or a domain, maybe with a `# comment`."""
        text = _INLINE_COMMENT.split(raw, 1)[0].strip()
        if not text or text.startswith("#"):
            self.stats.blank += 1
            return None
        self.stats.rows += 1
        if "<" in text or ":" in text or text[0] in "\"'":
            text = _clean(text)
        try:
            entry = parse_entry(text, self.rules)
        except AddressError as exc:
            what = "" if "@" in text[1:] else "not an address, nor a domain: "
            self.reject(line, raw, what + str(exc))
            return None
        return self.row(entry.key, entry.kind, entry.original, added)


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
    rows = _Rows(rules, (source, reason, expires), stats, rejects)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ImportFormatError(f"{path}: {exc.strerror or exc}") from None
    with fh:
        head = fh.read(SAMPLE_BYTES)
        if head.startswith(_ZIP_MAGIC):
            fh.close()
            yield from _xlsx_entries(path, rows, added, column, progress)
            return
        if head.startswith(_OLE_MAGIC):
            raise ImportFormatError(f"{path}: a legacy Excel .xls file; save it as .xlsx or CSV")
        if not head:
            raise ImportFormatError(f"{path}: the file is empty")
        final = len(head) < SAMPLE_BYTES
        encoding = detect_encoding(head, final=final)
        if encoding == "binary":
            raise ImportFormatError(f"{path}: binary content, not a CSV, text or XLSX export")
        sample = _decode_sample(head, encoding, final)
        layout = sniff_layout(sample, final=final, column=column, name=str(path))
        fh.seek(0)
        newline = "" if layout.kind == "csv" else None
        text = io.TextIOWrapper(fh, encoding=encoding, errors=_ERRORS, newline=newline)
        if layout.kind == "csv":
            yield from _csv_entries(text, fh, layout, rows, added, progress)
        else:
            yield from _text_entries(text, fh, rows, added, progress)


def _csv_entries(
    text: IO[str],
    raw: IO[bytes],
    layout: Layout,
    careful: _Rows,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    reader = csv.reader(text, **_dialect(layout.delimiter))
    for _ in range(layout.skip):
        next(reader, None)
    col, rules, key_of, new = layout.column, careful.rules, address_key, tuple.__new__
    source, reason, expires = careful.source, careful.reason, careful.expires
    last = reader.line_num
    tick = last + PROGRESS_ROWS if progress is not None else _NEVER
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
                        if key:
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
    careful: _Rows, layout: Layout, row: list[str], start: int, end: int, added: str
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
        reread = csv.reader(lines[1:], **_dialect(layout.delimiter))
        for n, again in enumerate(reread, start + 1):
            yield from _careful_csv(careful, layout, again, n, n, added)
        return
    fields = f"the row has {len(row)} fields, the header {layout.width}"
    if len(row) <= layout.column:
        careful.stats.rows += 1
        careful.reject(start, text, f"no address field: {fields}")
        return
    note = f" ({fields})" if len(row) != layout.width else ""
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


def _text_entries(
    text: IO[str],
    raw: IO[bytes],
    careful: _Rows,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    rules, key_of, new = careful.rules, address_key, tuple.__new__
    source, reason, expires = careful.source, careful.reason, careful.expires
    tick = PROGRESS_ROWS if progress is not None else _NEVER
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


def _open_xlsx(path: Path) -> Any:
    import openpyxl  # only XLSX imports pay for it
    from openpyxl.utils.exceptions import InvalidFileException

    check_xlsx(path)
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ParseError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not a readable XLSX workbook ({exc})") from None


def _xlsx_entries(
    path: Path,
    careful: _Rows,
    added: str,
    column: str | None,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    book = _open_xlsx(path)
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
    careful: _Rows,
    added: str,
    progress: Callable[[int], None] | None,
) -> Iterator[EntryRow]:
    col, rules, key_of, new = layout.column, careful.rules, address_key, tuple.__new__
    source, reason, expires = careful.source, careful.reason, careful.expires
    tick = PROGRESS_ROWS if progress is not None else _NEVER
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


# --- around the import -----------------------------------------------------------


def total_size(path: Path) -> int:
    """The progress total of `iter_entries`: bytes, or rows for an XLSX file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            is_zip = fh.read(4) == _ZIP_MAGIC
        if not is_zip:
            return path.stat().st_size
    except OSError:  # the import itself will say what is wrong
        return 0
    try:
        book = _open_xlsx(path)
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
