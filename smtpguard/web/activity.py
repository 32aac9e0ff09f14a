"""The activity view: audit events filtered by person and date, per-day counts, CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from smtpguard.inputs import InvalidInput, parse_date
from smtpguard.service import Service
from smtpguard.suppression.store import Event

MAX_EVENTS = 10_000
ACTIONS = ("rejected", "stripped", "monitored")


@dataclass(frozen=True, slots=True)
class Filter:
    person: str = ""
    start: str | None = None  # YYYY-MM-DD, inclusive
    end: str | None = None  # YYYY-MM-DD, inclusive

    @classmethod
    def parse(cls, person: str | None, start: str | None, end: str | None) -> Filter:
        f = cls((person or "").strip(), parse_date(start or None, "from"), parse_date(end or None, "to"))
        if f.start and f.end and f.end < f.start:
            raise InvalidInput("the end date is before the start date")
        return f

    def keeps(self, e: Event) -> bool:
        day = e.time[:10]
        if self.end and day > self.end:
            return False
        if self.start and day < self.start:
            return False
        p = self.person.casefold()
        return not p or p in e.user.casefold() or p in e.sender.casefold()


async def events(service: Service, f: Filter) -> list[Event]:
    """The newest events (at most MAX_EVENTS) that pass the filter, newest first."""
    found = await service.log(since=f.start, limit=MAX_EVENTS if not f.person and not f.end else None)
    kept = [e for e in found if f.keeps(e)]
    kept.sort(key=lambda e: e.time, reverse=True)
    return kept[:MAX_EVENTS]


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    counts: dict[str, int]
    total: int


def per_day(found: Sequence[Event], days: int = 31) -> list[Bar]:
    """Counts by day and action over the last `days` days that have events (oldest first)."""
    by_day: dict[str, Counter[str]] = {}
    for e in found:
        by_day.setdefault(e.time[:10], Counter())[e.action] += 1
    if not by_day:
        return []
    last = dt.date.fromisoformat(max(by_day))
    span = [(last - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    first_used = min(by_day)
    span = [d for d in span if d >= first_used]
    return [Bar(d, dict(by_day.get(d, Counter())), sum(by_day.get(d, Counter()).values())) for d in span]


COLORS = {"rejected": "#b3261e", "stripped": "#c77700", "monitored": "#5a6b7b"}


def chart_svg(bars: Sequence[Bar], title: str) -> str:
    """Stacked bars per day as inline SVG (server-rendered: no script needed)."""
    if not bars:
        return ""
    width, height, gap = 600, 120, 2
    bar_w = max(2, width // max(len(bars), 14) - gap)  # a few days still look like bars, not blocks
    top = max(b.total for b in bars) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 16}" role="img" aria-label="{title}"'
        ' preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, b in enumerate(bars):
        x = i * (bar_w + gap)
        y = height
        for action in ACTIONS:
            n = b.counts.get(action, 0)
            if not n:
                continue
            h = max(1, round(n * height / top))
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y}" width="{bar_w}" height="{h}" fill="{COLORS[action]}">'
                f"<title>{b.day} {action}: {n}</title></rect>"
            )
    parts.append(f'<text x="0" y="{height + 14}" font-size="11">{bars[0].day}</text>')
    end = min(width, len(bars) * (bar_w + gap))
    parts.append(f'<text x="{end}" y="{height + 14}" font-size="11" text-anchor="end">{bars[-1].day}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_csv(found: Sequence[Event]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["time", "action", "sender", "recipient", "entry", "source", "client", "user", "message_id"])
    for e in found:
        w.writerow([e.time, e.action, e.sender, e.recipient, e.entry, e.source, e.client, e.user, e.message_id])
    return out.getvalue()
