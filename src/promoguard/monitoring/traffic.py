"""Each campaign version's traffic per minute, in the store: what the dashboard charts and what
an incident's numbers can be checked against.

Every worker's watch adds the orders *it* served (not the ones it hears of on the Redis stream,
so nothing is counted twice) into in-memory sums per ``(campaign, version, minute)`` and flushes
them about once a second with one upsert that adds to the stored row (``INSERT … ON CONFLICT DO
UPDATE SET orders = orders + excluded.orders``, on SQLite and PostgreSQL alike), so the rows are
the sums over all workers. A flush that fails keeps its sums for the next one; at most
``max_keys`` sums are held (the oldest minutes go first, counted in :attr:`TrafficSums.dropped`).

Guard trips are counted the same way, per campaign version and minute, from the quotes this
worker priced (:meth:`TrafficSums.tripped`, called by the quote path's telemetry: a dictionary
increment); a minute may hold trips and no orders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.monitoring.models import CampaignTraffic
from promoguard.monitoring.signals import OrderSignal, Signal
from promoguard.store.db import upsert_insert

__all__ = ["Minute", "MinuteSums", "TrafficSums", "add_to_rows", "series"]

Key = tuple[str, int, int]
"""``(campaign_id, version, unix minute)``."""


@dataclass(slots=True)
class Minute:
    """One version's sums in one minute."""

    orders: int = 0
    list_total: int = 0
    discount: int = 0
    guard_trips: int = 0


K = TypeVar("K", bound=tuple[Any, ...])
V = TypeVar("V")


class MinuteSums(Generic[K, V]):
    """A worker's sums per key and minute (the key's last part is the unix minute), waiting to
    be flushed: at most ``max_keys`` of them, the oldest minute dropped first (counted in
    :attr:`dropped`)."""

    def __init__(self, new: Callable[[], V], max_keys: int = 10_000) -> None:
        self._sums: dict[K, V] = {}
        self._new = new
        self._max = max_keys
        self.dropped = 0

    def _entry(self, key: K) -> V:
        sums = self._sums
        entry = sums.get(key)
        if entry is None:
            if len(sums) >= self._max:
                del sums[min(sums, key=lambda k: k[-1])]
                self.dropped += 1
            entry = sums[key] = self._new()
        return entry

    def __len__(self) -> int:
        return len(self._sums)

    def flushed(self) -> None:
        """Forget the sums a committed flush wrote."""
        self._sums.clear()


async def add_to_rows(
    session: AsyncSession,
    table: Any,
    rows: list[dict[str, Any]],
    *,
    key: Sequence[str],
    added: Sequence[str],
) -> int:
    """Upsert ``rows`` into ``table`` (a mapped class), adding the ``added`` columns to a stored
    row with the same ``key`` (in the caller's transaction); returns the rows written.

    One statement run for each row (the driver's ``executemany``), not one statement holding
    every row: its text is always the same, so SQLAlchemy compiles it once per process instead
    of on every flush (a flush every second per worker). Measured on PostgreSQL: 5-6 ms of CPU
    per flush of 40 rows, against 18-21 ms for the statement of every row."""
    if not rows:
        return 0
    columns = table.__table__.c
    insert = upsert_insert(session)(table.__table__)
    statement = insert.on_conflict_do_update(
        index_elements=[columns[name] for name in key],
        set_={name: columns[name] + insert.excluded[name] for name in added},
    )
    await session.execute(statement, rows)
    return len(rows)


class TrafficSums(MinuteSums[Key, Minute]):
    """Per-minute sums of a worker's own orders, waiting to be flushed."""

    def __init__(self, max_keys: int = 10_000) -> None:
        super().__init__(Minute, max_keys)

    def add(self, signals: Iterable[Signal]) -> None:
        """Count the orders among ``signals`` for each campaign version that discounted them."""
        for signal in signals:
            if not isinstance(signal, OrderSignal) or not signal.discounts:
                continue
            minute = int(signal.at // 60)
            for campaign_id, version, amount in signal.discounts:
                entry = self._entry((campaign_id, version, minute))
                entry.orders += 1
                entry.list_total += signal.list_total
                entry.discount += amount

    def tripped(self, at: float, trips: Sequence[tuple[str, int]]) -> None:
        """Count guard trips of a quote priced at ``at``: ``(campaign_id, version)`` per trip."""
        minute = int(at // 60)
        for campaign_id, version in trips:
            self._entry((campaign_id, version, minute)).guard_trips += 1

    async def flush(self, session: AsyncSession) -> int:
        """Add the sums to the stored rows (in the caller's transaction); returns the rows
        written. The sums are cleared only by :meth:`flushed` once that transaction committed."""
        rows = [
            {
                "campaign_id": campaign_id,
                "version": version,
                "minute": datetime.fromtimestamp(minute * 60, UTC),
                "orders": m.orders,
                "list_total": m.list_total,
                "discount": m.discount,
                "guard_trips": m.guard_trips,
            }
            for (campaign_id, version, minute), m in sorted(self._sums.items())
        ]
        return await add_to_rows(
            session,
            CampaignTraffic,
            rows,
            key=("campaign_id", "version", "minute"),
            added=("orders", "list_total", "discount", "guard_trips"),
        )


async def series(
    session: AsyncSession, campaign_id: str, *, since: datetime
) -> list[CampaignTraffic]:
    """A campaign's stored minutes from ``since`` on, oldest first (every version)."""
    rows = await session.scalars(
        select(CampaignTraffic)
        .where(CampaignTraffic.campaign_id == campaign_id, CampaignTraffic.minute >= since)
        .order_by(CampaignTraffic.minute, CampaignTraffic.version)
    )
    return list(rows.all())


def window(minutes: int, now: datetime | None = None) -> datetime:
    """The start of the last ``minutes`` minutes."""
    return (now or datetime.now(UTC)) - timedelta(minutes=minutes)
