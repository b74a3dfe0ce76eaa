"""Impact simulation speed: ``simulate()`` of a synthetic sample against a live rule set.

Uses the catalogue and rule mix of ``bench/pricing.py`` (10,000 SKUs; N live rules of every
kind), builds a synthetic sample from that catalogue, and times, on one core:

* ``sample``: :func:`~promoguard.promotions.simulate.synthetic_sample` of S carts;
* ``simulate``: :func:`~promoguard.promotions.simulate.simulate` of those carts with a store-wide
  candidate (both rule sets compiled, every cart priced twice, the report summed up).

Each is run several times; the table shows the fastest and the median run.

Usage::

    python bench/simulate.py                         # 1,000 samples, 200 live rules
    python bench/simulate.py --samples 5000 --rules 2000

The last line printed is one JSON object with the figures, for scripts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from pricing import NOW, build_rules, catalogue
from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.rules import parse_rule
from promoguard.promotions.simulate import simulate, synthetic_sample


def timed(run: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Wall time of each of ``repeat`` calls, in milliseconds, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter_ns()
        result = run()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = random.Random(args.seed)
    items = catalogue(rng)
    shop = Catalogue(
        member_tiers=frozenset({"silver", "gold", "platinum"}),
        items=tuple(
            CatalogueItem(sku=i.sku, category=i.category, tags=i.tags, unit_price=i.price)
            for i in items
        ),
    )
    live = build_rules(args.rules, items, random.Random(args.seed + args.rules))
    candidate = parse_rule(
        {
            "id": "bench-candidate",
            "kind": "percent_off",
            "scope": {"all_items": True},
            "percent": "8",
            "cap": 3000,
            "limits": {"budget": 50_000_000},
        }
    )

    sample_times, samples = timed(
        lambda: synthetic_sample(shop, size=args.samples, seed=args.seed), args.repeat
    )
    sim_times, report = timed(
        lambda: simulate(samples, live=live, candidate=candidate, now=NOW, expected_orders=100_000),
        args.repeat,
    )

    table = Table(
        title=f"impact simulation, one core ({platform.python_implementation()} "
        f"{platform.python_version()}, {args.samples:,} samples, {len(live):,} live rules, "
        f"{args.repeat} runs)"
    )
    for column in ("step", "best ms", "median ms", "carts/s (best)"):
        table.add_column(column, justify="right")
    for step, times, carts in (
        ("synthetic_sample", sample_times, args.samples),
        ("simulate (2 sides)", sim_times, args.samples),
    ):
        best = min(times)
        table.add_row(
            step, f"{best:,.1f}", f"{statistics.median(times):,.1f}", f"{carts / best * 1e3:,.0f}"
        )
    Console().print(table)
    forecast = report.forecast
    Console().print(
        f"candidate: {report.with_candidate.orders_per_rule.get(candidate.id, 0):,} of "
        f"{args.samples:,} carts discounted, forecast {forecast.forecast_spend:,} "
        f"against budget {forecast.budget:,}: {'blocked' if report.blocked else 'may go live'}"
    )
    print(
        json.dumps(
            {
                "samples": args.samples,
                "live_rules": len(live),
                "synthetic_sample_ms": round(min(sample_times), 1),
                "simulate_ms": round(min(sim_times), 1),
                "simulate_median_ms": round(statistics.median(sim_times), 1),
                "blocked": report.blocked,
            }
        )
    )


if __name__ == "__main__":
    main()
