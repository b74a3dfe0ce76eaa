"""The service's health across every worker: each route's requests, server error rate and p99
latency per minute, from the stored per-minute sums (``route_traffic``, migration 0012)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from promoguard.monitoring.route_traffic import route_series
from promoguard.monitoring.traffic import window
from promoguard.ui import charts
from promoguard.ui.common import Operator, html_route, page, render, services

router = APIRouter()

CHART_MINUTES = 60
ROUTE_CHARTS = 6
"""The busiest routes get their own charts; every route is in the table."""


@dataclass(frozen=True, slots=True)
class RouteSummary:
    """One route over the whole window."""

    route: str
    total: charts.RouteMinute
    error_chart: Any = None
    p99_chart: Any = None


def _route_charts(n: int, route: str, minutes: list[charts.RouteMinute]) -> tuple[Any, Any]:
    errors = charts.line_chart(
        f"route-{n}-errors",
        f"Server error rate (5xx) per minute of {route}",
        minutes,
        [m.error_rate_bps for m in minutes],
        unit="bps",
    )
    p99 = charts.line_chart(
        f"route-{n}-p99",
        f"p99 latency per minute of {route}",
        minutes,
        [m.p99_ms for m in minutes],
        unit="ms",
    )
    return errors, p99


async def _health(request: Request) -> dict[str, Any]:
    since = window(CHART_MINUTES)
    async with services(request).db.read() as session:
        rows = await route_series(session, since=since)
    every = charts.route_minutes(rows, since, CHART_MINUTES)
    totals: dict[str, charts.RouteMinute] = {}
    for row in rows:
        totals.setdefault(row.route, charts.RouteMinute(at=since)).add(row)
    busiest = sorted(totals.items(), key=lambda item: (-item[1].requests, item[0]))
    routes = []
    for n, (route, total) in enumerate(busiest):
        if n < ROUTE_CHARTS:
            minutes = charts.route_minutes(rows, since, CHART_MINUTES, route)
            routes.append(RouteSummary(route, total, *_route_charts(n, route, minutes)))
        else:
            routes.append(RouteSummary(route, total))
    overall = charts.RouteMinute(at=since)
    for total in totals.values():
        overall.requests += total.requests
        overall.client_errors += total.client_errors
        overall.server_errors += total.server_errors
        overall.buckets = [a + b for a, b in zip(overall.buckets, total.buckets, strict=True)]
    return {
        "chart_minutes": CHART_MINUTES,
        "overall": overall,
        "routes": routes,
        "requests_chart": charts.line_chart(
            "all-requests",
            "Requests per minute, every route",
            every,
            [m.requests for m in every],
            unit="requests",
        ),
        "errors_chart": charts.line_chart(
            "all-errors",
            "Server error rate (5xx) per minute, every route",
            every,
            [m.error_rate_bps for m in every],
            unit="bps",
        ),
        "p99_chart": charts.line_chart(
            "all-p99",
            "p99 latency per minute, every route",
            every,
            [m.p99_ms for m in every],
            unit="ms",
        ),
    }


@html_route(router, "/ui/health")
async def health(request: Request) -> Response:
    """Requests, error rate and p99 of every route over the last hour."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    return render(request, "health.html.j2", **await _health(request))


@html_route(router, "/ui/health/live")
async def health_live(request: Request) -> Response:
    """The live part of the health page (the page polls it)."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    return render(request, "health_live.html.j2", **await _health(request))
