"""Semantic lint speed: one candidate against a 2,000-rule live set, and a 2,000-rule file.

Builds a synthetic catalogue (5,000 SKUs in 50 categories, 100 tags, with list prices, costs
and some floor prices) and a live set of N rules of every kind with the mix a large shop runs:
a few store-wide campaigns, category and tag campaigns, coupons, and mostly SKU-level offers.
Everything is built from one seed, so every run lints the same rules. Then times:

* ``candidate``: :func:`lint` of one new rule against the N live rules and the catalogue, for a
  store-wide threshold (the widest worst-cart search), a category percent-off and a SKU flash
  sale. Each call builds its own indexes, as a review request would.
* ``file``: :func:`lint_rules` of all N live rules as one file (each stacks with the others).

The synthetic campaigns all stack (three store-wide campaigns, store-wide coupons, first-order
offers), so the worst-cart search finds most rules in a cart above the 50 % limit: the findings
column is there to show the checks ran, not to judge the data. Figures are the median of several
runs, in milliseconds. Nothing is asserted: the target (one
candidate against 2,000 live rules in under a second) is printed beside the figures.

Usage::

    python bench/lint.py                 # N = 2000
    python bench/lint.py --rules 200 --runs 3

The last line printed is one JSON object with the figures, for scripts.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.lint import Finding, lint, lint_rules
from promoguard.promotions.rules import Rule, parse_rule

SKUS = 5_000
CATEGORIES = 50
TAGS = 100
TIERS = ("silver", "gold", "platinum")
NOW = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
TARGET_MS = 1_000
PRICES = (990, 1990, 4900, 9900, 19900, 39900, 89900, 299900)


def build_catalogue(rng: random.Random) -> Catalogue:
    """5,000 SKUs, 50 categories, 0-2 tags each; cost 30-60 % of list, a floor on a third."""
    items = []
    for n in range(SKUS):
        price = rng.choice(PRICES)
        cost = price * rng.randint(30, 60) // 100
        floor = price * 55 // 100 if rng.random() < 0.3 else None
        items.append(
            CatalogueItem(
                sku=f"sku{n:05d}",
                category=f"cat{n % CATEGORIES:02d}",
                tags=frozenset(f"t{rng.randrange(TAGS)}" for _ in range(rng.randint(0, 2))),
                unit_price=price,
                cost=cost,
                floor_price=floor,
            )
        )
    return Catalogue(member_tiers=frozenset(TIERS), items=tuple(items))


def _window(rng: random.Random) -> dict[str, Any]:
    start = NOW - timedelta(days=rng.randint(0, 5))
    return {"valid_from": start, "valid_until": start + timedelta(days=rng.randint(7, 30))}


def _sku_rule(rng: random.Random, by_price: dict[int, list[CatalogueItem]]) -> dict[str, Any]:
    """An offer on 1-5 SKUs of one list price: the bulk of any big shop's rules."""
    picked = rng.sample(by_price[rng.choice(PRICES)], rng.randint(1, 5))
    scope = {"skus": [i.sku for i in picked]}
    low = min(i.unit_price for i in picked)
    kind = rng.choice(("fixed_price", "flash_sale", "member_price", "group_buy", "bxgy"))
    if kind == "fixed_price":
        return {"kind": kind, "scope": scope, "price": low * 8 // 10}
    if kind == "flash_sale":
        return {
            "kind": kind,
            "scope": scope,
            "price": low * 6 // 10,
            "stock": 100,
            "per_user_limit": 1,
        }
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
        if rng.random() < 0.25
        else {"categories": [f"cat{rng.randrange(CATEGORIES):02d}"]}
    )
    spec: dict[str, Any] = {
        "kind": "coupon",
        "scope": scope,
        "per_user_limit": 1,
        "quantity": 10_000,
    }
    if rng.random() < 0.5:
        return spec | {"benefit": "threshold", "min_spend": 30000, "discount": 3000}
    return spec | {"benefit": "percent", "percent": "5", "cap": 2000}


def build_rules(n: int, catalogue: Catalogue, rng: random.Random) -> list[Rule]:
    """N rules: 3 store-wide, 5 % category, 1 % tag, 1 % coupons, the rest SKU-level offers."""
    specs: list[dict[str, Any]] = [_wide_rule(rng, {"all_items": True}) for _ in range(min(3, n))]
    for _ in range(n * 5 // 100):
        specs.append(_wide_rule(rng, {"categories": [f"cat{rng.randrange(CATEGORIES):02d}"]}))
    for _ in range(n // 100):
        specs.append(_wide_rule(rng, {"tags": [f"t{rng.randrange(TAGS)}"]}))
    specs.extend(_coupon(rng) for _ in range(n // 100))
    by_price: dict[int, list[CatalogueItem]] = {}
    for item in catalogue.items:
        by_price.setdefault(item.unit_price, []).append(item)
    while len(specs) < n:
        specs.append(_sku_rule(rng, by_price))
    return [
        parse_rule(spec | {"id": f"r{number:05d}", **_window(rng)})
        for number, spec in enumerate(specs)
    ]


def candidates(catalogue: Catalogue) -> dict[str, dict[str, Any]]:
    """The new rules linted against the live set, from the widest search to the narrowest."""
    window = {"valid_from": NOW, "valid_until": NOW + timedelta(days=11)}
    return {
        "store-wide threshold": {
            "kind": "threshold",
            "id": "cand-store",
            "scope": {"all_items": True},
            "tiers": [
                {"min_spend": 30000, "discount": 5000},
                {"min_spend": 60000, "discount": 12000},
            ],
            **window,
        },
        "category percent-off": {
            "kind": "percent_off",
            "id": "cand-category",
            "scope": {"categories": ["cat07"]},
            "percent": "15",
            **window,
        },
        "SKU flash sale": {
            "kind": "flash_sale",
            "id": "cand-flash",
            "scope": {"skus": [catalogue.items[42].sku]},
            "price": catalogue.items[42].unit_price // 2,
            "stock": 200,
            "per_user_limit": 1,
            **window,
        },
    }


def timed(call: Callable[[], list[Finding]], runs: int) -> tuple[float, list[Finding]]:
    """The median wall time of ``runs`` calls in ms, and the last call's findings."""
    samples = []
    findings: list[Finding] = []
    for _ in range(runs):
        start = time.perf_counter()
        findings = call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), findings


def _codes(findings: list[Finding]) -> str:
    counts = Counter(f.code for f in findings)
    return " ".join(f"{code}×{n}" for code, n in sorted(counts.items())) or "-"


def _key(label: str) -> str:
    """A row's JSON key: "candidate: SKU flash sale" -> "sku_flash_sale_ms"."""
    if label.startswith("file"):
        return "file_ms"
    words = label.removeprefix("candidate: ").lower().replace("-", " ").split()
    return "_".join(words) + "_ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=2000, help="live rules")
    parser.add_argument("--runs", type=int, default=5, help="runs per candidate figure")
    parser.add_argument("--file-runs", type=int, default=3, help="runs of the whole-file lint")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    console = Console(stderr=True)
    rng = random.Random(args.seed)
    with console.status("building the catalogue and the live rules..."):
        catalogue = build_catalogue(rng)
        live = build_rules(args.rules, catalogue, random.Random(args.seed + args.rules))
    rows: list[tuple[str, int, float, list[Finding]]] = []
    with console.status("linting...") as status:
        for label, spec in candidates(catalogue).items():
            status.update(f"candidate: {label}")
            ms, found = timed(
                lambda spec=spec: lint(spec, live=live, catalogue=catalogue, now=NOW), args.runs
            )
            rows.append((f"candidate: {label}", 1, ms, found))
        status.update(f"file of {len(live):,} rules")
        ms, found = timed(lambda: lint_rules(live, catalogue=catalogue, now=NOW), args.file_runs)
        rows.append(("file: every live rule", len(live), ms, found))

    table = Table(
        title=f"lint, {len(live):,} live rules, {SKUS:,} SKUs ({platform.python_implementation()} "
        f"{platform.python_version()}; median of {args.runs} runs, file {args.file_runs})"
    )
    table.add_column("what", no_wrap=True)
    for column in ("rules linted", "ms", "ms per rule"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("findings")
    for label, linted, ms, found in rows:
        table.add_row(label, f"{linted:,}", f"{ms:,.1f}", f"{ms / linted:,.2f}", _codes(found))
    Console(width=max(Console().width, 120)).print(table)
    worst = max(ms for label, _, ms, _ in rows if label.startswith("candidate"))
    print(f"slowest candidate: {worst:,.1f} ms (target under {TARGET_MS:,} ms)")
    summary = {
        "live_rules": len(live),
        "skus": SKUS,
        **{_key(label): round(ms, 1) for label, _, ms, _ in rows},
        "slowest_candidate_ms": round(worst, 1),
        "target_met": worst < TARGET_MS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
