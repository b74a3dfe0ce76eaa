"""One place the service reports what happens: Prometheus metrics and the detectors' stream.

The request middleware, the quote and order paths, the coupon claim route and the error handler
call a :class:`Telemetry`. Each call updates the metrics (when a registry is wired) and hands a
signal to the :class:`~promoguard.monitoring.watch.Watch` (when monitoring runs), which only
appends it to a bounded buffer: nothing here waits on I/O, so the order path is not slowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from promoguard.metrics import ServiceMetrics
from promoguard.monitoring.signals import ClaimSignal, OrderSignal, RequestSignal, Signal
from promoguard.promotions.model import Quote

__all__ = ["Telemetry"]


def _discounts(quote: Quote) -> tuple[tuple[str, int, int], ...]:
    return tuple((d.rule_id, d.rule_version, d.amount) for d in quote.discounts)


class Telemetry:
    """Metrics and monitoring signals; with neither wired, every call does nothing."""

    def __init__(
        self,
        metrics: ServiceMetrics | None = None,
        observe: Callable[[Signal], None] | None = None,
        clock: Callable[[], float] = time.time,
        tripped: Callable[[float, Sequence[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.observe = observe
        self._clock = clock
        self.tripped = tripped
        """Where a quote's guard trips go per campaign version (the watch's per-minute sums)."""

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""
        if self.metrics is not None:
            self.metrics.request(route, method, status, seconds)
        if self.observe is not None:
            self.observe(RequestSignal(self._clock(), route, status, seconds))

    def quoted(self, quote: Quote, degraded: bool) -> None:
        """One quote priced (and its guard trips)."""
        if self.metrics is not None:
            self.metrics.quote(_discounts(quote), degraded)
            for trip in quote.trips:
                self.metrics.guard_trip(trip.rule_id, trip.limit)
        if quote.trips and self.tripped is not None:
            # A trip names its rule (the campaign); the explanation has the version it priced.
            versions = {e.rule_id: e.rule_version for e in quote.explanation}
            tripped = [
                (t.rule_id, versions[t.rule_id])
                for t in quote.trips
                if t.rule_id is not None and t.rule_id in versions
            ]
            if tripped:
                self.tripped(self._clock(), tripped)

    def ordered(
        self,
        *,
        order: dict[str, Any],
        customer_id: str,
        member_tier: str | None,
        identity: Sequence[str],
    ) -> None:
        """One order committed (``order`` is the order as the API returns it)."""
        discounts = tuple(
            (d["rule_id"], int(d["rule_version"]), int(d["amount"])) for d in order["discounts"]
        )
        if self.metrics is not None:
            self.metrics.order(discounts, int(order["list_total"]))
        if self.observe is not None:
            self.observe(
                OrderSignal(
                    at=self._clock(),
                    order_id=str(order["id"]),
                    customer_id=customer_id,
                    list_total=int(order["list_total"]),
                    discount_total=int(order["discount_total"]),
                    member_tier=member_tier,
                    identity=tuple(identity),
                    discounts=discounts,
                )
            )

    def claimed(self, campaign_id: str, customer_id: str, code: str | None) -> None:
        """One coupon claim: ``code`` is None when it succeeded, else the refusal's code."""
        if self.metrics is not None:
            self.metrics.claim(campaign_id, code is None, code)
        if self.observe is not None:
            self.observe(ClaimSignal(self._clock(), campaign_id, customer_id, code is None, code))

    def rejected(self, code: str) -> None:
        """A request refused by the security layer (signature, replay, IP, rate limit)."""
        if self.metrics is not None:
            self.metrics.rejection(code)
