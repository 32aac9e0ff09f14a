"""The one renderer of command output: text lines, a JSON document, or one JSON object a line."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TextIO, TypeVar

import typer

from smtpguard.cli.options import Output

T = TypeVar("T")


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 row`, `2 rows`, `0 rows` (`many` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return value._asdict()
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def say(results: Sequence[T], json_: bool, line: Callable[[T], str]) -> None:
    """Short results: one JSON document, or a line each."""
    if json_:
        emit_json(list(results))
        return
    for r in results:
        typer.echo(line(r))


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON document (an object or a short list), indented for people."""
    out = out or sys.stdout
    json.dump(as_json(value), out, ensure_ascii=False, indent=2)
    out.write("\n")


class Rows(Generic[T]):
    """Stream rows as text lines (with an optional header), a JSON array, or NDJSON.

    Used as a context manager so a listing of a million entries is never held
    in memory: `with Rows(fmt, line) as rows: rows.add(x)`.
    """

    def __init__(
        self, fmt: Output, line: Callable[[T], str], *, header: str | None = None, out: TextIO | None = None
    ) -> None:
        self.fmt, self.line, self.header = fmt, line, header
        self.out = out or sys.stdout
        self.count = 0

    def __enter__(self) -> Rows[T]:
        if self.fmt is Output.text and self.header is not None:
            self.out.write(self.header + "\n")
        elif self.fmt is Output.json:
            self.out.write("[")
        return self

    def add(self, row: T) -> None:
        if self.fmt is Output.text:
            self.out.write(self.line(row) + "\n")
        elif self.fmt is Output.json:
            self.out.write(("," if self.count else "") + "\n  " + json.dumps(as_json(row), ensure_ascii=False))
        else:
            self.out.write(json.dumps(as_json(row), ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None and self.fmt is Output.json:
            self.out.write("\n]\n" if self.count else "]\n")
        if kind is None:
            self.out.flush()
