"""The import progress bar on a terminal: bytes for text files, rows for workbooks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn

ZIP_MAGIC = b"PK\x03\x04"


def counts_rows(path: Path) -> bool:
    """An XLSX workbook reports progress in rows, every other file in bytes."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == ZIP_MAGIC
    except OSError:
        return False


def columns(total: int, rows: bool) -> list[ProgressColumn]:
    """A bar with the right unit when the total is known; a spinner and a count when it is not."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    label = TextColumn("{task.description}")
    if total <= 0:
        count = TextColumn("{task.completed:,.0f} rows read" if rows else "{task.completed:,.0f} bytes read")
        return [SpinnerColumn(), label, count]
    done: ProgressColumn = MofNCompleteColumn() if rows else DownloadColumn()
    return [label, BarColumn(), done, TextColumn("rows" if rows else ""), TimeRemainingColumn()]


@contextmanager
def progress_bar(path: Path, console: Console | None = None) -> Iterator[Callable[[int], None] | None]:
    """Yield the `progress(n)` callback of an import; nothing when stderr is not a terminal."""
    if console is None and not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    from smtpguard.suppression.formats import total_size

    total = total_size(path)
    with Progress(*columns(total, counts_rows(path)), console=console or Console(stderr=True), transient=True) as bar:
        task = bar.add_task(path.name, total=total if total > 0 else None)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if total > 0 and bar.tasks[0].completed > total:  # the workbook's row count was a guess
                bar.update(task, total=None)

        yield advance
