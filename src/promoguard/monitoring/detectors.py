"""Detectors over sliding windows, and the :class:`Monitor` that feeds them and raises alerts.

Pure: no I/O, no clock (every signal carries its time, :meth:`Monitor.evaluate` is told the time),
no floats for money or ratios (latency seconds and timestamps only). Not thread-safe: one caller
observes and evaluates (the watch loop drains a buffer the request paths append to).

**Windows.** Each rule's detector keeps its own state per key (campaign version, identity signal,
route or coupon): the key's events in arrival order, with running counts, trimmed to the rule's
window on every observation and evaluation (an event counts while ``at > now - window``). A
signal that arrives late is kept in arrival order and leaves the window with its neighbours.
Memory is bounded twice: at most ``max_events_per_key`` events per key (the oldest is dropped)
and at most ``max_keys`` keys per rule (the least recently touched key is forgotten first);
idle keys are forgotten once their window has passed.

**Detectors** (the ``detector`` of a rule; thresholds and params: :mod:`.alert_rules`):

``discount_profile``
    Per campaign version, over its orders in the window: an order is *above profile* when the
    version's own discount rate (its amount over the order's list total, basis points, rounded
    down as in the simulation) exceeds ``threshold x p95`` of the profile's ``discount_rate_bps``,
    or its amount exceeds ``threshold x p95`` of ``discount_per_order``. The alert fires when at
    least ``min_events`` orders are above profile *and* they are too many to be the profile's
    normal tail: their share exceeds ``tail_share_bps`` with at least ``min_evidence`` nats of
    evidence (below). The newest orders are tested first (the newest ``min_events``, then more in
    steps of half of ``min_events`` up to 256 orders, then the whole window), so a fault that
    starts in a busy window is caught after a handful of its orders, not once it fills the window.
    Value: the worst order's factor over its p95. A version without a profile, or whose profile
    discounted no sampled cart (p95 of 0), is not watched: there is nothing to compare with.
``tier_mix``
    Per campaign version that prices by tier, over its discounted orders (``min_events`` at least):
    each member tier's share (``"none"`` for no tier) against the profile's
    ``discounted_tier_mix_bps``. A version *prices by tier* when its profile shows it: some tier's
    share of its discounted orders differs from that tier's share of every sampled order
    (``member_tier_mix_bps``) by more than ``threshold``. Other versions are not watched: their mix
    only mirrors the shop's, and a tier fault does not change what they give (a ``scope = "all"``
    rule sees such a shift). A tier fires when its share exceeds the expected share by more than
    ``threshold`` basis points with at least ``min_evidence`` nats of evidence, testing the newest
    orders first as above. The expected shares come from a sample (often a few dozen discounted
    carts), so the evidence is measured against each share plus two standard errors of that sample
    (a tier the sample never saw: three in the sample size); a profile's sampling noise does not
    page anyone. Alongside, every order's tier is compared with the population mix (the profiles'
    ``member_tier_mix_bps`` weighted by sample size, or ``params.expected_mix_bps``) by the same
    test with ``shop_evidence`` nats; while a tier is over-represented shop-wide, a version whose
    newest discounted orders hold more of it than its expected share's bound fires with
    ``assist_evidence`` nats. So the "normal customer priced as VIP" fault, which floods every order
    with the VIP tier, pauses the member-price version after a dozen or so of its orders, while a
    chance run of one tier among one version's orders needs the full evidence. Value: the tier's
    excess in basis points. With ``params.scope = "all"`` only the shop-wide test runs (with
    ``shop_evidence``): subject ``tiers:all``, no campaign. No profile (and, shop-wide, no
    configured mix either): silent.
``redemption_velocity``
    Per campaign version, in buckets of a tenth of the window: redemptions (orders it discounted)
    in the last window against the baseline, the mean per window over up to ``baseline_windows``
    earlier windows. Fires when the count is at least ``min_events`` and above ``threshold x``
    the baseline (a baseline of zero counts as one redemption over those windows). Silent until
    the version has a full window of history before the last one, so an opening rush is not a
    spike. Value: count over baseline. A version idle for a day is forgotten.
``identity_cluster``
    Per identity signal (``ignore_kinds`` aside, ``account`` by default): distinct customer
    accounts seen on it (orders, and coupon claims whatever their outcome) in the window; fires at
    ``threshold`` accounts (``min_events`` does not apply). Subject ``identity:<signal>``, value
    the account count.
    ``campaign_id`` (with ``version``) is set only when the latest order of every account in the
    cluster used one and the same campaign version, so a pause rule pauses what the cluster is
    farming and nothing else; for a cluster of coupon claims on one coupon it is the coupon's
    campaign with ``version`` None.
``route_slo``
    Per route, over at least ``min_events`` requests in the window: ``error_rate`` (the share of
    answers with status 500 or above; a 4xx is the client's) above ``threshold``, or
    ``p99_seconds`` (nearest-rank p99, over at least 100 requests whatever ``min_events`` says:
    below that it is the slowest request) above ``threshold`` seconds. Value: the rate or the p99
    (rounded to the microsecond).
``claim_failures``
    Per coupon campaign, over at least ``min_events`` claims in the window: the share of claims
    that failed unexpectedly (``ok`` false with a code outside ``ignore_codes``: sold out,
    per-customer limit, not claimable and rate-limited refusals are expected at a rush) above
    ``threshold``. Subject ``coupon:<campaign>``, ``campaign_id`` set, ``version`` None.

**Evidence.** ``n x KL(share || expected)`` in nats: by the Chernoff bound, the chance of seeing
at least that share among ``n`` orders when each is drawn at the expected share is at most
``e^-evidence`` (16 nats: about one in nine million), so a few odd orders among many never fire,
while a run of orders that are all odd fires quickly.

**Alerts.** :meth:`Monitor.evaluate` returns new alerts only: one per rule and subject per the
rule's ``cooldown_seconds``; a condition that persists alerts again once the cooldown has passed.
The campaign detectors (``discount_profile``, ``tier_mix``) and ``identity_cluster`` re-test a key
only when it has new events, so a paused campaign (no new orders) does not alert again.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal
from itertools import islice
from typing import Any, ClassVar, Generic, TypeVar

from promoguard.money import BPS_WHOLE
from promoguard.monitoring.alert_rules import Action, AlertRule, AlertRulesError, rule_errors
from promoguard.monitoring.signals import (
    ClaimSignal,
    OrderSignal,
    RequestSignal,
    Signal,
    identity_kind,
)
from promoguard.promotions.simulate import NO_TIER, PROFILE_SCHEMA_VERSION

__all__ = ["Alert", "ExpectedProfile", "Monitor", "ProfileError"]

Version = tuple[str, int]
"""A campaign version: ``(campaign_id, version)``."""

_SCAN_LIMIT = 256
"""Newest events a campaign detector tests one step at a time before the whole window."""

_P99_LEAST = 100
"""Requests a p99 needs: the nearest-rank p99 of fewer than 100 is the slowest one."""

_BUCKETS_PER_WINDOW = 10
_IDLE_FORGET_SECONDS = 86_400.0
"""Velocity keeps a version's history this long after its last redemption."""

_ALL: Version = ("", 0)
"""The single key of a shop-wide (``scope = "all"``) tier mix."""

_LN = Context(prec=18)
_WHOLE = Decimal(BPS_WHOLE)
_CENTS = Decimal("0.01")
_TEN_THOUSANDTHS = Decimal("0.0001")
_MICROS = Decimal("0.000001")


def _down(value: Decimal, places: Decimal) -> Decimal:
    return value.quantize(places, rounding=ROUND_FLOOR)


# -- expected profiles ------------------------------------------------------------------------


class ProfileError(ValueError):
    """An expected profile the detectors cannot read."""


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(f"{what} must be a whole number, not {value!r}")
    return value


def _p95(profile: Mapping[str, Any], key: str) -> int:
    spread = profile.get(key)
    if not isinstance(spread, Mapping):
        raise ProfileError(f"{key} must be an object with p50, p95 and max")
    return _whole(spread.get("p95"), f"{key}.p95")


def _tier_mix(profile: Mapping[str, Any], key: str) -> dict[str, int]:
    mix = profile.get(key)
    if not isinstance(mix, Mapping):
        raise ProfileError(f"{key} must be an object of tier -> basis points")
    return {str(tier): _whole(share, f"{key}.{tier}") for tier, share in mix.items()}


@dataclass(frozen=True, slots=True)
class ExpectedProfile:
    """The parts of a simulation's expected profile the detectors compare live orders with."""

    rate_p95_bps: int
    discount_p95: int
    discounted_mix_bps: dict[str, int]
    member_mix_bps: dict[str, int]
    sample_carts: int
    discounted_orders: int

    @classmethod
    def from_mapping(cls, profile: Mapping[str, Any]) -> ExpectedProfile:
        """Read a ``SimulationReport.profile``; :class:`ProfileError` when it is malformed."""
        if not isinstance(profile, Mapping):
            raise ProfileError("a profile must be an object")
        if profile.get("schema_version") != PROFILE_SCHEMA_VERSION:
            raise ProfileError(f"profile schema_version must be {PROFILE_SCHEMA_VERSION}")
        return cls(
            rate_p95_bps=_p95(profile, "discount_rate_bps"),
            discount_p95=_p95(profile, "discount_per_order"),
            discounted_mix_bps=_tier_mix(profile, "discounted_tier_mix_bps"),
            member_mix_bps=_tier_mix(profile, "member_tier_mix_bps"),
            sample_carts=_whole(profile.get("sample_carts"), "sample_carts"),
            discounted_orders=_whole(profile.get("discounted_orders"), "discounted_orders"),
        )


# -- alerts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule's detector found its subject past the threshold."""

    rule: str
    detector: str
    severity: str
    actions: tuple[Action, ...]
    subject: str
    """What it is about: ``campaign:<id>:v<n>``, ``identity:<signal>``, ``route:<name>``,
    ``coupon:<id>`` or ``tiers:all``."""
    campaign_id: str | None
    version: int | None
    """The campaign version the alert is about, when there is one (a pause acts on it)."""
    value: Decimal
    threshold: Decimal
    message: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready data (decimals as strings)."""
        return {
            "rule": self.rule,
            "detector": self.detector,
            "severity": self.severity,
            "actions": [str(a) for a in self.actions],
            "subject": self.subject,
            "campaign_id": self.campaign_id,
            "version": self.version,
            "value": str(self.value),
            "threshold": str(self.threshold),
            "message": self.message,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class _Finding:
    subject: str
    value: Decimal
    message: str
    campaign_id: str | None = None
    version: int | None = None


def _campaign_subject(key: Version) -> str:
    return f"campaign:{key[0]}:v{key[1]}"


def _about(key: Version, value: Decimal, message: str) -> _Finding:
    return _Finding(_campaign_subject(key), value, message, key[0], key[1])


# -- statistics -------------------------------------------------------------------------------


def _evidence(hits: int, size: int, expected_bps: int) -> Decimal:
    """``size x KL(hits/size || expected)`` in nats (expected clamped to 1..9,999 bps)."""
    ctx = _LN
    p = ctx.divide(Decimal(min(max(expected_bps, 1), BPS_WHOLE - 1)), _WHOLE)
    q = ctx.divide(Decimal(hits), Decimal(size))
    total = Decimal(0)
    if hits:
        total = ctx.multiply(q, ctx.ln(ctx.divide(q, p)))
    if hits < size:
        rest_q, rest_p = ctx.subtract(1, q), ctx.subtract(1, p)
        total = ctx.add(total, ctx.multiply(rest_q, ctx.ln(ctx.divide(rest_q, rest_p))))
    return ctx.multiply(total, Decimal(size))


def _too_many(hits: int, size: int, expected_bps: int, min_evidence: Decimal) -> bool:
    """Whether ``hits`` of ``size`` is above the expected share, and surprisingly so."""
    if hits * BPS_WHOLE <= expected_bps * size:
        return False
    return _evidence(hits, size, expected_bps) >= min_evidence


def _checkpoints(least: int, size: int) -> list[int]:
    """Newest-suffix sizes to test: ``least``, then in steps of half of it up to the scan limit,
    then all ``size``."""
    step = max(1, -(-least // 2))
    sizes = list(range(least, min(size, _SCAN_LIMIT) + 1, step))
    if not sizes or sizes[-1] != size:
        sizes.append(size)
    return sizes


# -- per-key state ----------------------------------------------------------------------------

T = TypeVar("T")
K = TypeVar("K")


class _State:
    """Per-key state that remembers the latest time it saw."""

    __slots__ = ("touched",)

    def __init__(self) -> None:
        self.touched = -math.inf

    def touch(self, at: float) -> None:
        """Note an event at ``at``."""
        self.touched = max(self.touched, at)


S = TypeVar("S", bound=_State)


class _Hits(_State, Generic[T]):
    """One key's events ``(at, payload, hit)`` in arrival order, with the hits counted."""

    __slots__ = ("events", "hits")

    def __init__(self) -> None:
        super().__init__()
        self.events: deque[tuple[float, T, bool]] = deque()
        self.hits = 0

    def push(self, at: float, payload: T, hit: bool, cap: int) -> None:
        """Add an event, dropping the oldest when the key holds ``cap`` already."""
        if len(self.events) >= cap:
            self.hits -= self.events.popleft()[2]
        self.events.append((at, payload, hit))
        self.hits += hit
        self.touch(at)

    def trim(self, cutoff: float) -> None:
        """Drop the events at or before ``cutoff``."""
        events = self.events
        while events and events[0][0] <= cutoff:
            self.hits -= events.popleft()[2]

    def newest_hits(self, sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
        """``(size, hits among the newest size events)`` for each checkpoint size, ascending."""
        newest = reversed(self.events)
        seen = hits = 0
        for size in sizes:
            if size >= len(self.events):
                yield len(self.events), self.hits
                return
            for _, _, hit in islice(newest, size - seen):
                hits += hit
            seen = size
            yield size, hits


class _Tiers(_State):
    """One key's orders ``(at, tier)`` in arrival order, with a count per tier."""

    __slots__ = ("counts", "events")

    def __init__(self) -> None:
        super().__init__()
        self.events: deque[tuple[float, str]] = deque()
        self.counts: Counter[str] = Counter()

    def _forget(self, tier: str) -> None:
        if self.counts[tier] <= 1:
            del self.counts[tier]
        else:
            self.counts[tier] -= 1

    def push(self, at: float, tier: str, cap: int) -> None:
        """Add an order, dropping the oldest when the key holds ``cap`` already."""
        if len(self.events) >= cap:
            self._forget(self.events.popleft()[1])
        self.events.append((at, tier))
        self.counts[tier] += 1
        self.touch(at)

    def trim(self, cutoff: float) -> None:
        """Drop the orders at or before ``cutoff``."""
        events = self.events
        while events and events[0][0] <= cutoff:
            self._forget(events.popleft()[1])

    def newest_counts(self, sizes: Sequence[int]) -> Iterator[tuple[int, Counter[str]]]:
        """``(size, tier counts among the newest size orders)`` for each checkpoint size."""
        newest = reversed(self.events)
        counts: Counter[str] = Counter()
        seen = 0
        for size in sizes:
            if size >= len(self.events):
                yield len(self.events), self.counts
                return
            for _, tier in islice(newest, size - seen):
                counts[tier] += 1
            seen = size
            yield size, counts


_Campaigns = tuple[tuple[str, int | None], ...]


class _Accounts(_State):
    """One identity signal's accounts: each one's latest ``(at, campaigns)``, oldest first."""

    __slots__ = ("accounts",)

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, tuple[float, _Campaigns]] = {}

    def push(self, at: float, customer: str, campaigns: _Campaigns, cap: int) -> None:
        """Note the account (moved to the newest end), dropping the oldest beyond ``cap``."""
        accounts = self.accounts
        accounts.pop(customer, None)
        if len(accounts) >= cap:
            del accounts[next(iter(accounts))]
        accounts[customer] = (at, campaigns)
        self.touch(at)

    def trim(self, cutoff: float) -> None:
        """Forget the accounts last seen at or before ``cutoff``."""
        stale = []
        for customer, (at, _) in self.accounts.items():
            if at > cutoff:
                break
            stale.append(customer)
        for customer in stale:
            del self.accounts[customer]

    def common_campaign(self) -> tuple[str, int | None] | None:
        """The one campaign (version) every account's latest event used, if there is one."""
        common: set[tuple[str, int | None]] | None = None
        for _, campaigns in self.accounts.values():
            common = set(campaigns) if common is None else common & set(campaigns)
            if not common:
                return None
        return next(iter(common)) if common and len(common) == 1 else None


class _Buckets(_State):
    """One campaign version's redemptions per time bucket ``[bucket, count]``, ascending."""

    __slots__ = ("counts", "first")

    def __init__(self) -> None:
        super().__init__()
        self.counts: deque[list[int]] = deque()
        self.first: int | None = None

    def add(self, bucket: int, at: float) -> None:
        """Count one redemption (a late one counts in the newest bucket)."""
        counts = self.counts
        if counts and counts[-1][0] >= bucket:
            counts[-1][1] += 1
        else:
            counts.append([bucket, 1])
        if self.first is None or bucket < self.first:
            self.first = bucket
        self.touch(at)

    def trim(self, oldest: int) -> None:
        """Drop the buckets before ``oldest``."""
        while self.counts and self.counts[0][0] < oldest:
            self.counts.popleft()

    def total(self, low: int, high: int | None = None) -> int:
        """Redemptions in buckets from ``low`` to before ``high`` (no upper end when None)."""
        return sum(c for b, c in self.counts if b >= low and (high is None or b < high))


class _Keyed(Generic[K, S]):
    """Per-key state, least recently touched first: bounded in number, forgotten when idle."""

    def __init__(self, make: Callable[[], S], max_keys: int) -> None:
        self.states: OrderedDict[K, S] = OrderedDict()
        self.dirty: dict[K, None] = {}
        """Keys touched since :meth:`take_dirty`, in first-touch order."""
        self._make = make
        self._max = max_keys

    def get(self, key: K) -> S:
        """The key's state, created if new; marks it most recently touched and dirty."""
        states = self.states
        state = states.get(key)
        if state is None:
            if len(states) >= self._max:
                self.drop(next(iter(states)))
            state = states[key] = self._make()
        else:
            states.move_to_end(key)
        self.dirty[key] = None
        return state

    def drop(self, key: K) -> None:
        """Forget one key."""
        self.states.pop(key, None)
        self.dirty.pop(key, None)

    def forget_idle(self, before: float) -> None:
        """Forget the keys whose latest event is at or before ``before``."""
        states = self.states
        while states:
            key, state = next(iter(states.items()))
            if state.touched > before:
                return
            self.drop(key)

    def take_dirty(self) -> list[tuple[K, S]]:
        """The keys touched since the last call, with their state; clears the mark."""
        dirty = [(key, self.states[key]) for key in self.dirty]
        self.dirty = {}
        return dirty

    def __len__(self) -> int:
        return len(self.states)


# -- detectors --------------------------------------------------------------------------------


class _Detector:
    """One rule's detector: takes the signals it watches and reports findings when evaluated."""

    watches: ClassVar[tuple[str, ...]] = ()

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.window = float(rule.window_seconds)
        self.max_keys = int(rule.param("max_keys"))
        self.cap = int(rule.param("max_events_per_key"))

    def observe_order(self, signal: OrderSignal) -> None:
        """Take an order (detectors that watch orders)."""

    def observe_claim(self, signal: ClaimSignal) -> None:
        """Take a coupon claim (detectors that watch claims)."""

    def observe_request(self, signal: RequestSignal) -> None:
        """Take a request (detectors that watch requests)."""

    def profile_changed(self, profiles: Mapping[Version, ExpectedProfile], key: Version) -> None:
        """A version's expected profile was set, replaced or removed."""

    def findings(self, now: float) -> list[_Finding]:
        """What is past the threshold at ``now``."""
        raise NotImplementedError

    def footprint(self) -> tuple[int, int]:
        """``(keys, events)`` held."""
        raise NotImplementedError


def _dirty_findings(
    keys: _Keyed[K, Any], cutoff: float, check: Callable[[K, Any], _Finding | None]
) -> list[_Finding]:
    """Trim and check the keys with new events since the last evaluation."""
    keys.forget_idle(cutoff)
    found = []
    for key, state in keys.take_dirty():
        state.trim(cutoff)
        finding = check(key, state)
        if finding is not None:
            found.append(finding)
    return found


@dataclass(frozen=True, slots=True)
class _Limits:
    """A version's p95s and the limits above which one of its orders is above profile."""

    rate_p95: int
    amount_p95: int
    rate_limit: int | None
    amount_limit: int | None

    @classmethod
    def of(cls, profile: ExpectedProfile, factor: Decimal) -> _Limits | None:
        """The limits, or None when the profile gives nothing to compare with."""
        rate, amount = profile.rate_p95_bps, profile.discount_p95
        if rate <= 0 and amount <= 0:
            return None

        def limit(p95: int) -> int | None:
            return int((factor * p95).to_integral_value(ROUND_FLOOR)) if p95 > 0 else None

        return cls(rate, amount, limit(rate), limit(amount))

    def above(self, rate: int, amount: int) -> bool:
        """Whether an order's own rate or amount is above its limit."""
        if self.rate_limit is not None and rate > self.rate_limit:
            return True
        return self.amount_limit is not None and amount > self.amount_limit

    def factor(self, rate: int, amount: int) -> Decimal:
        """The larger of rate / p95 and amount / p95."""
        factors = [Decimal(0)]
        if self.rate_p95 > 0:
            factors.append(Decimal(rate) / self.rate_p95)
        if self.amount_p95 > 0:
            factors.append(Decimal(amount) / self.amount_p95)
        return _down(max(factors), _CENTS)


class _DiscountProfile(_Detector):
    watches = ("order",)

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._limits: dict[Version, _Limits] = {}
        self._keys: _Keyed[Version, _Hits[tuple[int, int]]] = _Keyed(_Hits, self.max_keys)
        self._tail = int(rule.param("tail_share_bps"))
        self._evidence = Decimal(rule.param("min_evidence"))

    def profile_changed(self, profiles: Mapping[Version, ExpectedProfile], key: Version) -> None:
        """Recompute the version's limits; its window starts again."""
        self._keys.drop(key)
        profile = profiles.get(key)
        limits = None if profile is None else _Limits.of(profile, self.rule.threshold)
        if limits is None:
            self._limits.pop(key, None)
        else:
            self._limits[key] = limits

    def observe_order(self, signal: OrderSignal) -> None:
        """Mark each profiled version's share of the order as above profile or not."""
        for campaign_id, version, amount in signal.discounts:
            limits = self._limits.get((campaign_id, version))
            if limits is None or amount <= 0:
                continue
            total = signal.list_total
            rate = amount * BPS_WHOLE // total if total > 0 else 0
            state = self._keys.get((campaign_id, version))
            state.trim(signal.at - self.window)
            state.push(signal.at, (rate, amount), limits.above(rate, amount), self.cap)

    def findings(self, now: float) -> list[_Finding]:
        """Versions with too many orders above profile among their newest orders."""
        return _dirty_findings(self._keys, now - self.window, self._check)

    def _check(self, key: Version, state: _Hits[tuple[int, int]]) -> _Finding | None:
        limits, least = self._limits.get(key), self.rule.min_events
        if limits is None or state.hits < least:
            return None
        for size, hits in state.newest_hits(_checkpoints(least, len(state.events))):
            if hits >= least and _too_many(hits, size, self._tail, self._evidence):
                newest = islice(reversed(state.events), size)
                worst = max(limits.factor(*order) for _, order, hit in newest if hit)
                message = (
                    f"{hits} of the newest {size} orders of {key[0]} v{key[1]} are above "
                    f"{self.rule.threshold}x the expected p95 (discount rate {limits.rate_p95} "
                    f"bps, discount per order {limits.amount_p95}); the worst is {worst}x"
                )
                return _about(key, worst, message)
        return None

    def footprint(self) -> tuple[int, int]:
        """``(keys, events)`` held."""
        return len(self._keys), sum(len(s.events) for s in self._keys.states.values())


@dataclass(frozen=True, slots=True)
class _Mix:
    """An expected tier mix (basis points) and the most each share could be, given the sample
    it was measured on: the share plus two standard errors, or three in the sample size for a
    tier the sample never saw (the rule of three). A configured mix is taken as exact."""

    shares: Mapping[str, int]
    bounds: Mapping[str, int]
    unseen: int

    @classmethod
    def of(cls, shares: Mapping[str, int], sample: int | None) -> _Mix | None:
        """The mix measured on ``sample`` orders (None: exact); None when there is nothing."""
        if not shares or sample == 0:
            return None
        if sample is None:
            return cls(dict(shares), dict(shares), 1)
        top = BPS_WHOLE - 1
        bounds = {
            tier: min(top, share + 2 * math.isqrt(share * (BPS_WHOLE - share) // sample))
            for tier, share in shares.items()
        }
        return cls(dict(shares), bounds, min(top, max(1, 3 * BPS_WHOLE // sample)))

    def bound(self, tier: str) -> int:
        """The most the tier's share could be expected to be, basis points."""
        return self.bounds.get(tier, self.unseen)


def _population(profiles: Mapping[Version, ExpectedProfile]) -> _Mix | None:
    """The profiles' member-tier mixes weighted by sample size (their samples are usually one
    and the same, so the allowance is that of the largest sample, not of their sum)."""
    weights: Counter[str] = Counter()
    samples = largest = 0
    for profile in profiles.values():
        if profile.sample_carts and profile.member_mix_bps:
            samples += profile.sample_carts
            largest = max(largest, profile.sample_carts)
            for tier, share in profile.member_mix_bps.items():
                weights[tier] += share * profile.sample_carts
    if not samples:
        return None
    return _Mix.of({tier: weight // samples for tier, weight in weights.items()}, largest)


@dataclass(frozen=True, slots=True)
class _Shift:
    """A tier too far above its expected share among the newest ``size`` orders."""

    excess: int
    tier: str
    count: int
    size: int
    expected: int


def _prices_by_tier(profile: ExpectedProfile, bar: int) -> bool:
    """Whether some tier's share of the version's discounted orders differs from its share of
    every sampled order by more than ``bar`` basis points (unknown population: assume so)."""
    if not profile.member_mix_bps:
        return True
    discounted, population = profile.discounted_mix_bps, profile.member_mix_bps
    tiers = discounted.keys() | population.keys()
    return any(abs(discounted.get(t, 0) - population.get(t, 0)) > bar for t in tiers)


class _TierMix(_Detector):
    watches = ("order",)

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._all = rule.param("scope") == "all"
        fixed = rule.param("expected_mix_bps")
        self._fixed = None if fixed is None else _Mix.of(fixed, None)
        self._population = self._fixed
        self._mixes: dict[Version, _Mix] = {}
        self._keys: _Keyed[Version, _Tiers] = _Keyed(_Tiers, self.max_keys)
        self._shop = _Tiers()
        """Every order's tier, against the population mix."""
        self._shop_new = False
        self._shifted: frozenset[str] = frozenset()
        """Tiers over-represented in every order at the last evaluation."""
        self._excess = int(rule.threshold)
        self._evidence = Decimal(rule.param("min_evidence"))
        self._shop_evidence = Decimal(rule.param("shop_evidence"))
        self._assist = Decimal(rule.param("assist_evidence"))

    def profile_changed(self, profiles: Mapping[Version, ExpectedProfile], key: Version) -> None:
        """Update the expected mixes (a version's window starts again)."""
        if self._fixed is None:
            self._population = _population(profiles)
        if self._all:
            return
        self._keys.drop(key)
        profile = profiles.get(key)
        mix = None
        if profile is not None and _prices_by_tier(profile, self._excess):
            mix = _Mix.of(profile.discounted_mix_bps, profile.discounted_orders)
        if mix is None:
            self._mixes.pop(key, None)
        else:
            self._mixes[key] = mix

    def observe_order(self, signal: OrderSignal) -> None:
        """Count the order's tier shop-wide and for each profiled version that discounted it."""
        tier, at = signal.member_tier or NO_TIER, signal.at
        if self._population is not None:
            self._shop.trim(at - self.window)
            self._shop.push(at, tier, self.cap)
            self._shop_new = True
        if self._all:
            return
        for campaign_id, version, amount in signal.discounts:
            if amount > 0 and (campaign_id, version) in self._mixes:
                state = self._keys.get((campaign_id, version))
                state.trim(at - self.window)
                state.push(at, tier, self.cap)

    def _shifts(
        self,
        counts: Mapping[str, int],
        size: int,
        mix: _Mix,
        assisted: frozenset[str],
        evidence: Decimal,
    ) -> list[_Shift]:
        """The tiers too far above their expected shares among ``size`` orders."""
        shifts = []
        for tier, count in counts.items():
            share, expected, bound = (
                count * BPS_WHOLE // size,
                mix.shares.get(tier, 0),
                mix.bound(tier),
            )
            if tier in assisted:
                found = share > bound and _evidence(count, size, bound) >= self._assist
            else:
                found = share - expected > self._excess and _too_many(count, size, bound, evidence)
            if found:
                shifts.append(_Shift(share - expected, tier, count, size, expected))
        return shifts

    def _scan(
        self, state: _Tiers, mix: _Mix, evidence: Decimal, assisted: frozenset[str] = frozenset()
    ) -> Iterator[_Shift]:
        """Each shift found, testing the newest orders first (the worst at each size first)."""
        if len(state.events) < self.rule.min_events:
            return
        sizes = _checkpoints(self.rule.min_events, len(state.events))
        for size, counts in state.newest_counts(sizes):
            shifts = self._shifts(counts, size, mix, assisted, evidence)
            yield from sorted(shifts, key=lambda s: -s.excess)

    def findings(self, now: float) -> list[_Finding]:
        """Versions (or, with scope "all", the shop) whose newest orders' mix is far off."""
        cutoff = now - self.window
        self._shop.trim(cutoff)
        shop = self._shop_shift() if self._shop_new else None
        if self._all:
            return [] if shop is None else [self._found(_ALL, shop)]
        return _dirty_findings(self._keys, cutoff, self._check)

    def _shop_shift(self) -> _Shift | None:
        """Test every order's mix; remember which tiers are over-represented shop-wide."""
        self._shop_new = False
        population = self._population
        shifts = []
        if population is not None:
            shifts = list(self._scan(self._shop, population, self._shop_evidence))
        self._shifted = frozenset(s.tier for s in shifts)
        return shifts[0] if shifts else None

    def _check(self, key: Version, state: _Tiers) -> _Finding | None:
        mix = self._mixes.get(key)
        if mix is None:
            return None
        shift = next(self._scan(state, mix, self._evidence, self._shifted), None)
        return None if shift is None else self._found(key, shift)

    def _found(self, key: Version, shift: _Shift) -> _Finding:
        whose = "orders" if key == _ALL else f"discounted orders of {key[0]} v{key[1]}"
        message = (
            f"tier {shift.tier!r} is {shift.count} of the newest {shift.size} {whose} "
            f"({shift.expected + shift.excess} bps against {shift.expected} expected)"
        )
        if key == _ALL:
            return _Finding("tiers:all", Decimal(shift.excess), message)
        if shift.tier in self._shifted:
            message += "; it is over-represented in every order too"
        return _about(key, Decimal(shift.excess), message)

    def footprint(self) -> tuple[int, int]:
        """``(keys, events)`` held, the shop-wide mix as one key."""
        events = sum(len(s.events) for s in self._keys.states.values()) + len(self._shop.events)
        return len(self._keys) + (1 if self._shop.events else 0), events


class _Velocity(_Detector):
    watches = ("order",)

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._width = self.window / _BUCKETS_PER_WINDOW
        self._baseline = int(rule.param("baseline_windows"))
        self._span = _BUCKETS_PER_WINDOW * (self._baseline + 1)
        self._keys: _Keyed[Version, _Buckets] = _Keyed(_Buckets, self.max_keys)

    def observe_order(self, signal: OrderSignal) -> None:
        """Count a redemption for each version that discounted the order."""
        bucket = math.floor(signal.at / self._width)
        for campaign_id, version, amount in signal.discounts:
            if amount > 0:
                state = self._keys.get((campaign_id, version))
                state.trim(bucket - self._span + 1)
                state.add(bucket, signal.at)

    def findings(self, now: float) -> list[_Finding]:
        """Versions redeemed far faster in the last window than their baseline."""
        self._keys.forget_idle(now - max(_IDLE_FORGET_SECONDS, self.window * self._span))
        self._keys.dirty = {}
        current = math.floor(now / self._width)
        found = (self._check(key, state, current) for key, state in self._keys.states.items())
        return [f for f in found if f is not None]

    def _check(self, key: Version, state: _Buckets, current: int) -> _Finding | None:
        state.trim(current - self._span + 1)
        recent_from = current - _BUCKETS_PER_WINDOW + 1
        first = recent_from if state.first is None else state.first
        windows = min(self._baseline, (recent_from - first) // _BUCKETS_PER_WINDOW)
        if windows < 1:
            return None
        recent = state.total(recent_from)
        baseline = state.total(recent_from - _BUCKETS_PER_WINDOW * windows, recent_from)
        floor = max(baseline, 1)
        if recent < self.rule.min_events or recent * windows <= self.rule.threshold * floor:
            return None
        value = _down(Decimal(recent * windows) / floor, _CENTS)
        message = (
            f"{recent} redemptions of {key[0]} v{key[1]} in the last {self.rule.window_seconds} s "
            f"against {baseline} in the {windows} windows before ({value}x the baseline)"
        )
        return _about(key, value, message)

    def footprint(self) -> tuple[int, int]:
        """``(keys, buckets)`` held."""
        return len(self._keys), sum(len(s.counts) for s in self._keys.states.values())


class _IdentityCluster(_Detector):
    watches = ("order", "claim")

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._ignore = frozenset(rule.param("ignore_kinds"))
        self._accounts = int(rule.threshold)
        self._keys: _Keyed[str, _Accounts] = _Keyed(_Accounts, self.max_keys)
        self._shared: dict[_Campaigns, _Campaigns] = {}
        """One copy of each campaign combination, so a hundred thousand accounts do not each
        hold their own (cleared when it grows past the number of keys)."""

    def observe_order(self, signal: OrderSignal) -> None:
        """Note the ordering account on each of the order's identity signals."""
        campaigns = tuple((c, v) for c, v, amount in signal.discounts if amount > 0)
        self._note(signal.at, signal.customer_id, signal.identity, campaigns)

    def observe_claim(self, signal: ClaimSignal) -> None:
        """Note the claiming account on each of the claim's identity signals."""
        campaigns: _Campaigns = ((signal.campaign_id, None),)
        self._note(signal.at, signal.customer_id, signal.identity, campaigns)

    def _note(
        self, at: float, customer: str, identity: Sequence[str], campaigns: _Campaigns
    ) -> None:
        if len(self._shared) > self.max_keys:
            self._shared.clear()
        campaigns = self._shared.setdefault(campaigns, campaigns)
        for signal in identity:
            if identity_kind(signal) in self._ignore:
                continue
            state = self._keys.get(signal)
            state.trim(at - self.window)
            state.push(at, customer, campaigns, self.cap)

    def findings(self, now: float) -> list[_Finding]:
        """Identity signals shared by too many accounts in the window."""
        return _dirty_findings(self._keys, now - self.window, self._check)

    def _check(self, key: str, state: _Accounts) -> _Finding | None:
        accounts = len(state.accounts)
        if accounts < self._accounts:
            return None
        common = state.common_campaign()
        message = (
            f"{accounts} accounts on {identity_kind(key)} signal {key} "
            f"within {self.rule.window_seconds} s"
        )
        if common is None:
            return _Finding(f"identity:{key}", Decimal(accounts), message)
        message += f", all on {common[0]}" + ("" if common[1] is None else f" v{common[1]}")
        return _Finding(f"identity:{key}", Decimal(accounts), message, *common)

    def footprint(self) -> tuple[int, int]:
        """``(keys, accounts)`` held."""
        return len(self._keys), sum(len(s.accounts) for s in self._keys.states.values())


class _Ratio(_Detector):
    """A share of hits per key over every key's window (routes, coupons)."""

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._keys: _Keyed[str, _Hits[Any]] = _Keyed(_Hits, self.max_keys)

    def _add(self, key: str, at: float, payload: Any, hit: bool) -> None:
        state = self._keys.get(key)
        state.trim(at - self.window)
        state.push(at, payload, hit, self.cap)

    def findings(self, now: float) -> list[_Finding]:
        """Every key past its threshold over the window."""
        cutoff = now - self.window
        self._keys.forget_idle(cutoff)
        self._keys.dirty = {}
        found = []
        for key, state in self._keys.states.items():
            state.trim(cutoff)
            if len(state.events) >= self.rule.min_events:
                finding = self._check(key, state)
                if finding is not None:
                    found.append(finding)
        return found

    def _check(self, key: str, state: _Hits[Any]) -> _Finding | None:
        raise NotImplementedError

    def _share_above(self, state: _Hits[Any]) -> Decimal | None:
        """The hits' share of the window when it is above the threshold."""
        if state.hits <= self.rule.threshold * len(state.events):
            return None
        return _down(Decimal(state.hits) / len(state.events), _TEN_THOUSANDTHS)

    def footprint(self) -> tuple[int, int]:
        """``(keys, events)`` held."""
        return len(self._keys), sum(len(s.events) for s in self._keys.states.values())


class _RouteSlo(_Ratio):
    watches = ("request",)

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._latency = rule.param("metric") == "p99_seconds"
        self._routes = frozenset(rule.param("routes"))
        self._slow = float(rule.threshold)

    def observe_request(self, signal: RequestSignal) -> None:
        """Count the request as a hit when it failed (5xx) or was slow, by the rule's metric."""
        if self._routes and signal.route not in self._routes:
            return
        hit = signal.seconds > self._slow if self._latency else signal.status >= 500
        self._add(signal.route, signal.at, signal.seconds, hit)

    def _check(self, key: str, state: _Hits[Any]) -> _Finding | None:
        n = len(state.events)
        if not self._latency:
            rate = self._share_above(state)
            if rate is None:
                return None
            message = f"{state.hits} of {n} answers of route {key} were 5xx ({rate})"
            return _Finding(f"route:{key}", rate, message)
        # Nearest-rank p99 is above the threshold exactly when at least n - rank + 1 are.
        beyond = n - (-(-99 * n // 100)) + 1
        if n < _P99_LEAST or state.hits < beyond:
            return None
        p99 = heapq.nlargest(beyond, (seconds for _, seconds, _ in state.events))[-1]
        value = Decimal(p99).quantize(_MICROS)
        message = f"p99 latency of route {key} is {value} s over {n} requests"
        return _Finding(f"route:{key}", value, message)


class _ClaimFailures(_Ratio):
    watches = ("claim",)

    def __init__(self, rule: AlertRule) -> None:
        super().__init__(rule)
        self._expected = frozenset(rule.param("ignore_codes"))

    def observe_claim(self, signal: ClaimSignal) -> None:
        """Count the claim as a hit when it failed unexpectedly."""
        failed = not signal.ok and signal.code not in self._expected
        self._add(signal.campaign_id, signal.at, signal.code, failed)

    def _check(self, key: str, state: _Hits[Any]) -> _Finding | None:
        rate = self._share_above(state)
        if rate is None:
            return None
        codes = Counter(code for _, code, hit in state.events if hit).most_common(3)
        named = ", ".join(f"{code or 'no code'} x{count}" for code, count in codes)
        message = (
            f"{state.hits} of {len(state.events)} claims of coupon {key} failed ({rate}): {named}"
        )
        return _Finding(f"coupon:{key}", rate, message, key, None)


_DETECTORS: dict[str, Callable[[AlertRule], _Detector]] = {
    "discount_profile": _DiscountProfile,
    "tier_mix": _TierMix,
    "redemption_velocity": _Velocity,
    "identity_cluster": _IdentityCluster,
    "route_slo": _RouteSlo,
    "claim_failures": _ClaimFailures,
}


# -- the monitor ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cooldowns:
    """When each (rule, subject) last alerted, forgotten once its cooldown has passed."""

    last: dict[tuple[str, str], float] = field(default_factory=dict)
    fired: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)

    def ready(self, rule: AlertRule, subject: str, now: float) -> bool:
        """Whether the subject may alert again; if so, its cooldown starts now."""
        last = self.last.get((rule.name, subject))
        if last is not None and now - last < rule.cooldown_seconds:
            return False
        self.last[(rule.name, subject)] = now
        self.fired.setdefault(rule.name, deque()).append((now, subject))
        return True

    def forget(self, rules: Sequence[AlertRule], now: float) -> None:
        """Drop the cooldowns that have passed."""
        for rule in rules:
            fired = self.fired.get(rule.name)
            while fired and now - fired[0][0] >= rule.cooldown_seconds:
                at, subject = fired.popleft()
                if self.last.get((rule.name, subject)) == at:
                    del self.last[(rule.name, subject)]


class Monitor:
    """Every alert rule's detector over the live signals; :meth:`evaluate` raises the alerts.

    Args:
        rules: the alert rules (checked: :class:`AlertRulesError` lists every problem).
        profiles: expected profiles by ``(campaign_id, version)`` (see :meth:`set_profile`).
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        profiles: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    ) -> None:
        errors = [e for n, rule in enumerate(rules) for e in rule_errors(rule, f"rules[{n}]")]
        names = [rule.name for rule in rules]
        errors += [
            (f"rules[{n}].name", "duplicate name")
            for n, name in enumerate(names)
            if name in names[:n]
        ]
        if errors:
            raise AlertRulesError(errors)
        self.rules = tuple(rules)
        self._detectors = [_DETECTORS[rule.detector](rule) for rule in rules]
        self._orders = [d for d in self._detectors if "order" in d.watches]
        self._claims = [d for d in self._detectors if "claim" in d.watches]
        self._requests = [d for d in self._detectors if "request" in d.watches]
        self._profiles: dict[Version, ExpectedProfile] = {}
        self.profile_errors: dict[Version, str] = {}
        """Versions whose profile could not be read (they are watched as having none)."""
        self._cooldowns = _Cooldowns()
        for (campaign_id, version), profile in (profiles or {}).items():
            self.set_profile(campaign_id, version, profile)

    def set_profile(
        self, campaign_id: str, version: int, profile: Mapping[str, Any] | None
    ) -> None:
        """Set (or with None remove) a version's expected profile; the same profile is a no-op.

        A profile that cannot be read is treated as none and noted in :attr:`profile_errors`:
        one bad stored profile must not stop monitoring.
        """
        key = (campaign_id, version)
        expected: ExpectedProfile | None = None
        if profile is not None:
            try:
                expected = ExpectedProfile.from_mapping(profile)
            except ProfileError as exc:
                self.profile_errors[key] = str(exc)
            else:
                self.profile_errors.pop(key, None)
        if self._profiles.get(key) == expected:
            return
        if expected is None:
            del self._profiles[key]
        else:
            self._profiles[key] = expected
        for detector in self._detectors:
            detector.profile_changed(self._profiles, key)

    def observe(self, signal: Signal) -> None:
        """Feed one signal to the detectors that watch its kind (amortised constant time)."""
        if isinstance(signal, OrderSignal):
            for detector in self._orders:
                detector.observe_order(signal)
        elif isinstance(signal, ClaimSignal):
            for detector in self._claims:
                detector.observe_claim(signal)
        else:
            for detector in self._requests:
                detector.observe_request(signal)

    def evaluate(self, now: float) -> list[Alert]:
        """New alerts at ``now``: one per rule and subject per the rule's cooldown."""
        alerts = []
        for detector in self._detectors:
            rule = detector.rule
            for finding in sorted(detector.findings(now), key=lambda f: f.subject):
                if self._cooldowns.ready(rule, finding.subject, now):
                    alerts.append(_alert(rule, finding, now))
        self._cooldowns.forget(self.rules, now)
        return alerts

    def footprint(self) -> dict[str, dict[str, int]]:
        """What each rule holds (``keys``, ``entries``) and the live cooldowns, for metrics."""
        held = {
            d.rule.name: dict(zip(("keys", "entries"), d.footprint(), strict=True))
            for d in self._detectors
        }
        cooldowns = len(self._cooldowns.last)
        held["(cooldowns)"] = {"keys": cooldowns, "entries": cooldowns}
        return held


def _alert(rule: AlertRule, finding: _Finding, now: float) -> Alert:
    return Alert(
        rule=rule.name,
        detector=rule.detector,
        severity=rule.severity,
        actions=rule.actions,
        subject=finding.subject,
        campaign_id=finding.campaign_id,
        version=finding.version,
        value=finding.value,
        threshold=rule.threshold,
        message=finding.message,
        at=now,
    )
