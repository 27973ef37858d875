"""The console's overview: events per source, and each destination's queue with a chart of the last day.

The figures come from one store read (`Store.activity`); the charts are SVG bars drawn on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.delivery import quota_waits
from gateway.model import Activity, DestinationActivity, HourCounts
from gateway.web.console.guard import Visit
from gateway.web.keys import STORE

BUCKET_MS = 3_600_000
BUCKETS = 24
STUCK_AFTER_MS = 300_000  # a pending delivery this old needs a look (as the README's alert says)
CHART_WIDTH, CHART_HEIGHT = 240, 48


@dataclass(frozen=True)
class Bar:
    """One stacked piece of a chart's bar, in the SVG's coordinates."""

    x: float
    y: float
    width: float
    height: float
    part: str  # the CSS class: delivered, pending, dead or events
    label: str  # what a pointer over the bar shows


@dataclass(frozen=True)
class SourceRow:
    name: str
    last_hour: int
    last_day: int
    bars: list[Bar]


@dataclass(frozen=True)
class DestinationRow:
    name: str
    kind: str
    delivered: int
    activity: DestinationActivity
    needs_a_person: bool
    stuck: bool
    bars: list[Bar]
    quota: dict[str, Any] | None  # the spent quota it waits for, as `gateway deliveries` shows it


def _bars(stacks: list[list[tuple[str, int]]], describe: list[str]) -> list[Bar]:
    """Stacked bars, one per stretch, scaled so the tallest fills the chart."""
    tallest = max((sum(count for _, count in stack) for stack in stacks), default=0) or 1
    step = CHART_WIDTH / len(stacks)
    bars = []
    for index, stack in enumerate(stacks):
        top = float(CHART_HEIGHT)
        for part, count in stack:
            if count:
                height = max(count / tallest * CHART_HEIGHT, 1.0)
                top -= height
                bars.append(Bar(index * step + 0.5, top, step - 1, height, part, describe[index]))
    return bars


def _stretch_names(since_ms: int, count: int) -> list[str]:
    hours = [since_ms + index * BUCKET_MS for index in range(count)]
    return [f"{(at // BUCKET_MS) % 24:02d}:{(at // 60_000) % 60:02d} UTC" for at in hours]


def _hour_label(name: str, counts: HourCounts) -> str:
    return f"from {name}: {counts.delivered} delivered, {counts.pending} pending, {counts.dead} dead"


def destination_rows(
    activity: Activity, kinds: Mapping[str, str], now_ms: int, quotas: Mapping[str, dict[str, Any]]
) -> list[DestinationRow]:
    empty = DestinationActivity(0, 0, 0, 0, None, None, None, (HourCounts(),) * BUCKETS)
    names = _stretch_names(activity.since_ms, BUCKETS)
    rows = []
    for name in sorted(set(kinds) | set(activity.destinations)):
        found = activity.destinations.get(name, empty)
        quota = quotas.get(name)  # waiting for a spent quota is the plan, not something stuck
        oldest_ms = found.oldest_pending_ms
        stuck = quota is None and oldest_ms is not None and now_ms - oldest_ms > STUCK_AFTER_MS
        stacks = [[("delivered", h.delivered), ("pending", h.pending), ("dead", h.dead)] for h in found.buckets]
        labels = [_hour_label(label, counts) for label, counts in zip(names, found.buckets, strict=True)]
        rows.append(DestinationRow(
            name, kinds.get(name, "no longer in the config"), sum(h.delivered for h in found.buckets), found,
            needs_a_person=found.dead > 0 or stuck, stuck=stuck, bars=_bars(stacks, labels), quota=quota,
        ))  # fmt: skip
    return rows


def source_rows(activity: Activity, sources: list[str]) -> list[SourceRow]:
    names = _stretch_names(activity.since_ms, BUCKETS)
    rows = []
    for name in sorted(set(sources) | set(activity.events)):
        counts = activity.events.get(name, (0,) * BUCKETS)
        labels = [f"from {label}: {count} events" for label, count in zip(names, counts, strict=True)]
        bars = _bars([[("events", count)] for count in counts], labels)
        rows.append(SourceRow(name, counts[-1], sum(counts), bars))
    return rows


async def overview_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    since_ms = visit.now_ms - BUCKETS * BUCKET_MS
    activity = await request.app[STORE].activity(since_ms, BUCKET_MS, BUCKETS, visit.now_ms)
    config = visit.loaded.config
    kinds = {name: destination.type for name, destination in config.destinations.items()}
    pauses = await quota_waits.quota_pauses(request.app[STORE], visit.now_ms)
    quotas = {name: quota_waits.pause_document(pause, visit.masker) for name, pause in pauses.items()}
    destinations = destination_rows(activity, kinds, visit.now_ms, quotas)
    return visit.page(
        "overview.html", nav="overview", sources=source_rows(activity, list(config.sources)),
        destinations=destinations, attention=[row for row in destinations if row.needs_a_person],
        chart_width=CHART_WIDTH, chart_height=CHART_HEIGHT,
    )
