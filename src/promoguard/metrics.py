"""Prometheus metrics: every metric the service keeps, and ``/metrics`` in the text format.

Every metric is registered in a ``CollectorRegistry`` handed to its owner, never in
``prometheus_client``'s global default registry, so two apps in one process (tests) do not
collide.

Several worker processes use prometheus-client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set, each process writes its values to files in that directory
and ``/metrics`` answers, whichever worker serves it, the sum over every worker's files (a
``MultiProcessCollector``), never one worker's own numbers. prometheus-client chooses between
in-memory and file-backed values when it is first imported, so the variable must be in the
environment before that: ``promoguard serve`` sets it before uvicorn spawns its workers (see
``multiprocess_dir``). Gauges need a ``multiprocess_mode`` saying how the workers' values
combine; the breaker state gauge (``members/clients.py``) uses ``livemax``: the worst state any
live worker sees.

Label values stay bounded: ``route`` is the route template, ``method`` one of the HTTP methods,
``campaign`` a campaign of the shop, ``code`` and ``limit`` the service's own codes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

__all__ = [
    "LATENCY_BUCKETS",
    "MULTIPROC_DIR_ENV",
    "ORDER_WIDE",
    "UNMATCHED_ROUTE",
    "ServiceMetrics",
    "metrics_response",
    "multiprocess_dir",
    "new_registry",
]

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client still honours the old lower-case spelling (with a deprecation warning).
_LEGACY_MULTIPROC_DIR_ENV: Final = "prometheus_multiproc_dir"

# Seconds, from 1 ms to 2 s; 0.25 is the latency SLO the alert rules test against.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.0,
)

# The route label of a request that matched no route (404s for arbitrary paths).
UNMATCHED_ROUTE: Final = "unmatched"
# The rule label of a guard trip on the whole order (no rule id starts with a parenthesis).
ORDER_WIDE: Final = "(order)"

_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def _campaign_totals(discounts: Sequence[tuple[str, int, int]]) -> dict[tuple[str, str], int]:
    """Discount per (campaign, version): a campaign counts once per quote or order, however
    many lines it discounted. A negative amount is a caller's bug; it counts as 0 (a counter
    cannot go down, and metrics must never fail a quote or an order)."""
    totals: dict[tuple[str, str], int] = {}
    for campaign_id, version, amount in discounts:
        if amount < 0:
            log.warning("discount %s of %s v%s counted as 0", amount, campaign_id, version)
        key = (campaign_id, str(version))
        totals[key] = totals.get(key, 0) + max(amount, 0)
    return totals


_REMEMBERED = 10_000
"""Children kept per lookup table; past that (a flood of odd methods) they are looked up anew."""


def _remember(table: dict[Any, Any], key: object, children: object) -> None:
    if len(table) < _REMEMBERED:
        table[key] = children


class ServiceMetrics:
    """Every metric the service keeps, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "promoguard_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "promoguard_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._quotes = Counter("promoguard_quotes", "Quotes priced", registry=registry)
        self._degraded = Counter(
            "promoguard_degraded_quotes",
            "Quotes priced without a dependency's answer (member tiers or inventory unknown)",
            registry=registry,
        )
        self._quote_discounts = Counter(
            "promoguard_quote_discounts",
            "Quotes a campaign version discounted",
            ["campaign", "version"],
            registry=registry,
        )
        self._quote_discount_minor = Counter(
            "promoguard_quote_discount_minor",
            "Discount offered in quotes, in minor currency units, by campaign version",
            ["campaign", "version"],
            registry=registry,
        )
        self._orders = Counter("promoguard_orders", "Orders placed", registry=registry)
        self._order_list_minor = Counter(
            "promoguard_order_list_minor",
            "List total of every order placed, in minor currency units",
            registry=registry,
        )
        self._campaign_orders = Counter(
            "promoguard_campaign_orders",
            "Orders a campaign version discounted",
            ["campaign", "version"],
            registry=registry,
        )
        self._campaign_discount_minor = Counter(
            "promoguard_campaign_discount_minor",
            "Discount given in orders, in minor currency units, by campaign version",
            ["campaign", "version"],
            registry=registry,
        )
        self._campaign_list_minor = Counter(
            "promoguard_campaign_list_minor",
            "List total of the orders a campaign version discounted, in minor currency units",
            ["campaign", "version"],
            registry=registry,
        )
        self._guard_trips = Counter(
            "promoguard_guard_trips",
            "Discounts a guard cut or refused, by rule and limit",
            ["rule", "limit"],
            registry=registry,
        )
        self._rejections = Counter(
            "promoguard_security_rejections",
            "Requests the security guard refused, by problem code",
            ["code"],
            registry=registry,
        )
        self._claims = Counter(
            "promoguard_coupon_claims",
            "Coupon claims, by campaign and outcome (ok or the problem code)",
            ["campaign", "outcome"],
            registry=registry,
        )
        self._alerts = Counter(
            "promoguard_alerts",
            "Alerts raised by the service's own monitors, by rule and severity",
            ["rule", "severity"],
            registry=registry,
        )
        self._auto_pauses = Counter(
            "promoguard_auto_pauses",
            "Campaigns paused automatically by a monitor",
            ["campaign"],
            registry=registry,
        )
        # The labelled children the hot paths use, looked up once: ``labels()`` checks and sorts
        # its arguments and takes a lock on every call.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._quote_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` is the route template, never the raw path."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            verb = method.upper()
            verb = verb if verb in _METHODS else "OTHER"
            children = (
                self._requests.labels(route=route, method=verb, status=str(status)),
                self._latency.labels(route=route, method=verb),
            )
            _remember(self._request_children, key, children)
        children[0].inc()
        children[1].observe(max(seconds, 0.0))

    def quote(self, discounts: Sequence[tuple[str, int, int]], degraded: bool) -> None:
        """Count one quote and the (campaign id, version, amount) of each discount it offers."""
        self._quotes.inc()
        if degraded:
            self._degraded.inc()
        for key, amount in _campaign_totals(discounts).items():
            children = self._quote_children.get(key)
            if children is None:
                campaign, version = key
                children = (
                    self._quote_discounts.labels(campaign=campaign, version=version),
                    self._quote_discount_minor.labels(campaign=campaign, version=version),
                )
                _remember(self._quote_children, key, children)
            children[0].inc()
            children[1].inc(amount)

    def order(self, discounts: Sequence[tuple[str, int, int]], list_total: int) -> None:
        """Count one order, its list total and the (campaign id, version, amount) it gave."""
        list_minor = max(list_total, 0)
        self._orders.inc()
        self._order_list_minor.inc(list_minor)
        for (campaign, version), amount in _campaign_totals(discounts).items():
            self._campaign_orders.labels(campaign=campaign, version=version).inc()
            self._campaign_discount_minor.labels(campaign=campaign, version=version).inc(amount)
            self._campaign_list_minor.labels(campaign=campaign, version=version).inc(list_minor)

    def guard_trip(self, rule_id: str | None, limit: str) -> None:
        """Count a guard cutting rule ``rule_id``'s discount (None: the order's) at ``limit``."""
        self._guard_trips.labels(rule=ORDER_WIDE if rule_id is None else rule_id, limit=limit).inc()

    def rejection(self, code: str) -> None:
        """Count a request refused by the security guard with problem ``code``."""
        self._rejections.labels(code=code).inc()

    def claim(self, campaign_id: str, ok: bool, code: str | None) -> None:
        """Count a coupon claim: outcome ``ok``, else its problem ``code`` (``error`` if none)."""
        outcome = "ok" if ok else (code or "error")
        self._claims.labels(campaign=campaign_id, outcome=outcome).inc()

    def alert(self, rule: str, severity: str) -> None:
        """Count an alert the service raised."""
        self._alerts.labels(rule=rule, severity=severity).inc()

    def auto_pause(self, campaign_id: str) -> None:
        """Count a campaign paused automatically."""
        self._auto_pauses.labels(campaign=campaign_id).inc()


def new_registry() -> CollectorRegistry:
    """A fresh registry for one application's metrics."""
    return CollectorRegistry()


def _configured_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or os.environ.get(_LEGACY_MULTIPROC_DIR_ENV) or None


def metrics_response(registry: CollectorRegistry) -> Response:
    """The metrics in the Prometheus text format, as a response for ``/metrics``.

    In multiprocess mode the answer is every worker's files summed; ``registry`` is left out,
    as its values are already in this process's file and would count twice.
    """
    path = _configured_dir()
    if path is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[Path | None]:
    """Prepare multiprocess mode for ``workers`` processes; yield its directory, or None.

    A directory the user configured (``PROMETHEUS_MULTIPROC_DIR``) is created if missing and
    its stale ``*.db`` files removed, as gunicorn's ``child_exit`` hook and a clean start would
    have; uvicorn's workers have no such hook. Without one, several workers get a fresh
    temporary directory, set in the environment their processes inherit and removed on exit;
    one worker stays in single-process mode.
    """
    configured = _configured_dir()
    if configured is not None:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield path
        return
    if workers <= 1:
        yield None
        return
    with tempfile.TemporaryDirectory(
        prefix="promoguard-metrics-", ignore_cleanup_errors=True
    ) as created:
        os.environ[MULTIPROC_DIR_ENV] = created
        try:
            yield Path(created)
        finally:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
