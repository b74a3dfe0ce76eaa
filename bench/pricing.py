"""Pricing engine speed on one core: quotes per second and p50 / p99 latency.

Builds a synthetic catalogue (10,000 SKUs in 200 categories, 100 tags) and N live rules of every
kind with the mix a large shop runs: a few store-wide campaigns, category campaigns, and mostly
SKU-level offers (special prices, flash sales, member prices, group-buy, buy N get M) plus coupons.
Then prices random carts against a compiled :class:`RuleSet`:

* ``mixed``: carts of 1-20 lines, as traffic looks;
* ``5-line``: carts of exactly 5 lines, the figure the target is stated for.

Carts and customers are built before the clock starts: parsing a request is the API's cost, not
the engine's. The process pins itself to one CPU where the OS allows it.

Usage::

    python bench/pricing.py                  # N = 10, 200, 2000
    python bench/pricing.py --quotes 5000    # quicker, noisier
    python bench/pricing.py --profile        # cProfile of the 200-rule 5-line run

The last line printed is one JSON object with the figures (``quotes_per_s_200``, ``p99_us_200``,
``quotes_per_s_2000``, ...), for scripts.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer
from promoguard.promotions.rules import Rule, parse_rule

SKUS = 10_000
CATEGORIES = 200
TAGS = 100
TIERS = ("silver", "gold", "platinum")
NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
TARGET_QPS = 20_000


@dataclass(frozen=True)
class Item:
    sku: str
    category: str
    tags: frozenset[str]
    price: int


def catalogue(rng: random.Random) -> list[Item]:
    """10,000 SKUs, 200 categories, 0-2 tags each, prices 9.90 to 2,999.00 yuan."""
    items = []
    for n in range(SKUS):
        tags = frozenset(f"t{rng.randrange(TAGS)}" for _ in range(rng.randint(0, 2)))
        price = rng.choice((990, 1990, 4900, 9900, 19900, 39900, 89900, 299900))
        items.append(Item(f"sku{n:05d}", f"cat{n % CATEGORIES:03d}", tags, price))
    return items


def _window(rng: random.Random) -> dict[str, Any]:
    # Most rules are live at NOW; some have ended or not started, as on a real sale day.
    roll = rng.random()
    if roll < 0.8:
        return {"valid_from": NOW - timedelta(days=1), "valid_until": NOW + timedelta(days=1)}
    if roll < 0.9:
        return {"valid_until": NOW - timedelta(hours=1)}
    return {"valid_from": NOW + timedelta(hours=1)}


def _sku_rule(rng: random.Random, items: list[Item]) -> dict[str, Any]:
    """An offer on 1-5 SKUs: the bulk of any big shop's rules."""
    picked = rng.sample(items, rng.randint(1, 5))
    scope = {"skus": [i.sku for i in picked]}
    low = min(i.price for i in picked)
    kind = rng.choice(("fixed_price", "flash_sale", "member_price", "group_buy", "bxgy"))
    if kind == "fixed_price":
        return {"kind": kind, "scope": scope, "price": low * 8 // 10}
    if kind == "flash_sale":
        return {"kind": kind, "scope": scope, "price": low // 2, "stock": 100, "per_user_limit": 1}
    if kind == "member_price":
        offers = [{"tier": t, "percent": str(5 * (n + 1))} for n, t in enumerate(TIERS)]
        return {"kind": kind, "scope": scope, "offers": offers}
    if kind == "group_buy":
        return {"kind": kind, "scope": scope, "price": low * 7 // 10, "group_size": 3}
    return {"kind": kind, "scope": scope, "buy": 1, "get": 1, "percent": "50"}


def _wide_rule(rng: random.Random, scope: dict[str, Any]) -> dict[str, Any]:
    """A campaign over a category, a tag or the whole store."""
    kind = rng.choice(("threshold", "threshold", "percent_off", "tiered_percent", "first_order"))
    if kind == "threshold":
        if rng.random() < 0.3:
            return {
                "kind": kind,
                "scope": scope,
                "tiers": [{"min_spend": 20000, "discount": 2000}],
                "repeat": True,
                "repeat_cap": 10000,
            }
        tiers = [{"min_spend": 20000, "discount": 2000}, {"min_spend": 50000, "discount": 6000}]
        return {"kind": kind, "scope": scope, "tiers": tiers}
    if kind == "percent_off":
        return {"kind": kind, "scope": scope, "percent": "10", "cap": 5000}
    if kind == "tiered_percent":
        tiers = [{"min_quantity": 2, "percent": "5"}, {"min_quantity": 3, "percent": "10"}]
        return {"kind": kind, "scope": scope, "tiers": tiers}
    return {"kind": kind, "scope": scope, "discount": 1000, "min_spend": 5000}


def _coupon(rng: random.Random) -> dict[str, Any]:
    scope = (
        {"all_items": True}
        if rng.random() < 0.5
        else {"categories": [f"cat{rng.randrange(CATEGORIES):03d}"]}
    )
    shape = rng.choice(("threshold", "percent", "no_threshold"))
    spec: dict[str, Any] = {
        "kind": "coupon",
        "scope": scope,
        "benefit": shape,
        "per_user_limit": 1,
        "quantity": 10_000,
    }
    if shape == "threshold":
        spec |= {"min_spend": 30000, "discount": 3000}
    elif shape == "percent":
        spec |= {"percent": "5", "cap": 2000}
    else:
        spec |= {"discount": 500}
    return spec


def build_rules(n: int, items: list[Item], rng: random.Random) -> list[Rule]:
    """N rules: 3 store-wide, 5 % category, 1 % tag, 4 % coupons, the rest SKU-level offers."""
    store_wide = min(3, n)
    by_category = n * 5 // 100
    by_tag = n // 100
    coupons = n * 4 // 100
    specs: list[dict[str, Any]] = []
    for _ in range(store_wide):
        specs.append(_wide_rule(rng, {"all_items": True}))
    for _ in range(by_category):
        specs.append(_wide_rule(rng, {"categories": [f"cat{rng.randrange(CATEGORIES):03d}"]}))
    for _ in range(by_tag):
        specs.append(_wide_rule(rng, {"tags": [f"t{rng.randrange(TAGS)}"]}))
    for _ in range(coupons):
        specs.append(_coupon(rng))
    while len(specs) < n:
        specs.append(_sku_rule(rng, items))
    rules = []
    for number, spec in enumerate(specs):
        spec |= {"id": f"r{number:05d}", "priority": rng.randint(0, 3), **_window(rng)}
        if rng.random() < 0.1:
            spec["exclusive"] = True
        rules.append(parse_rule(spec))
    return rules


def build_traffic(
    rng: random.Random, items: list[Item], rules: list[Rule], count: int, lines: int | None
) -> list[tuple[Cart, Customer]]:
    coupon_ids = [r.id for r in rules if r.kind == "coupon"]
    group_ids = [r.id for r in rules if r.kind == "group_buy"]
    traffic = []
    for n in range(count):
        picked = rng.sample(items, lines or rng.randint(1, 20))
        cart = Cart(
            lines=tuple(
                CartLine(
                    sku=i.sku,
                    category=i.category,
                    tags=i.tags,
                    unit_price=i.price,
                    quantity=rng.choice((1, 1, 1, 2, 3)),
                    floor_price=i.price // 2 if rng.random() < 0.3 else None,
                )
                for i in picked
            )
        )
        customer = Customer(
            id=f"c{n}",
            member_tier=rng.choice((None, *TIERS)),
            first_order=rng.random() < 0.1,
            coupons=frozenset(rng.sample(coupon_ids, min(2, len(coupon_ids)))),
            groups=frozenset(rng.sample(group_ids, min(1, len(group_ids)))),
        )
        traffic.append((cart, customer))
    return traffic


@dataclass(frozen=True)
class Result:
    rules: int
    carts: str
    quotes_per_s: float
    p50_us: float
    p99_us: float
    matched: float
    discounted_share: float


def measure(ruleset: RuleSet, traffic: list[tuple[Cart, Customer]], label: str) -> Result:
    """Time each quote; the throughput is quotes over the summed quote time."""
    for cart, customer in traffic[:200]:  # warm-up
        ruleset.quote(cart, customer, NOW)
    samples = []
    discounted = 0
    clock = time.perf_counter_ns
    quote = ruleset.quote
    gc.collect()
    for cart, customer in traffic:
        start = clock()
        result = quote(cart, customer, NOW)
        samples.append(clock() - start)
        discounted += result.discount_total > 0
    # Every rule whose scope takes in a line is explained once or more: count them.
    matched = statistics.fmean(
        len({note.rule_id for note in quote(cart, cust, NOW).explanation})
        for cart, cust in traffic[:2000]
    )
    samples.sort()
    return Result(
        rules=len(ruleset),
        carts=label,
        quotes_per_s=len(samples) / (sum(samples) / 1e9),
        p50_us=samples[len(samples) // 2] / 1e3,
        p99_us=samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1e3,
        matched=matched,
        discounted_share=discounted / len(traffic),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=20_000, help="quotes per measurement")
    parser.add_argument("--rules", type=int, nargs="+", default=[10, 200, 2000])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", action="store_true", help="profile the 200-rule 5-line run")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    console = Console(stderr=True)
    rng = random.Random(args.seed)
    items = catalogue(rng)
    results: list[Result] = []
    with console.status("pricing...") as status:
        for n in args.rules:
            rules = build_rules(n, items, random.Random(args.seed + n))
            ruleset = RuleSet(rules)
            for label, lines in (("mixed 1-20", None), ("5-line", 5)):
                status.update(f"{n} rules, {label} carts: building traffic")
                traffic = build_traffic(random.Random(n), items, rules, args.quotes, lines)
                status.update(f"{n} rules, {label} carts: pricing {args.quotes:,} quotes")
                if args.profile and n == 200 and lines == 5:
                    profiler = cProfile.Profile()
                    profiler.runcall(measure, ruleset, traffic, label)
                    pstats.Stats(profiler, stream=None).sort_stats(
                        os.environ.get("BENCH_SORT", "cumulative")
                    ).print_stats(25)
                results.append(measure(ruleset, traffic, label))

    table = Table(
        title=f"pricing engine, one core ({platform.python_implementation()} "
        f"{platform.python_version()}, {args.quotes:,} quotes per row)"
    )
    for column in ("rules", "carts", "quotes/s", "p50 µs", "p99 µs", "rules matched", "discounted"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.rules:,}",
            r.carts,
            f"{r.quotes_per_s:,.0f}",
            f"{r.p50_us:.1f}",
            f"{r.p99_us:.1f}",
            f"{r.matched:.1f}",
            f"{r.discounted_share:.0%}",
        )
    Console().print(table)

    summary: dict[str, Any] = {}
    for r in results:
        suffix = "" if r.carts == "5-line" else "_mixed"
        summary[f"quotes_per_s_{r.rules}{suffix}"] = round(r.quotes_per_s)
        summary[f"p50_us_{r.rules}{suffix}"] = round(r.p50_us, 1)
        summary[f"p99_us_{r.rules}{suffix}"] = round(r.p99_us, 1)
    if {200, 2000} <= set(args.rules):
        ratio = summary["quotes_per_s_200"] / summary["quotes_per_s_2000"]
        summary["time_ratio_2000_vs_200"] = round(ratio, 2)
        summary["target_met"] = summary["quotes_per_s_200"] >= TARGET_QPS and ratio <= 2
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
