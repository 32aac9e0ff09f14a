"""What an export file is: its encoding, delimiter, layout and address column."""

from __future__ import annotations

import codecs
import csv
import functools
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import unquote

SAMPLE_BYTES = 64 * 1024
SAMPLE_ROWS = 50
PROGRESS_ROWS = 4096  # progress() at most once per this many rows
NEVER = 1 << 62
DELIMITERS = ",;\t|"
REASON_MAX = 200
TEXT_MAX = 300

ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # legacy .xls

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
INLINE_COMMENT = re.compile(r"\s#")
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
    kind_column: int | None = None  # a `kind` column (smtpguard's own export): its allow rows are not blocks


# --- encoding ------------------------------------------------------------------

# Bytes that are not UTF-8 are read as Windows-1252, and its five undefined
# bytes as Latin-1, so that a file never fails to decode half-way through
# (a sample that looked like UTF-8 or ASCII may hide a cp1252 row further on).
_CP1252 = "".join(
    bytes([b]).decode("cp1252") if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else chr(b) for b in range(256)
)
_ERRORS = "smtpguard.cp1252"


@functools.cache
def decode_errors() -> str:
    """The codec error handler's name, registered on first use (not at import)."""
    codecs.register_error(_ERRORS, _cp1252_fallback)
    return _ERRORS


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(_CP1252[b] for b in exc.object[exc.start : exc.end]), exc.end


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


def decode_sample(sample: bytes, encoding: str, final: bool) -> str:
    text: str = codecs.getincrementaldecoder(encoding)(decode_errors()).decode(sample, final)
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
        widths = [len(row) for row in csv.reader(lines, **dialect(delimiter)) if row]
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
    reader = csv.reader(io.StringIO(text, newline=""), **dialect(delimiter))
    rows = list(islice(reader, SAMPLE_ROWS + 10 + skip))[skip:]
    header_at, col, width, headerless = find_column(rows, column, name, ", " if delimiter in ",\t" else delimiter)
    kinds = None if headerless else _kind_column(rows[header_at])
    return Layout("csv", delimiter, skip + header_at + (0 if headerless else 1), col, width, kinds)


def _kind_column(header: list[str]) -> int | None:
    """Where `smtpguard export` put each entry's kind, if this header is one of its."""
    names = [cell.strip().lower() for cell in header]
    return names.index("kind") if "kind" in names else None


def dialect(delimiter: str) -> dict[str, Any]:
    return {"delimiter": delimiter, "quotechar": '"', "doublequote": True, "skipinitialspace": True}


# --- cells -------------------------------------------------------------------


def clean_cell(cell: str) -> str:
    """The address inside a cell: `"Doe, Jane" <jane@x>`, `mailto:jane@x?subject=`, quotes."""
    text = cell.strip().strip("\"'").strip()
    if "<" in text:
        text = text[text.rfind("<") + 1 :]
        text = text.split(">", 1)[0]
    if text[:7].lower() == "mailto:":
        text = unquote(text[7:].split("?", 1)[0])
    return text.strip().strip("\"'").strip()


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
