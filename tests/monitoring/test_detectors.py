"""The detectors: each fires on a crafted stream and stays quiet on a normal one; 10,000 realistic
orders under every default rule raise nothing; cooldowns; memory stays bounded. Every stream is
built from fixed numbers or a seeded generator, and time is passed in, so nothing depends on the
clock or on the machine's speed."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from promoguard.monitoring.alert_rules import Action, AlertRule, AlertRulesError, default_rules
from promoguard.monitoring.detectors import Alert, Monitor
from promoguard.monitoring.signals import ClaimSignal, OrderSignal, RequestSignal, Signal
from promoguard.promotions.catalogue import Catalogue
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Customer
from promoguard.promotions.rules import Rule, parse_rule
from promoguard.promotions.simulate import Sample, simulate, synthetic_sample

T0 = 1_800_000_000.0
"""A fixed unix time the streams start at."""


# -- builders ---------------------------------------------------------------------------------


def rule(
    detector: str,
    threshold: str | int,
    *,
    window: int = 60,
    min_events: int = 5,
    cooldown: int = 300,
    actions: tuple[Action, ...] = (Action.NOTIFY,),
    **params: Any,
) -> AlertRule:
    return AlertRule(
        name=f"{detector}-test",
        detector=detector,
        threshold=Decimal(threshold),
        window_seconds=window,
        severity="P2",
        actions=actions,
        min_events=min_events,
        cooldown_seconds=cooldown,
        params=params,
    )


def spread(p95: int) -> dict[str, int]:
    return {"p50": p95 // 2, "p95": p95, "max": p95 * 2}


def profile(
    *,
    rate_p95: int = 1000,
    amount_p95: int = 2000,
    discounted_mix: dict[str, int] | None = None,
    member_mix: dict[str, int] | None = None,
    samples: int = 500,
    discounted: int | None = None,
) -> dict[str, Any]:
    """An expected profile shaped like ``SimulationReport.profile``."""
    return {
        "schema_version": 1,
        "rule_id": "x",
        "rule_version": 1,
        "sample_carts": samples,
        "discounted_orders": samples if discounted is None else discounted,
        "discounted_share_bps": 10_000,
        "discount_rate_bps": spread(rate_p95),
        "order_discount_rate_bps": spread(rate_p95),
        "discount_per_order": spread(amount_p95),
        "member_tier_mix_bps": {"none": 10_000} if member_mix is None else member_mix,
        "discounted_tier_mix_bps": discounted_mix or {"none": 10_000},
    }


_orders = iter(range(10**9))


def order(
    at: float,
    *,
    customer: str = "c-1",
    list_total: int = 20_000,
    discounts: Sequence[tuple[str, int, int]] = (("mj", 2, 1_000),),
    tier: str | None = None,
    identity: tuple[str, ...] = (),
) -> OrderSignal:
    return OrderSignal(
        at=at,
        order_id=f"o-{next(_orders)}",
        customer_id=customer,
        list_total=list_total,
        discount_total=sum(d[2] for d in discounts),
        member_tier=tier,
        identity=identity,
        discounts=tuple(discounts),
    )


def run(monitor: Monitor, signals: Iterable[Signal], every: float = 0.1) -> list[Alert]:
    """Observe the signals in order, evaluating whenever ``every`` seconds have passed."""
    alerts: list[Alert] = []
    next_at: float | None = None
    last = T0
    for signal in signals:
        if next_at is None:
            next_at = signal.at + every
        while signal.at >= next_at:
            alerts += monitor.evaluate(next_at)
            next_at += every
        monitor.observe(signal)
        last = signal.at
    alerts += monitor.evaluate(last)
    return alerts


def first_alert(monitor: Monitor, signals: Iterable[Signal]) -> tuple[int, Alert]:
    """Observe and evaluate one signal at a time; the 1-based signal count of the first alert."""
    for n, signal in enumerate(signals, start=1):
        monitor.observe(signal)
        alerts = monitor.evaluate(signal.at)
        if alerts:
            assert len(alerts) == 1, alerts
            return n, alerts[0]
    raise AssertionError("no alert")


def spaced(start: float, count: int, per_second: float) -> Iterator[float]:
    return (start + n / per_second for n in range(count))


# -- discount_profile -------------------------------------------------------------------------


def profiled_monitor(r: AlertRule, **kw: Any) -> Monitor:
    return Monitor([r], {("mj", 2): profile(**kw)})


def normal_discounts(rng: random.Random, count: int, start: float) -> list[OrderSignal]:
    """Orders of mj v2 at 200/s: 10 % off carts of 50-300 yuan, capped at 30 yuan (p95 2000)."""
    orders = []
    for n, at in enumerate(spaced(start, count, 200)):
        total = rng.randrange(5_000, 30_000)
        amount = min(total // 10, 2_000 if n % 40 else 3_000)  # 2.5 % reach 1.5x p95
        orders.append(order(at, list_total=total, discounts=[("mj", 2, amount)]))
    return orders


def test_discount_profile_fires_after_a_handful_of_orders_above_the_p95() -> None:
    monitor = profiled_monitor(rule("discount_profile", "1.5", actions=tuple(Action)))
    normal = normal_discounts(random.Random(1), 2_000, T0)
    assert run(monitor, normal) == []
    # A mis-keyed version: 200 yuan off every 300 yuan cart.
    miskeyed = [
        order(at, list_total=30_000, discounts=[("mj", 2, 20_000)])
        for at in spaced(T0 + 10, 100, 200)
    ]
    count, alert = first_alert(monitor, miskeyed)
    assert count <= 10
    assert (alert.subject, alert.campaign_id, alert.version) == ("campaign:mj:v2", "mj", 2)
    assert alert.value == Decimal("10.00")  # 20,000 / p95 2,000 (the rate: 6666 / 1000)
    assert alert.threshold == Decimal("1.5")
    assert alert.actions == (Action.NOTIFY, Action.INCIDENT, Action.PAUSE)
    assert alert.detector == "discount_profile"


def test_discount_profile_counts_the_rate_as_well_as_the_amount() -> None:
    monitor = profiled_monitor(rule("discount_profile", "1.5"), rate_p95=1000, amount_p95=5000)
    # 1,800 off 6,000: within the amount limit (7,500) but a 30 % rate against a 10 % p95.
    orders = [order(T0 + n, list_total=6_000, discounts=[("mj", 2, 1_800)]) for n in range(20)]
    count, alert = first_alert(monitor, orders)
    assert count <= 10
    assert alert.value == Decimal("3.00")


def test_discount_profile_quiet_on_its_normal_tail() -> None:
    monitor = profiled_monitor(rule("discount_profile", "1.5"))
    assert run(monitor, normal_discounts(random.Random(2), 10_000, T0)) == []


def test_discount_profile_silent_without_a_profile() -> None:
    monitor = Monitor([rule("discount_profile", "1.5")])
    huge = [order(T0 + n, discounts=[("mj", 2, 19_000)]) for n in range(50)]
    assert run(monitor, huge) == []
    monitor.set_profile("mj", 2, {"schema_version": 99})
    assert run(monitor, huge) == []
    assert "schema_version" in monitor.profile_errors[("mj", 2)]


# -- tier_mix ---------------------------------------------------------------------------------

POPULATION = {"none": 7_000, "silver": 1_000, "gold": 1_000, "platinum": 1_000}
MEMBER_MIX = {"gold": 5_000, "platinum": 5_000}


def member_profile(
    mix: dict[str, int] = MEMBER_MIX, population: dict[str, int] = POPULATION, sampled: int = 60
) -> dict[str, Any]:
    """The profile of member price ``mp`` v1: gold and platinum only, ``sampled`` of 500."""
    return profile(discounted_mix=mix, member_mix=population, discounted=sampled)


def member_orders(
    rng: random.Random, count: int, start: float, fault: bool = False
) -> list[tuple[OrderSignal, bool]]:
    """Orders at 200/s; members (gold, platinum: 20 %) get the member price of ``mp`` v1.

    With ``fault``, customers without a tier are priced as platinum. Each order comes with
    whether it was affected by the fault.
    """
    stream = []
    for at in spaced(start, count, 200):
        tier = rng.choice([None] * 7 + ["silver", "gold", "platinum"])
        affected = fault and tier is None
        if affected:
            tier = "platinum"
        discounts = [("mp", 1, 800)] if tier in MEMBER_MIX else []
        stream.append((order(at, tier=tier, discounts=discounts), affected))
    return stream


def affected_until_alert(monitor: Monitor, stream: list[tuple[OrderSignal, bool]]) -> Alert:
    """Feed a faulty stream until the first alert; it must come within 50 affected orders."""
    affected = 0
    for signal, hit in stream:
        affected += hit
        monitor.observe(signal)
        alerts = monitor.evaluate(signal.at)
        if alerts:
            assert affected <= 50, affected
            (alert,) = alerts
            return alert
    raise AssertionError("no alert")


def test_tier_mix_fires_when_ordinary_customers_are_priced_as_vip() -> None:
    r = rule("tier_mix", 3000, min_events=10, actions=(Action.PAUSE,))
    monitor = Monitor([r], {("mp", 1): member_profile()})
    rng = random.Random(3)
    assert run(monitor, [o for o, _ in member_orders(rng, 6_000, T0)]) == []
    alert = affected_until_alert(monitor, member_orders(rng, 2_000, T0 + 30, fault=True))
    assert (alert.subject, alert.campaign_id, alert.version) == ("campaign:mp:v1", "mp", 1)
    assert alert.value > 3000  # platinum's excess over its expected 5,000 bps
    assert "'platinum'" in alert.message
    assert "over-represented in every order too" in alert.message


def test_tier_mix_catches_the_vip_fault_from_the_versions_orders_alone_more_slowly() -> None:
    # No population mix to compare every order with: the version's own evidence must do, and a
    # well-sampled profile (500 member orders) is needed to tell the fault from sampling noise.
    monitor = Monitor(
        [rule("tier_mix", 3000, min_events=10)],
        {("mp", 1): member_profile(population={}, sampled=500)},
    )
    rng = random.Random(4)
    assert run(monitor, [o for o, _ in member_orders(rng, 6_000, T0)]) == []
    affected = 0
    for signal, hit in member_orders(rng, 2_000, T0 + 30, fault=True):
        affected += hit
        monitor.observe(signal)
        alerts = monitor.evaluate(signal.at)
        if alerts:
            break
    assert 10 < affected <= 100
    assert alerts[0].subject == "campaign:mp:v1"
    assert "every order" not in alerts[0].message


def test_tier_mix_crafted_all_vip_run_has_the_exact_excess() -> None:
    mix = {"gold": 3334, "platinum": 3333, "silver": 3333}
    monitor = Monitor(
        [rule("tier_mix", 3000, min_events=10)],
        {("mp", 1): member_profile(mix, population={}, sampled=500)},
    )
    tiers = ["gold", "platinum", "silver"] * 100
    normal = [order(T0 + n / 100, tier=t, discounts=[("mp", 1, 500)]) for n, t in enumerate(tiers)]
    assert run(monitor, normal) == []
    vip = [order(T0 + 3 + n / 100, tier="platinum", discounts=[("mp", 1, 500)]) for n in range(40)]
    count, alert = first_alert(monitor, vip)
    # Platinum is expected at 3,333 bps, at most 3,753 with two standard errors of 500 samples:
    # n x ln(10,000 / 3,753) reaches 16 nats at 17 orders; the test sizes are 10, 15, 20, ...
    assert count == 20
    assert alert.value == Decimal(10_000 - 3333)


def test_tier_mix_flags_a_tier_the_profile_never_discounted() -> None:
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)], {("mp", 1): member_profile()})
    plain = [order(T0 + n, tier=None, discounts=[("mp", 1, 500)]) for n in range(20)]
    count, alert = first_alert(monitor, plain)
    assert count == 10
    assert alert.value == Decimal(10_000)
    assert "'none'" in alert.message


def test_tier_mix_quiet_on_a_normal_mix() -> None:
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)], {("mp", 1): member_profile()})
    assert run(monitor, [o for o, _ in member_orders(random.Random(5), 10_000, T0)]) == []


def test_tier_mix_quiet_when_the_profile_sample_was_small_and_off() -> None:
    # 47 sampled member orders said 62 % gold, 38 % platinum; live it is 50/50.
    noisy = member_profile({"gold": 6170, "platinum": 3830}, sampled=47)
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)], {("mp", 1): noisy})
    assert run(monitor, [o for o, _ in member_orders(random.Random(6), 30_000, T0)]) == []


def test_tier_mix_shop_wide_scope_compares_every_order_with_the_member_mix() -> None:
    r = rule("tier_mix", 3000, min_events=10, scope="all")
    monitor = Monitor([r], {("mp", 1): member_profile()})
    rng = random.Random(7)
    assert run(monitor, [o for o, _ in member_orders(rng, 10_000, T0)]) == []
    count, alert = first_alert(monitor, [o for o, _ in member_orders(rng, 500, T0 + 60, True)])
    # 80 % platinum against at most 12.68 % expected: 1.18 nats an order, 24 by the 21st.
    assert count == 25
    assert (alert.subject, alert.campaign_id, alert.version) == ("tiers:all", None, None)
    assert "'platinum'" in alert.message


def test_tier_mix_shop_wide_scope_can_use_a_configured_mix() -> None:
    r = rule("tier_mix", 3000, min_events=10, scope="all", expected_mix_bps={"none": 10_000})
    monitor = Monitor([r])
    count, alert = first_alert(monitor, [order(T0 + n, tier="gold") for n in range(30)])
    assert count == 10
    assert alert.value == Decimal(10_000)


def test_tier_mix_does_not_watch_a_version_that_does_not_price_by_tier() -> None:
    # Its discounted orders have the shop's own mix: a shift there is the shop's, not its fault.
    neutral = member_profile(POPULATION)
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)], {("mj", 2): neutral})
    vip = [order(T0 + n / 10, tier="platinum", discounts=[("mj", 2, 500)]) for n in range(500)]
    assert run(monitor, vip) == []


def test_removing_a_profile_stops_watching_the_version() -> None:
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)], {("mp", 1): member_profile()})
    monitor.set_profile("mp", 1, None)
    plain = [order(T0 + n, tier=None, discounts=[("mp", 1, 500)]) for n in range(50)]
    assert run(monitor, plain) == []


def test_tier_mix_silent_without_a_profile() -> None:
    monitor = Monitor([rule("tier_mix", 3000, min_events=10)])
    assert run(monitor, [order(T0 + n, tier="gold") for n in range(100)]) == []


# -- redemption_velocity ----------------------------------------------------------------------


def test_velocity_fires_on_a_spike_against_the_baseline() -> None:
    r = rule("redemption_velocity", 5, window=10, min_events=20, baseline_windows=3)
    monitor = Monitor([r])
    steady = [order(T0 + n + 0.5) for n in range(100)]  # one a second
    burst = [order(T0 + 100.5) for _ in range(50)]
    assert run(monitor, steady, every=1.0) == []
    for signal in burst:
        monitor.observe(signal)
    (alert,) = monitor.evaluate(T0 + 100.9)
    # Last 10 s: 9 steady + 50 = 59; the 3 windows before: 30, i.e. 10 per window.
    assert alert.value == Decimal("5.90")
    assert (alert.subject, alert.campaign_id, alert.version) == ("campaign:mj:v2", "mj", 2)


def test_velocity_silent_without_a_full_window_of_history() -> None:
    monitor = Monitor([rule("redemption_velocity", 5, window=60, min_events=20)])
    rush = [order(at) for at in spaced(T0, 5_000, 100)]  # an opening rush: 50 s
    assert run(monitor, rush) == []


def test_velocity_quiet_on_steady_random_traffic() -> None:
    monitor = Monitor([rule("redemption_velocity", 5, window=60, min_events=20)])
    rng = random.Random(6)
    at, orders = T0, []
    while at < T0 + 1_800:  # half an hour of about 5 redemptions a second, in bursts
        at += rng.expovariate(5)
        orders += [order(at)] * rng.choice([1, 1, 1, 2, 3])
    assert run(monitor, orders, every=0.5) == []


# -- identity_cluster -------------------------------------------------------------------------


def test_identity_cluster_fires_on_many_accounts_on_one_device() -> None:
    monitor = Monitor([rule("identity_cluster", 5, window=600)])
    farm = [
        order(
            T0 + n * 30,
            customer=f"farm-{n}",
            discounts=[("fo", 1, 1_500)],
            identity=(f"account:farm-{n}", "device:d1", f"phone:p{n}"),
        )
        for n in range(6)
    ]
    count, alert = first_alert(monitor, farm)
    assert count == 5
    assert alert.subject == "identity:device:d1"
    assert alert.value == Decimal(5)
    assert (alert.campaign_id, alert.version) == ("fo", 1)


def test_identity_cluster_names_no_campaign_when_the_accounts_used_different_ones() -> None:
    monitor = Monitor([rule("identity_cluster", 3, window=600)])
    orders = [
        order(T0, customer="a", identity=("address:h1",), discounts=[("fo", 1, 100)]),
        order(T0 + 1, customer="b", identity=("address:h1",), discounts=[("mj", 2, 100)]),
        order(T0 + 2, customer="c", identity=("address:h1",), discounts=[("fo", 1, 100)]),
    ]
    _, alert = first_alert(monitor, orders)
    assert (alert.subject, alert.campaign_id, alert.version) == ("identity:address:h1", None, None)


def test_identity_cluster_counts_coupon_claims() -> None:
    monitor = Monitor([rule("identity_cluster", 5, window=600)])
    claims = [ClaimSignal(T0 + n, "cp", f"bot-{n}", True, None, ("phone:p9",)) for n in range(5)]
    count, alert = first_alert(monitor, claims)
    assert count == 5
    assert (alert.subject, alert.campaign_id, alert.version) == ("identity:phone:p9", "cp", None)


def test_identity_cluster_quiet_on_households_and_spread_out_accounts() -> None:
    monitor = Monitor([rule("identity_cluster", 5, window=600)])
    signals: list[Signal] = []
    for n in range(300):  # households of three, each account ordering twice
        signals += [
            order(
                T0 + n + k / 10,
                customer=f"h{n}-{k % 3}",
                identity=(f"account:h{n}-{k % 3}", f"address:h{n}", f"device:h{n}-{k % 3}"),
            )
            for k in range(6)
        ]
    # Five accounts on one device, but eleven minutes apart: never five in one window.
    signals += [
        order(T0 + 400 + 660 * n, customer=f"s{n}", identity=("device:shared",)) for n in range(5)
    ]
    signals.sort(key=lambda s: s.at)
    assert run(monitor, signals, every=1.0) == []


def test_identity_cluster_ignores_account_signals() -> None:
    monitor = Monitor([rule("identity_cluster", 2, window=600)])
    same = [order(T0 + n, customer=f"c{n}", identity=("account:x",)) for n in range(5)]
    assert run(monitor, same) == []


# -- route_slo --------------------------------------------------------------------------------


def requests(route: str, statuses: Sequence[int], seconds: Sequence[float]) -> list[RequestSignal]:
    return [
        RequestSignal(T0 + n / 100, route, status, s)
        for n, (status, s) in enumerate(zip(statuses, seconds, strict=True))
    ]


def test_route_error_rate_fires_above_the_slo() -> None:
    monitor = Monitor([rule("route_slo", "0.05", min_events=50, metric="error_rate")])
    statuses = [200] * 84 + [422] * 10 + [500, 502, 503, 504, 500, 500]
    (alert,) = run(monitor, requests("quote", statuses, [0.01] * 100))
    assert (alert.subject, alert.campaign_id, alert.version) == ("route:quote", None, None)
    assert alert.value == Decimal("0.06")


def test_route_error_rate_quiet_at_the_slo_and_with_too_few_requests() -> None:
    monitor = Monitor([rule("route_slo", "0.05", min_events=50, metric="error_rate")])
    at_slo = requests("quote", [200] * 95 + [500] * 5, [0.01] * 100)
    assert run(monitor, at_slo) == []
    few = Monitor([rule("route_slo", "0.05", min_events=50)])
    assert run(few, requests("order", [500] * 49, [0.01] * 49)) == []


def test_route_p99_fires_when_the_nearest_rank_p99_is_slow() -> None:
    monitor = Monitor([rule("route_slo", "0.25", min_events=50, metric="p99_seconds")])
    seconds = [0.02] * 98 + [0.5, 0.8]
    (alert,) = run(monitor, requests("order", [200] * 100, seconds))
    assert alert.subject == "route:order"
    assert alert.value == Decimal("0.5")  # rank 99 of 100


def test_route_p99_quiet_with_one_slow_request_in_a_hundred() -> None:
    monitor = Monitor([rule("route_slo", "0.25", min_events=50, metric="p99_seconds")])
    assert run(monitor, requests("order", [200] * 100, [0.02] * 99 + [2.0])) == []


def test_route_slo_watches_only_its_routes() -> None:
    r = rule("route_slo", "0.05", min_events=50, routes=["quote"])
    monitor = Monitor([r])
    assert run(monitor, requests("order", [500] * 100, [0.01] * 100)) == []


# -- claim_failures ---------------------------------------------------------------------------


def claims(codes: Sequence[str | None]) -> list[ClaimSignal]:
    return [
        ClaimSignal(T0 + n / 10, "cp", f"c{n}", code is None, code) for n, code in enumerate(codes)
    ]


def test_claim_failures_fire_on_unexpected_failures() -> None:
    monitor = Monitor([rule("claim_failures", "0.2", min_events=20)])
    codes: list[str | None] = (
        [None] * 15 + ["internal_error"] * 3 + ["security_store_unavailable"] * 2
    )
    (alert,) = run(monitor, claims(codes))
    assert (alert.subject, alert.campaign_id, alert.version) == ("coupon:cp", "cp", None)
    assert alert.value == Decimal("0.25")


def test_claim_failures_ignore_the_expected_refusals_of_a_rush() -> None:
    monitor = Monitor([rule("claim_failures", "0.2", min_events=20)])
    codes: list[str | None] = [None] * 100 + ["coupon_sold_out"] * 300 + ["rate_limited"] * 200
    codes += ["coupon_limit_reached"] * 50 + ["internal_error"] * 10
    assert run(monitor, claims(codes)) == []


def test_claim_failures_ignore_codes_is_configurable() -> None:
    monitor = Monitor([rule("claim_failures", "0.2", min_events=20, ignore_codes=[])])
    (alert,) = run(monitor, claims([None] * 10 + ["rate_limited"] * 10))
    assert alert.value == Decimal("0.5")


# -- cooldown ---------------------------------------------------------------------------------


def test_a_persisting_condition_alerts_once_per_cooldown() -> None:
    monitor = Monitor([rule("route_slo", "0.05", min_events=50, cooldown=300)])
    alerts = []
    for second in range(700):  # every second: 100 requests, all failing
        for n in range(100):
            monitor.observe(RequestSignal(T0 + second + n / 100, "quote", 500, 0.01))
        alerts += monitor.evaluate(T0 + second + 0.999)
    assert [round(a.at - T0, 3) for a in alerts] == [0.999, 300.999, 600.999]


def test_cooldown_is_per_subject() -> None:
    monitor = Monitor([rule("route_slo", "0.05", min_events=50)])
    alerts = run(monitor, requests("quote", [500] * 60, [0.01] * 60))
    alerts += run(monitor, requests("order", [500] * 60, [0.01] * 60))
    assert sorted(a.subject for a in alerts) == ["route:order", "route:quote"]


# -- the monitor ------------------------------------------------------------------------------


def test_monitor_refuses_bad_rules_with_paths() -> None:
    bad = rule("route_slo", "0.05", window=0)
    with pytest.raises(AlertRulesError) as caught:
        Monitor([rule("route_slo", "0.05"), bad])
    assert ("rules[1].window_seconds", "must be at least 1 second") in caught.value.errors
    assert ("rules[1].name", "duplicate name") in caught.value.errors


def test_setting_the_same_profile_again_keeps_the_window() -> None:
    monitor = profiled_monitor(rule("discount_profile", "1.5", min_events=5))
    miskeyed = [
        order(T0 + n / 10, list_total=30_000, discounts=[("mj", 2, 20_000)]) for n in range(10)
    ]
    for signal in miskeyed[:9]:
        monitor.observe(signal)
    monitor.set_profile("mj", 2, profile())
    monitor.observe(miskeyed[9])
    assert [a.subject for a in monitor.evaluate(T0 + 1)] == ["campaign:mj:v2"]


def test_alert_as_dict_is_json_ready() -> None:
    monitor = Monitor([rule("route_slo", "0.05", min_events=50)])
    (alert,) = run(monitor, requests("quote", [500] * 60, [0.01] * 60))
    data = alert.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["value"] == "1.0000"
    assert data["threshold"] == "0.05"
    assert data["actions"] == ["notify"]


# -- memory -----------------------------------------------------------------------------------


def test_a_million_distinct_identities_keep_the_structures_bounded() -> None:
    rules = [
        rule("identity_cluster", 5, window=600, max_keys=1_000),
        rule("claim_failures", "0.2", max_keys=50, max_events_per_key=2_000),
    ]
    monitor = Monitor(rules)
    for n in range(1_000_000):
        at = T0 + n / 1_000  # 1,000 signals a second for 1,000 s
        monitor.observe(ClaimSignal(at, f"cp{n % 100}", f"c{n}", True, None, (f"device:{n}",)))
        if n % 10_000 == 9_999:
            monitor.evaluate(at)
    held = monitor.footprint()
    assert held["identity_cluster-test"] == {"keys": 1_000, "entries": 1_000}
    assert held["claim_failures-test"]["keys"] <= 50
    assert held["claim_failures-test"]["entries"] <= 50 * 2_000
    monitor.evaluate(T0 + 10_000)  # long after: every window has passed
    assert all(v["keys"] == 0 for k, v in monitor.footprint().items() if k != "(cooldowns)")


def test_idle_keys_are_forgotten_without_a_cap() -> None:
    monitor = Monitor([rule("identity_cluster", 5, window=600)])
    for n in range(50_000):
        monitor.observe(ClaimSignal(T0 + n / 10, "cp", f"c{n}", True, None, (f"device:{n}",)))
        if n % 1_000 == 999:
            monitor.evaluate(T0 + n / 10)
    # Ten per second over a 600 s window: at most about 6,000 devices are remembered.
    assert monitor.footprint()["identity_cluster-test"]["keys"] <= 6_010


# -- 10,000 realistic orders under the default rules ------------------------------------------

NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
CAMPAIGNS = ("d11-cross-store", "d11-apparel-tiers", "d11-second-half", "d11-member-electronics")


def example_catalogue() -> Catalogue:
    text = resources.files("promoguard.examples").joinpath("catalogue.json").read_text("utf-8")
    return Catalogue.model_validate_json(text)


def example_rules() -> list[Rule]:
    text = resources.files("promoguard.examples").joinpath("campaigns.json").read_text("utf-8")
    return [parse_rule(spec) for spec in json.loads(text) if spec["id"] in CAMPAIGNS]


def profiles_of(rules: Sequence[Rule], samples: Sequence[Sample]) -> dict[tuple[str, int], Any]:
    """Each campaign's expected profile, simulated with the others live."""
    return {
        (r.id, r.version): simulate(
            samples, live=[o for o in rules if o.id != r.id], candidate=r, now=NOW
        ).profile
        for r in rules
    }


@dataclass(frozen=True)
class Shop:
    rules: list[Rule]
    samples: list[Sample]
    profiles: dict[tuple[str, int], Any]


@pytest.fixture(scope="module")
def shop() -> Shop:
    catalogue = example_catalogue()
    rules = example_rules()
    return Shop(
        rules,
        synthetic_sample(catalogue, size=10_000, seed=11),
        profiles_of(rules, synthetic_sample(catalogue, size=500, seed=7)),
    )


def identity_of(n: int) -> tuple[str, ...]:
    """Mostly unique signals; every 25th customer shares address and payment with the 1-2 next."""
    head = n - n % 25 if n % 25 < 3 else n
    return (f"account:{n}", f"device:{n}", f"phone:{n}", f"address:{head}", f"payment:{head}")


def live_orders(
    shop: Shop, start: float, *, ruleset: RuleSet | None = None, vip_fault: bool = False
) -> Iterator[tuple[OrderSignal, Customer]]:
    """The shop's sample priced under its live rules, one order every 5 ms (200/s)."""
    ruleset = ruleset or RuleSet(shop.rules)
    for n, sample in enumerate(shop.samples):
        customer = sample.customer
        priced_as = customer
        if vip_fault and customer.member_tier is None:
            priced_as = customer.model_copy(update={"member_tier": "platinum"})
        quote = ruleset.quote(sample.cart, priced_as, NOW)
        signal = OrderSignal(
            at=start + n * 0.005,
            order_id=f"o{n}",
            customer_id=customer.id,
            list_total=quote.list_total,
            discount_total=quote.discount_total,
            member_tier=priced_as.member_tier,
            identity=identity_of(n),
            discounts=tuple((d.rule_id, d.rule_version, d.amount) for d in quote.discounts),
        )
        yield signal, customer


def side_traffic(rng: random.Random, order: OrderSignal) -> list[Signal]:
    """The requests around one order (quote, order, sometimes a claim) with rare errors."""
    out: list[Signal] = []
    for route in ("quote", "order"):
        status = 500 if rng.random() < 0.004 else (422 if rng.random() < 0.02 else 200)
        seconds = 0.3 if rng.random() < 0.003 else rng.uniform(0.004, 0.08)
        out.append(RequestSignal(order.at, route, status, seconds))
    if rng.random() < 0.2:
        refusal = rng.choice([None] * 8 + ["coupon_limit_reached", "rate_limited"])
        if rng.random() < 0.01:
            refusal = "internal_error"
        out.append(
            ClaimSignal(
                order.at,
                "d11-coupon-welcome",
                order.customer_id,
                refusal is None,
                refusal,
                order.identity,
            )
        )
    return out


def test_ten_thousand_normal_orders_raise_no_alert_under_the_default_rules(shop: Shop) -> None:
    monitor = Monitor(default_rules(), shop.profiles)
    rng = random.Random(12)
    signals: list[Signal] = []
    for signal, _ in live_orders(shop, T0):
        signals += [signal, *side_traffic(rng, signal)]
    discounted = sum(1 for s in signals if isinstance(s, OrderSignal) and s.discounts)
    assert discounted > 3_000  # the campaigns really are in use
    assert run(monitor, signals) == []
    assert monitor.profile_errors == {}


def test_a_miskeyed_threshold_is_caught_within_50_affected_orders(shop: Shop) -> None:
    monitor = Monitor(default_rules(), shop.profiles)
    orders = live_orders(shop, T0)
    assert run(monitor, (s for s, _ in (next(orders) for _ in range(2_000)))) == []
    # Version 1 of the cross-store threshold arrives as "every 50 off, save 200".
    wrong = [
        r
        if r.id != "d11-cross-store"
        else parse_rule(
            {
                **r.model_dump(mode="json", exclude_none=True),
                "tiers": [{"min_spend": 5_000, "discount": 20_000}],
            }
        )
        for r in shop.rules
    ]
    affected = 0
    for signal, _ in live_orders(shop, T0 + 20, ruleset=RuleSet(wrong)):
        affected += any(d[0] == "d11-cross-store" for d in signal.discounts)
        monitor.observe(signal)
        alerts = [a for a in monitor.evaluate(signal.at) if Action.PAUSE in a.actions]
        if alerts:
            break
    else:
        raise AssertionError("no pause")
    assert affected <= 50
    assert (alerts[0].campaign_id, alerts[0].version) == ("d11-cross-store", 1)
    assert alerts[0].rule == "discount-above-profile"


def test_ordinary_customers_priced_as_vip_are_caught_within_50_affected_orders(shop: Shop) -> None:
    monitor = Monitor(default_rules(), shop.profiles)
    orders = live_orders(shop, T0)
    assert run(monitor, (s for s, _ in (next(orders) for _ in range(2_000)))) == []
    affected, raised = 0, []
    for signal, customer in live_orders(shop, T0 + 20, vip_fault=True):
        member_price = any(d[0] == "d11-member-electronics" for d in signal.discounts)
        affected += member_price and customer.member_tier is None
        monitor.observe(signal)
        raised += monitor.evaluate(signal.at)
        if any(Action.PAUSE in a.actions for a in raised):
            break
    else:
        raise AssertionError("no pause")
    assert affected <= 50
    (pause,) = [a for a in raised if Action.PAUSE in a.actions]
    assert (pause.rule, pause.campaign_id, pause.version) == (
        "tier-mix-shift",
        "d11-member-electronics",
        1,
    )
    # The tier-neutral campaigns see the same flood of platinum but give the same discounts:
    # they are not paused; the shop-wide rule may tell people about the shift.
    assert {a.rule for a in raised} <= {"tier-mix-shift", "tier-mix-shop"}
