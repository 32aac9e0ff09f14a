"""What a person typed, checked before the service touches the list.

Dates and times, user names, sender addresses, and the `--encoding` /
`--delimiter` overrides of an import (a private UTF-8 copy of the file).
Each problem is an `InvalidInput`: one line saying what is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smtpguard.suppression.formats import ImportFormatError


class InvalidInput(ValueError):
    """Input the user typed is unusable; the message is one line saying why."""


def parse_date(text: str | None, option: str) -> str | None:
    """A YYYY-MM-DD date (normalised), or None."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidInput(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


def parse_since(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--since must be a date or time like 2026-11-01 or 2026-11-01T09:00, got {text!r}"
        ) from None
    return text


def check_user_name(name: str) -> None:
    if not name or any(c.isspace() or c == ":" for c in name):
        raise InvalidInput(f"user name {name!r} must not be empty or hold spaces")


def check_sender_address(text: str) -> str:
    """A sender address a user may be bound to: one plain `local@domain`, kept as typed."""
    local, at, domain = text.strip().rpartition("@")
    if not (at and local and "." in domain) or any(c.isspace() or c in '<>",;' for c in text.strip()):
        raise InvalidInput(f"sender address {text!r} must be a plain address like alice@corp.example")
    return text.strip()


DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@contextmanager
def recoded(path: Path, encoding: str | None, delimiter: str | None) -> Iterator[Path]:
    """`path`, or a private UTF-8, comma-separated copy when the user overrides detection.

    The import reads the copy with its usual detection, which then finds
    UTF-8 and commas; rows keep their line numbers (one row, one line).
    """
    if encoding is None and delimiter is None:
        yield path
        return
    import codecs
    import csv
    import tempfile

    from smtpguard.suppression.formats import SAMPLE_BYTES, detect_encoding

    if delimiter is not None:
        delimiter = DELIMITERS.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise InvalidInput(f"--delimiter must be one character (or tab), got {delimiter!r}")
    with path.open("rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    if head.startswith(b"PK\x03\x04"):
        raise InvalidInput(f"{path}: --encoding and --delimiter apply to CSV and text files, not to XLSX workbooks")
    if encoding is None:
        encoding = detect_encoding(head, final=len(head) < SAMPLE_BYTES)
        if encoding == "binary":
            encoding = "cp1252"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidInput(f"--encoding {encoding!r} is not an encoding Python knows (try utf-8 or cp1252)") from None
    with tempfile.TemporaryDirectory(prefix="smtpguard-") as folder:
        copy = Path(folder) / path.name
        with (
            path.open(encoding=encoding, errors="replace", newline="") as src,
            copy.open("w", encoding="utf-8", newline="") as dst,
        ):
            if delimiter is None:
                dst.writelines(src)
            else:
                csv.writer(dst, lineterminator="\n").writerows(csv.reader(src, delimiter=delimiter))
        try:
            yield copy
        except ImportFormatError as exc:  # name the user's file, not the copy
            raise ImportFormatError(str(exc).replace(str(copy), str(path))) from None
