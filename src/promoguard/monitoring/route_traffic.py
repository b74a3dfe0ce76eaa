"""Each route's requests per minute, in the store: how many, how many 4xx and 5xx, and a latency
histogram, so the dashboard can chart the error rate and p99 of every route over all workers.

The request middleware already hands every answered request to the watch as a
:class:`~promoguard.monitoring.signals.RequestSignal` (an append to a bounded buffer); the watch
adds the signals it drains into in-memory sums per ``(route, minute)`` here, and flushes them
with its campaign traffic, about once a second, in one upsert that adds to the stored row
(``INSERT … ON CONFLICT DO UPDATE SET requests = requests + excluded.requests``, on SQLite and
PostgreSQL alike). Latency is counted in the fixed buckets of
:data:`~promoguard.monitoring.models.LATENCY_BOUNDS_MS`: bucket counts add up across workers, so
p99 over any set of rows is read from their summed buckets (:func:`quantile_ms`), which a
per-worker p99 could not give. A flush that fails keeps its sums for the next one; at most
``max_keys`` sums are held (the oldest minutes go first, counted in :attr:`RouteSums.dropped`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.monitoring.models import LATENCY_BOUNDS_MS, RouteTraffic
from promoguard.monitoring.signals import RequestSignal, Signal
from promoguard.monitoring.traffic import MinuteSums, add_to_rows

__all__ = [
    "BUCKETS",
    "RouteMinute",
    "RouteSums",
    "buckets_of",
    "quantile_ms",
    "route_series",
]

BUCKETS = (*(f"le_{bound}ms" for bound in LATENCY_BOUNDS_MS), f"over_{LATENCY_BOUNDS_MS[-1]}ms")
"""The bucket columns of ``route_traffic``, fastest first."""

_BOUNDS_S = tuple(bound / 1000 for bound in LATENCY_BOUNDS_MS)

Key = tuple[str, int]
"""``(route, unix minute)``."""


@dataclass(slots=True)
class RouteMinute:
    """One route's sums in one minute."""

    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))


class RouteSums(MinuteSums[Key, RouteMinute]):
    """Per-minute sums of the requests a worker answered, waiting to be flushed."""

    def __init__(self, max_keys: int = 10_000) -> None:
        super().__init__(RouteMinute, max_keys)

    def add(self, signals: Iterable[Signal]) -> None:
        """Count the requests among ``signals``."""
        bucket_of = bisect.bisect_left
        for signal in signals:
            if not isinstance(signal, RequestSignal):
                continue
            entry = self._entry((signal.route, int(signal.at // 60)))
            entry.requests += 1
            if signal.status >= 500:
                entry.server_errors += 1
            elif signal.status >= 400:
                entry.client_errors += 1
            entry.buckets[bucket_of(_BOUNDS_S, signal.seconds)] += 1

    async def flush(self, session: AsyncSession) -> int:
        """Add the sums to the stored rows (in the caller's transaction); returns the rows
        written. The sums are cleared only by :meth:`flushed` once that transaction committed."""
        rows = [
            {
                "route": route[:200],
                "minute": datetime.fromtimestamp(minute * 60, UTC),
                "requests": m.requests,
                "client_errors": m.client_errors,
                "server_errors": m.server_errors,
                **dict(zip(BUCKETS, m.buckets, strict=True)),
            }
            for (route, minute), m in sorted(self._sums.items())
        ]
        return await add_to_rows(
            session,
            RouteTraffic,
            rows,
            key=("route", "minute"),
            added=("requests", "client_errors", "server_errors", *BUCKETS),
        )


def buckets_of(row: RouteTraffic) -> list[int]:
    """A stored row's latency bucket counts, fastest first."""
    return [int(getattr(row, name)) for name in BUCKETS]


def quantile_ms(buckets: Sequence[int], q: float = 0.99) -> float | None:
    """The ``q`` quantile of the latencies counted in ``buckets``, in milliseconds, or None when
    nothing was counted. Read like Prometheus' ``histogram_quantile``: linear within the bucket
    the quantile falls in; above the last bound it is that bound (all a histogram can tell)."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            low = 0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            high = LATENCY_BOUNDS_MS[index]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


async def route_series(session: AsyncSession, *, since: datetime) -> list[RouteTraffic]:
    """Every route's stored minutes from ``since`` on, oldest first."""
    rows = await session.scalars(
        select(RouteTraffic)
        .where(RouteTraffic.minute >= since)
        .order_by(RouteTraffic.minute, RouteTraffic.route)
    )
    return list(rows.all())
