"""The relay's counters, in one process-wide registry the SMTP code increments.

Hand-written Prometheus text format (no dependency): a handful of counters
with labels, one latency histogram, and gauges the HTTP side computes when
scraped (`/metrics`).  Increments are plain dict updates on the event loop:
nothing here blocks or allocates much.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RCPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

HELP = {
    "smtpguard_messages_relayed_total": ("counter", "Messages the upstream accepted."),
    "smtpguard_recipients_total": ("counter", "Recipients on the list, by action and source."),
    "smtpguard_upstream_errors_total": ("counter", "Messages not relayed because of the upstream, by kind."),
    "smtpguard_sync_runs_total": ("counter", "Pull connector runs, by source."),
    "smtpguard_sync_failures_total": ("counter", "Failed pull connector runs, by source."),
    "smtpguard_webhooks_total": ("counter", "Webhook requests, by source and outcome."),
}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Metrics:
    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    rcpt_counts: list[int] = field(default_factory=lambda: [0] * (len(RCPT_BUCKETS) + 1))
    rcpt_sum: float = 0.0
    upstream_ok: bool | None = None  # None: not tried yet
    upstream_at: float = 0.0
    # With [server] workers > 1, in worker 1: the other workers' latest snapshots (runtime/workermetrics.py).
    peers: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False, compare=False)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def rcpt_lookup(self, seconds: float) -> None:
        i = next((i for i, b in enumerate(RCPT_BUCKETS) if seconds <= b), len(RCPT_BUCKETS))
        self.rcpt_counts[i] += 1
        self.rcpt_sum += seconds

    def message_finished(self, outcome: str) -> None:
        """`outcome` as the relay logs it: "relayed 250", "upstream 451", "upstream lost", "refused"."""
        if outcome.startswith("relayed"):
            self.inc("smtpguard_messages_relayed_total")
            self.upstream(True)
        elif outcome == "upstream lost":
            self.inc("smtpguard_upstream_errors_total", kind="lost")
        elif outcome.startswith("upstream "):
            self.inc("smtpguard_upstream_errors_total", kind=outcome[9:10] + "xx")

    def upstream(self, ok: bool) -> None:
        self.upstream_ok, self.upstream_at = ok, time.time()

    def snapshot(self, sessions: int) -> dict[str, Any]:
        """What worker 1's /metrics adds up from this worker (JSON-ready)."""
        counters = [[name, [list(pair) for pair in labels], value] for (name, labels), value in self.counters.items()]
        return {"counters": counters, "rcpt_counts": self.rcpt_counts, "rcpt_sum": self.rcpt_sum, "sessions": sessions}

    def merged(self, snapshots: Iterable[Mapping[str, Any]]) -> tuple[Metrics, int]:
        """These counters plus other workers' snapshots (one unreadable is skipped); their open sessions."""
        out = Metrics(dict(self.counters), list(self.rcpt_counts), self.rcpt_sum, self.upstream_ok, self.upstream_at)
        sessions = 0
        for snap in snapshots:
            try:
                counters = [
                    (str(n), tuple((str(k), str(v)) for k, v in labels), float(x)) for n, labels, x in snap["counters"]
                ]
                counts = [int(c) for c in snap["rcpt_counts"]]
                rcpt_sum, open_sessions = float(snap["rcpt_sum"]), int(snap["sessions"])
            except (KeyError, TypeError, ValueError):
                continue
            if len(counts) != len(out.rcpt_counts):
                continue
            for name, labels, value in counters:
                out.counters[name, labels] = out.counters.get((name, labels), 0.0) + value
            out.rcpt_counts = [a + b for a, b in zip(out.rcpt_counts, counts, strict=True)]
            out.rcpt_sum += rcpt_sum
            sessions += open_sessions
        return out, sessions

    def render(self, gauges: Iterable[tuple[str, str, Labels, float]] = ()) -> str:
        """The text exposition format; `gauges` are (name, help, labels, value)."""
        lines: list[str] = []
        for name, (kind, text) in HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            rows = [(labels, v) for (n, labels), v in sorted(self.counters.items()) if n == name]
            lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in rows or [((), 0.0)]]
        name = "smtpguard_rcpt_lookup_seconds"
        lines += [f"# HELP {name} Time to look a recipient up in the list.", f"# TYPE {name} histogram"]
        total = 0
        for bound, count in zip((*map(str, RCPT_BUCKETS), "+Inf"), self.rcpt_counts, strict=True):
            total += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {total}')
        lines += [f"{name}_sum {self.rcpt_sum!r}", f"{name}_count {total}"]
        seen: set[str] = set()
        for gname, text, labels, value in gauges:
            if gname not in seen:
                seen.add(gname)
                lines += [f"# HELP {gname} {text}", f"# TYPE {gname} gauge"]
            lines.append(f"{gname}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


METRICS = Metrics()  # the process's registry (an empty object: nothing runs at import)
