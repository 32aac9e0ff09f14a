"""Worker 1's /metrics adds the other workers' snapshots to its own counters."""

from __future__ import annotations

import json
from typing import Any

from smtpguard.metrics import Metrics


def test_snapshots_add_up_and_a_broken_one_is_skipped() -> None:
    mine, theirs = Metrics(), Metrics()
    mine.inc("smtpguard_recipients_total", action="refused", source="lemlist")
    mine.rcpt_lookup(0.0003)
    theirs.inc("smtpguard_recipients_total", 2, action="refused", source="lemlist")
    theirs.inc("smtpguard_messages_relayed_total", 5)
    theirs.rcpt_lookup(0.2)
    snap = json.loads(json.dumps(theirs.snapshot(sessions=7)))  # as written to and read from its file
    broken: list[dict[str, Any]] = [
        {"counters": "nope"},
        {"counters": [], "rcpt_counts": [1], "rcpt_sum": 0, "sessions": 1},
    ]
    view, sessions = mine.merged([snap, *broken])
    assert sessions == 7
    key = ("smtpguard_recipients_total", (("action", "refused"), ("source", "lemlist")))
    assert view.counters[key] == 3 and view.counters["smtpguard_messages_relayed_total", ()] == 5
    assert sum(view.rcpt_counts) == 2 and abs(view.rcpt_sum - 0.2003) < 1e-9
    assert mine.counters[key] == 1 and sum(mine.rcpt_counts) == 1  # the worker's own registry is untouched
    text = view.render()
    assert 'smtpguard_recipients_total{action="refused",source="lemlist"} 3' in text
    assert "smtpguard_rcpt_lookup_seconds_count 2" in text
