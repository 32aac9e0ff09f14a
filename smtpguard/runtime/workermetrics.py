"""Every worker's counters in worker 1's /metrics ([server] workers > 1).

Each other worker writes a snapshot of its registry every `PUBLISH_EVERY`
seconds (and once more when it stops) to a folder the supervisor made before
forking; worker 1 adds them to its own when scraped. A file is replaced
atomically, so a reader never sees half of one. A restarted worker starts
from zero again: Prometheus reads that as a counter reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtpguard.metrics import METRICS

log = logging.getLogger("smtpguard.server")
PUBLISH_EVERY = 2.0  # seconds; the staleness of the other workers' share


def _path(folder: Path, index: int) -> Path:
    return folder / f"worker-{index}.json"


def write_snapshot(folder: Path, index: int, sessions: int) -> None:
    tmp = folder / f".worker-{index}.tmp"
    tmp.write_text(json.dumps(METRICS.snapshot(sessions)), encoding="utf-8")
    os.replace(tmp, _path(folder, index))


def read_peers(folder: Path, own: int) -> list[dict[str, Any]]:
    """The other workers' latest snapshots (one missing or unreadable is left out)."""
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("worker-*.json")):
        if path == _path(folder, own):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


async def publish(folder: Path, index: int, sessions: Callable[[], int]) -> None:
    """Until cancelled: this worker's snapshot every PUBLISH_EVERY seconds, and a last one at the end."""
    failed = False
    try:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            try:
                write_snapshot(folder, index, sessions())
                failed = False
            except OSError as exc:
                if not failed:  # once per run of failures, not every 2 s
                    log.warning("metrics: cannot write this worker's counters to %s: %s", folder, exc.strerror)
                failed = True
    finally:
        with contextlib.suppress(OSError):
            write_snapshot(folder, index, 0)
