"""One import: an export file's rows into the store in one transaction.

The CLI (`smtpguard import`), the watched folder and the demo all import
through `import_file`, so a file gives the same entries whichever way it
arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.formats import FileStats, Reject, iter_entries
from smtpguard.suppression.store import AddResult, Store, utc_now

DEFAULT_REASON = "unsubscribed"


@dataclass
class FileImport:
    """What one file gave: rows read, what was added, and the rows refused."""

    path: Path
    source: str
    stats: FileStats = field(default_factory=FileStats)
    rejects: list[Reject] = field(default_factory=list)
    result: AddResult = field(default_factory=lambda: AddResult(rows=0, added=0))


async def import_file(
    store: Store,
    path: Path,
    *,
    rules: MatchRules,
    source: str | None = None,
    reason: str = DEFAULT_REASON,
    expires: str | None = None,
    column: str | None = None,
    commit: bool = True,
    progress: Callable[[int], None] | None = None,
) -> FileImport:
    """Import `path` (ImportFormatError, OSError or StoreError leave the list as it was).

    `source` defaults to the file's name without extension; `commit=False`
    counts what would be added and changes nothing (dry run).
    """
    out = FileImport(path, source or path.stem)
    rows = iter_entries(
        path,
        rules=rules,
        source=out.source,
        reason=reason,
        added=utc_now(),
        expires=expires,
        column=column,
        stats=out.stats,
        rejects=out.rejects,
        progress=progress,
    )
    out.result = await store.add_entries(rows, commit=commit)
    return out
