"""Impact simulation: what a candidate campaign version would do to real (or synthetic) carts.

A sample of carts with their customers is priced twice at one instant: under the live rule set
(the *baseline*) and under the live set with the candidate in it (*with candidate*). The two
sides are summed up as :class:`SideReport`; the candidate's own discount gives a budget burn
:class:`Forecast` and the campaign's expected *profile*, which monitoring later compares live
traffic against. Pure: no I/O, no clock, no floats (money in minor units, rates in basis points).

Assumptions the numbers rest on (a worst-realistic estimate, so an operator is never told a
campaign is cheaper than it can turn out):

* **The candidate replaces its own campaign.** A live rule with the candidate's id is an older
  version of it and is left out of the *with candidate* side (it stays in the baseline), so the
  campaign is never counted twice.
* **One pricing instant.** Both sides are priced at ``now``; when the candidate has a validity
  window and ``now`` is outside it, both are priced at the window's start instead (or, for a
  window that has ended and has no start, at the last microsecond before its end), so the
  simulation still says what the campaign does while it runs. :attr:`SimulationReport.priced_at`
  says which instant was used.
* **Every sampled customer can use the candidate.** On the *with candidate* side only: for a
  coupon every customer holds it; for a group-buy every customer holds a complete group's place;
  for a flash sale nobody has bought any of its units yet; and the candidate is never
  "unavailable" (its budget or stock used up). A first-order candidate keeps each sample's own
  ``first_order`` fact, and a member price each sample's own tier. The baseline prices every
  customer exactly as sampled.
* **No run-time caps.** ``max_redemptions``, ``per_customer``, coupon ``quantity`` and flash-sale
  ``stock`` are not applied to the forecast: it is what the campaign *asks* to spend, which is
  what its budget must cover.

Percentiles use the **nearest-rank** method: the p-th percentile of ``n`` sorted values is the
value at rank ``ceil(p * n / 100)`` (1-based), so it is always one of the observed values. A
cart's discount rate is its discount over its list total in basis points, rounded down (0 for a
cart whose list total is 0).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from promoguard.money import BPS_WHOLE, allocate
from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.engine import PricingError, PricingPolicy, RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer, Quote
from promoguard.promotions.rules import Rule

__all__ = [
    "NO_TIER",
    "PROFILE_SCHEMA_VERSION",
    "SOURCES",
    "Forecast",
    "Sample",
    "SideReport",
    "SimulationReport",
    "nearest_rank",
    "pricing_instant",
    "simulate",
    "synthetic_sample",
]

PROFILE_SCHEMA_VERSION = 1
"""Written into every expected profile so stored profiles can be migrated."""

SOURCES = ("orders", "synthetic")
"""Where a sample can come from: recorded quotes, or :func:`synthetic_sample`."""

NO_TIER = "none"
"""The member-tier key for customers without a tier in a profile's tier mix."""

_SYNTHETIC_NO_TIER_PERCENT = 70
"""Share of synthetic customers without a member tier; the rest spread over the shop's tiers."""

_SYNTHETIC_FIRST_ORDER_IN = 10
"""One synthetic customer in this many is on a first order."""

_SYNTHETIC_QUANTITIES = (1, 1, 1, 2, 3)
"""Units per synthetic line: most lines are one unit, as in real carts."""

_MAX_SYNTHETIC_LINES = 5


@dataclass(frozen=True, slots=True)
class Sample:
    """One cart to re-price with the customer it was priced for."""

    cart: Cart
    customer: Customer


@dataclass(frozen=True, slots=True)
class SideReport:
    """The sample priced under one rule set: the live set, or the live set plus the candidate."""

    carts: int
    list_total: int
    """Sum of the carts' list totals, minor units."""
    discount: int
    """Sum of every discount given, minor units."""
    rate_p50_bps: int
    rate_p95_bps: int
    rate_max_bps: int
    """Per cart: discount / list total in basis points, over every cart in the sample."""
    floor_hits: int
    """Carts where the guard (a floor price or a max-discount ratio) cut some discount."""
    orders_per_rule: dict[str, int]
    """Rule id -> carts the rule discounted."""
    discount_per_rule: dict[str, int]
    """Rule id -> discount the rule gave over the sample, minor units."""

    def as_dict(self) -> dict[str, Any]:
        """This side as JSON-ready data (rule maps sorted by rule id)."""
        return {
            "carts": self.carts,
            "list_total": self.list_total,
            "discount": self.discount,
            "rate_p50_bps": self.rate_p50_bps,
            "rate_p95_bps": self.rate_p95_bps,
            "rate_max_bps": self.rate_max_bps,
            "floor_hits": self.floor_hits,
            "orders_per_rule": dict(sorted(self.orders_per_rule.items())),
            "discount_per_rule": dict(sorted(self.discount_per_rule.items())),
        }


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the candidate is expected to spend over its window, against its budget."""

    expected_orders: int
    candidate_discount_per_order: int
    """The candidate's discount averaged over every sampled cart (discounted or not), rounded
    up to the minor unit."""
    forecast_spend: int
    """``ceil(discount per order * expected_orders * rollout_bps / 10,000)``, exact."""
    budget: int | None
    exceeds_budget: bool
    window_hours: int | None
    """Hours from ``valid_from`` to ``valid_until`` rounded up, when both are set."""

    def as_dict(self) -> dict[str, Any]:
        """The forecast as JSON-ready data."""
        return {
            "expected_orders": self.expected_orders,
            "candidate_discount_per_order": self.candidate_discount_per_order,
            "forecast_spend": self.forecast_spend,
            "budget": self.budget,
            "exceeds_budget": self.exceeds_budget,
            "window_hours": self.window_hours,
        }


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Both sides, the forecast and the expected profile of one candidate version."""

    candidate_id: str
    candidate_version: int
    source: str
    """Where the sample came from: ``orders`` (recorded quotes) or ``synthetic``."""
    baseline: SideReport
    with_candidate: SideReport
    forecast: Forecast
    profile: dict[str, Any]
    """The expected profile monitoring compares live traffic against (see :func:`simulate`)."""
    priced_at: datetime | None = None
    """The instant both sides were priced at (``now``, or the candidate's window start)."""

    @property
    def blocked(self) -> bool:
        """Whether going live is blocked: the forecast spend exceeds the candidate's budget."""
        return self.forecast.exceeds_budget

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: ints, strings, booleans and None only, no floats."""
        return {
            "candidate_id": self.candidate_id,
            "candidate_version": self.candidate_version,
            "source": self.source,
            "priced_at": None if self.priced_at is None else self.priced_at.isoformat(),
            "blocked": self.blocked,
            "baseline": self.baseline.as_dict(),
            "with_candidate": self.with_candidate.as_dict(),
            "forecast": self.forecast.as_dict(),
            "profile": self.profile,
        }


# -- sampling ---------------------------------------------------------------------------------


def synthetic_sample(catalogue: Catalogue, *, size: int = 500, seed: int = 0) -> list[Sample]:
    """Build ``size`` plausible carts and customers from the catalogue, the same for a seed.

    Carts have 1-5 distinct SKUs (fewer when the catalogue is smaller) of 1-3 units each, drawn
    with a lean towards cheaper items. Customers are ``c-sim-<n>``: about 70 % without a member
    tier and the rest spread evenly over the catalogue's tiers, about 10 % on a first order.

    Args:
        catalogue: the SKUs and member tiers to draw from.
        size: how many samples to build (at least 1).
        seed: the random seed; the same seed gives the same samples.

    Returns:
        The samples, in a fixed order.

    Raises:
        ValueError: the catalogue has no items, or ``size`` is below 1.
    """
    if not catalogue.items:
        raise ValueError("the catalogue has no items: load one before simulating without history")
    if size < 1:
        raise ValueError(f"a synthetic sample needs a size of at least 1, not {size}")
    # Cheapest first, so a draw leaning to low positions leans to cheap items.
    items = sorted(catalogue.items, key=lambda i: (i.unit_price, i.sku))
    tiers = sorted(catalogue.member_tiers)
    rng = _Draw(seed)
    return [
        Sample(
            cart=Cart(currency=catalogue.currency, lines=_synthetic_lines(rng, items)),
            customer=_synthetic_customer(rng, n, tiers),
        )
        for n in range(1, size + 1)
    ]


class _Draw:
    """Integer-only random draws from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        return self._rng.randrange(n)

    def low_leaning(self, n: int) -> int:
        """An integer in ``[0, n)`` leaning to small ones (the lower of two uniform draws)."""
        return min(self._rng.randrange(n), self._rng.randrange(n))

    def choice(self, options: Sequence[int]) -> int:
        """One of ``options``, uniformly."""
        return options[self._rng.randrange(len(options))]


def _synthetic_lines(rng: _Draw, items: Sequence[CatalogueItem]) -> tuple[CartLine, ...]:
    count = 1 + rng.below(min(_MAX_SYNTHETIC_LINES, len(items)))
    picked: dict[int, None] = {}  # insertion-ordered set: a SKU goes on one line only
    while len(picked) < count:
        picked[rng.low_leaning(len(items))] = None
    return tuple(items[i].line(rng.choice(_SYNTHETIC_QUANTITIES)) for i in picked)


def _synthetic_customer(rng: _Draw, n: int, tiers: Sequence[str]) -> Customer:
    tier = None
    if tiers and rng.below(100) >= _SYNTHETIC_NO_TIER_PERCENT:
        tier = tiers[rng.below(len(tiers))]
    first_order = rng.below(_SYNTHETIC_FIRST_ORDER_IN) == 0
    return Customer(id=f"c-sim-{n}", member_tier=tier, first_order=first_order)


# -- arithmetic -------------------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[int], percentile: int) -> int:
    """The nearest-rank ``percentile`` (1-100) of ascending values; 0 when there are none."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in 1..100, not {percentile}")
    if not sorted_values:
        return 0
    rank = -(-percentile * len(sorted_values) // 100)  # ceil without floats
    return sorted_values[rank - 1]


def _spread(values: Iterable[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {
        "p50": nearest_rank(ordered, 50),
        "p95": nearest_rank(ordered, 95),
        "max": ordered[-1] if ordered else 0,
    }


def _rate_bps(discount: int, list_total: int) -> int:
    return discount * BPS_WHOLE // list_total if list_total > 0 else 0


def _share_bps(part: int, whole: int) -> int:
    return part * BPS_WHOLE // whole if whole > 0 else 0


def _mix_bps(tiers: Sequence[str | None]) -> dict[str, int]:
    """Member-tier shares in basis points that sum to exactly 10,000 (largest remainder)."""
    if not tiers:
        return {}
    counts = sorted(Counter(NO_TIER if t is None else t for t in tiers).items())
    shares = allocate(BPS_WHOLE, [count for _, count in counts])
    return {tier: share for (tier, _), share in zip(counts, shares, strict=True)}


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


# -- the simulation ---------------------------------------------------------------------------


def pricing_instant(candidate: Rule, now: datetime) -> datetime:
    """The instant to price at: ``now``, or the candidate's window start when ``now`` is outside."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise PricingError("now must be timezone-aware")
    starts, ends = candidate.valid_from, candidate.valid_until
    if ends is not None and now >= ends:
        # Ended: its start if it has one, else the last moment it was still running.
        return starts if starts is not None else ends - timedelta(microseconds=1)
    if starts is not None and now < starts:
        return starts
    return now


def _window_hours(candidate: Rule) -> int | None:
    if candidate.valid_from is None or candidate.valid_until is None:
        return None
    span = candidate.valid_until - candidate.valid_from
    return _ceil_div(span // timedelta(microseconds=1), 3_600_000_000)


def _able_to_use(customer: Customer, candidate: Rule) -> Customer:
    """The customer with every fact the candidate needs (see the module's assumptions)."""
    rule_id = candidate.id
    update: dict[str, Any] = {}
    if rule_id in customer.unavailable:
        update["unavailable"] = {k: v for k, v in customer.unavailable.items() if k != rule_id}
    if candidate.kind == "coupon" and rule_id not in customer.coupons:
        update["coupons"] = customer.coupons | {rule_id}
    elif candidate.kind == "group_buy" and rule_id not in customer.groups:
        update["groups"] = customer.groups | {rule_id}
    elif candidate.kind == "flash_sale" and customer.flash_sale_used.get(rule_id):
        used = customer.flash_sale_used
        update["flash_sale_used"] = {k: v for k, v in used.items() if k != rule_id}
    return customer.model_copy(update=update) if update else customer


def _side(quotes: Sequence[Quote]) -> SideReport:
    orders: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    for quote in quotes:
        for discount in quote.discounts:
            orders[discount.rule_id] += 1
            spent[discount.rule_id] += discount.amount
    rates = _spread(_rate_bps(q.discount_total, q.list_total) for q in quotes)
    return SideReport(
        carts=len(quotes),
        list_total=sum(q.list_total for q in quotes),
        discount=sum(q.discount_total for q in quotes),
        rate_p50_bps=rates["p50"],
        rate_p95_bps=rates["p95"],
        rate_max_bps=rates["max"],
        floor_hits=sum(1 for q in quotes if q.trips),
        orders_per_rule=dict(orders),
        discount_per_rule=dict(spent),
    )


def _candidate_amount(quote: Quote, rule_id: str) -> int:
    return sum(d.amount for d in quote.discounts if d.rule_id == rule_id)


def _profile(samples: Sequence[Sample], quotes: Sequence[Quote], candidate: Rule) -> dict[str, Any]:
    """The expected profile: how the candidate's orders should look once it is live."""
    own = [_candidate_amount(q, candidate.id) for q in quotes]
    hit = [n for n, amount in enumerate(own) if amount > 0]
    return {
        "schema_version": PROFILE_SCHEMA_VERSION,
        "rule_id": candidate.id,
        "rule_version": candidate.version,
        "sample_carts": len(samples),
        "discounted_orders": len(hit),
        "discounted_share_bps": _share_bps(len(hit), len(samples)),
        "discount_rate_bps": _spread(_rate_bps(own[n], quotes[n].list_total) for n in hit),
        "order_discount_rate_bps": _spread(
            _rate_bps(quotes[n].discount_total, quotes[n].list_total) for n in hit
        ),
        "discount_per_order": _spread(own[n] for n in hit),
        "member_tier_mix_bps": _mix_bps([s.customer.member_tier for s in samples]),
        "discounted_tier_mix_bps": _mix_bps([samples[n].customer.member_tier for n in hit]),
    }


def _forecast(
    candidate: Rule, candidate_total: int, samples: int, expected_orders: int, rollout_bps: int
) -> Forecast:
    # Exact: (total / samples) * orders * (rollout / 10,000), rounded up once at the end.
    spend = _ceil_div(candidate_total * expected_orders * rollout_bps, samples * BPS_WHOLE)
    budget = candidate.limits.budget
    return Forecast(
        expected_orders=expected_orders,
        candidate_discount_per_order=_ceil_div(candidate_total, samples),
        forecast_spend=spend,
        budget=budget,
        exceeds_budget=budget is not None and spend > budget,
        window_hours=_window_hours(candidate),
    )


def simulate(
    samples: Sequence[Sample],
    *,
    live: Sequence[Rule],
    candidate: Rule,
    now: datetime,
    policy: PricingPolicy = PricingPolicy(),  # noqa: B008 - frozen, safe to share
    expected_orders: int | None = None,
    rollout_bps: int = 10_000,
    source: str = "orders",
) -> SimulationReport:
    """Price the sample with and without the candidate; forecast its spend and expected profile.

    See the module docstring for the assumptions (the candidate replaces the live rule with its
    id; one pricing instant, moved to the candidate's window start when ``now`` is outside it;
    every customer can use the candidate; run-time caps are not applied).

    The profile (``SimulationReport.profile``) holds, over the sampled orders the candidate
    discounts: ``discount_rate_bps`` (the candidate's own discount over the list total) and
    ``order_discount_rate_bps`` (every discount on the order over its list total), each as
    ``{"p50", "p95", "max"}`` in basis points; ``discount_per_order`` (the candidate's discount,
    minor units, same keys); ``discounted_share_bps`` (share of sampled carts it discounts);
    ``member_tier_mix_bps`` (tier -> share of the whole sample, ``"none"`` for no tier) and
    ``discounted_tier_mix_bps`` (the same over the orders it discounts). Tier shares sum to 10,000.

    Args:
        samples: the carts and customers to re-price (at least one).
        live: the rules live now; at most one version per rule id.
        candidate: the campaign version to assess.
        now: the pricing instant, timezone-aware.
        policy: shop-wide guard limits, for both sides.
        expected_orders: orders expected over the campaign window; the sample size when None.
        rollout_bps: the share of customers the candidate reaches, 0-10,000 basis points.
        source: ``orders`` or ``synthetic``, reported as given.

    Returns:
        Both sides, the forecast (``blocked`` when it exceeds the budget) and the profile.

    Raises:
        ValueError: no samples, an unknown ``source``, or ``expected_orders`` / ``rollout_bps``
            out of range.
        PricingError: ``now`` is naive, or ``live`` has two versions of one rule.
    """
    if not samples:
        raise ValueError("nothing to simulate: the sample is empty")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not 0 <= rollout_bps <= BPS_WHOLE:
        raise ValueError(f"rollout_bps must be in 0..{BPS_WHOLE}, not {rollout_bps}")
    orders = len(samples) if expected_orders is None else expected_orders
    if orders < 0:
        raise ValueError(f"expected_orders cannot be negative, not {orders}")
    at = pricing_instant(candidate, now)
    baseline = RuleSet(live, policy)
    trial = RuleSet([*(r for r in live if r.id != candidate.id), candidate], policy)
    before = [baseline.quote(s.cart, s.customer, at) for s in samples]
    after = [trial.quote(s.cart, _able_to_use(s.customer, candidate), at) for s in samples]
    with_candidate = _side(after)
    candidate_total = with_candidate.discount_per_rule.get(candidate.id, 0)
    return SimulationReport(
        candidate_id=candidate.id,
        candidate_version=candidate.version,
        source=source,
        baseline=_side(before),
        with_candidate=with_candidate,
        forecast=_forecast(candidate, candidate_total, len(samples), orders, rollout_bps),
        profile=_profile(samples, after, candidate),
        priced_at=at,
    )
