"""Traffic as small server-rendered SVG line charts: a campaign's orders, discount spend, the
realised discount rate per minute (against the expected profile's p50 and p95) and guard trips;
each route's requests, server error rate and p99 latency per minute.

No charting library: a chart is a polyline over a fixed minute axis, two labelled reference lines
and a text summary, so it renders without JavaScript and reads in a screen reader (each chart has
a title and a description, and the page has the numbers in a table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from markupsafe import Markup, escape

from promoguard.money import BPS_WHOLE
from promoguard.monitoring.models import CampaignTraffic, RouteTraffic
from promoguard.monitoring.route_traffic import BUCKETS, buckets_of, quantile_ms

__all__ = [
    "Minute",
    "Reference",
    "RouteMinute",
    "line_chart",
    "per_minute",
    "profile_references",
    "route_minutes",
]

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 28


@dataclass(slots=True)
class Minute:
    """One minute of a campaign, all versions together."""

    at: datetime
    orders: int = 0
    list_total: int = 0
    discount: int = 0
    guard_trips: int = 0
    versions: set[int] = field(default_factory=set)

    @property
    def rate_bps(self) -> int:
        """Discount over list price, in basis points."""
        return self.discount * BPS_WHOLE // self.list_total if self.list_total else 0


@dataclass(frozen=True, slots=True)
class Reference:
    """A horizontal line to compare with (a profile's p50 or p95)."""

    label: str
    value: float
    css: str


def per_minute(rows: Sequence[CampaignTraffic], start: datetime, minutes: int) -> list[Minute]:
    """Every minute of the window from ``start``, zero where nothing was ordered."""
    first = start.replace(second=0, microsecond=0)
    slots = [Minute(at=first + timedelta(minutes=n)) for n in range(minutes + 1)]
    for row in rows:
        index = int((row.minute - first).total_seconds() // 60)
        if 0 <= index < len(slots):
            slot = slots[index]
            slot.orders += row.orders
            slot.list_total += row.list_total
            slot.discount += row.discount
            slot.guard_trips += row.guard_trips
            slot.versions.add(row.version)
    return slots


class Timed(Protocol):
    """Anything charted per minute."""

    @property
    def at(self) -> datetime:
        """The minute's start."""


@dataclass(slots=True)
class RouteMinute:
    """One minute of one route (or of several summed): requests, errors, latency buckets."""

    at: datetime
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def add(self, row: RouteTraffic) -> None:
        """Add a stored row (bucket counts add up across routes and workers)."""
        self.requests += row.requests
        self.client_errors += row.client_errors
        self.server_errors += row.server_errors
        self.buckets = [a + b for a, b in zip(self.buckets, buckets_of(row), strict=True)]

    @property
    def error_rate_bps(self) -> int:
        """5xx answers over requests, in basis points."""
        return self.server_errors * BPS_WHOLE // self.requests if self.requests else 0

    @property
    def p99_ms(self) -> float:
        """The 99th percentile latency in milliseconds (0 with no requests)."""
        return quantile_ms(self.buckets) or 0.0


def route_minutes(
    rows: Sequence[RouteTraffic], start: datetime, minutes: int, route: str | None = None
) -> list[RouteMinute]:
    """Every minute of the window from ``start`` for ``route`` (every route summed when None),
    zero where nothing was asked."""
    first = start.replace(second=0, microsecond=0)
    slots = [RouteMinute(at=first + timedelta(minutes=n)) for n in range(minutes + 1)]
    for row in rows:
        if route is not None and row.route != route:
            continue
        index = int((row.minute - first).total_seconds() // 60)
        if 0 <= index < len(slots):
            slots[index].add(row)
    return slots


def profile_references(profile: dict[str, Any] | None) -> list[Reference]:
    """The expected profile's p50 and p95 of the discount rate, when there is a profile."""
    spread = (profile or {}).get("discount_rate_bps")
    if not isinstance(spread, dict):
        return []
    found = []
    for name, css in (("p50", "ref-p50"), ("p95", "ref-p95")):
        value = spread.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append(Reference(f"expected {name} {value / 100:.2f} %", float(value), css))
    return found


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** max(len(str(int(value))) - 1, 0)
    return float(((int(value) // step) + 1) * step)


def line_chart(
    chart_id: str,
    title: str,
    minutes: Sequence[Timed],
    values: Sequence[float],
    *,
    unit: str,
    refs: Sequence[Reference] = (),
) -> Markup:
    """An accessible SVG line chart of ``values`` (one per minute) with reference lines, in a
    figure captioned with its title (the SVG carries the title and a description too)."""
    top = _nice_top(max([*values, *(r.value for r in refs), 0.0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(values) - 1, 1)

    def x(n: int) -> float:
        return LEFT + plot_w * n / count

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in enumerate(values))
    last = values[-1] if values else 0
    parts = [
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">{len(values)} minutes; latest {_fmt(last, unit)}; '
        f"highest {_fmt(max(values, default=0), unit)}</desc>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(_fmt(top, unit))}</text>",
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if minutes:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">'
            f"{minutes[0].at:%H:%M}</text>"
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
            f"{minutes[-1].at:%H:%M} UTC</text>"
        )
    for ref in refs:
        parts.append(
            f'<line class="{ref.css}" x1="{LEFT}" y1="{y(ref.value):.1f}" '
            f'x2="{WIDTH - RIGHT}" y2="{y(ref.value):.1f}"/>'
            f'<text class="tick" x="{WIDTH - RIGHT - 4}" y="{y(ref.value) - 4:.1f}" '
            f'text-anchor="end">{escape(ref.label)}</text>'
        )
    parts.append(f'<polyline class="series" points="{points}"/>')
    parts.append("</svg></figure>")
    return Markup("".join(parts))


def _fmt(value: float, unit: str) -> str:
    if unit == "bps":
        return f"{value / 100:.2f} %"
    if unit == "fen":
        return f"¥{value / 100:,.2f}"
    if unit == "ms":
        return f"{value:,.1f} ms"
    return f"{value:,.0f}"
