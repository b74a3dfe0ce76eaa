"""Remediation planning speed: find + re-price + classify the affected orders of an incident.

Seeds a database (a temporary SQLite file, or ``--database-url``, e.g. a PostgreSQL schema)
directly through the tables, not through HTTP: a 满200减20 campaign (v1) and a mis-keyed v2
(满250减60) live together with a 12.5 %-off campaign on tagged items; ``--orders`` orders priced
while v2 was live (carts of 1-4 lines, every order really priced by the engine so its recorded
discounts are what checkout would have written), spread over paid, shipped, refunded and
cancelled; the audit entries and the rules stamp that say what was live when; and an incident
linking v2. Then times :func:`promoguard.remediation.build_plan` on one core (the process pins
itself to one CPU where the OS allows it) with a progress bar.

Usage::

    .venv/bin/python bench/remediation.py                  # 100,000 orders
    .venv/bin/python bench/remediation.py --orders 20000   # quicker
    .venv/bin/python bench/remediation.py --profile        # cProfile of the planning

Then ``--payouts`` (5,000; 0: all) of the plan's refunds are stored as a plan, approved and
executed the way ``promoguard worker`` does (:func:`promoguard.plans.jobs.run_plan`) against a
``promoguard payment-provider`` process (no faults), on all cores: payouts per second.

The last line printed is one JSON object: ``{"plan_orders_per_s": ..., "payouts_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from sqlalchemy import create_engine, insert, update
from sqlalchemy.engine import Engine

from promoguard.audit import AuditEntry
from promoguard.campaigns.models import Campaign, CampaignVersion, RulesStamp
from promoguard.incidents.models import Incident
from promoguard.orders.models import Order, OrderDiscountRow, OrderLine, QuoteRecord
from promoguard.plans import service as plans
from promoguard.plans.jobs import run_plan
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer, Quote
from promoguard.promotions.rules import parse_rule
from promoguard.remediation import PlanDraft, RemediationPolicy, build_plan
from promoguard.settings import Settings
from promoguard.store import migrate
from promoguard.store.db import Database, sync_url

TARGET = 10_000
CHUNK = 5_000
T0 = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)
TEMPLATES = 2_000
"""Distinct carts; orders reuse them with their own customers and ids."""

SPECS = {
    ("mj", 1): {
        "id": "mj",
        "version": 1,
        "kind": "threshold",
        "scope": {"all_items": True},
        "tiers": [{"min_spend": 20000, "discount": 2000}],
    },
    ("mj", 2): {
        "id": "mj",
        "version": 2,
        "kind": "threshold",
        "scope": {"all_items": True},
        "tiers": [{"min_spend": 25000, "discount": 6000}],
    },
    ("sale", 1): {
        "id": "sale",
        "version": 1,
        "kind": "percent_off",
        "scope": {"tags": ["sale"]},
        "percent": "12.5",
        "cap": 3000,
    },
}
STATUSES = ("paid", "paid", "paid", "shipped", "partially_refunded", "cancelled", "created")


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _templates(rng: random.Random) -> list[tuple[Cart, Quote]]:
    rules = RuleSet([parse_rule(SPECS["mj", 2]), parse_rule(SPECS["sale", 1])])
    customer = Customer(id="template")
    out = []
    for _ in range(TEMPLATES):
        skus = rng.sample(range(500), rng.randint(1, 4))
        lines = tuple(
            CartLine(
                sku=f"sku-{n}",
                category=f"cat-{n % 20}",
                tags=frozenset({"sale"} if n % 3 == 0 else ()),
                unit_price=rng.randrange(3000, 30000, 10) + rng.choice((0, 1, 9)),
                quantity=rng.randint(1, 3),
                floor_price=None,
            )
            for n in skus
        )
        cart = Cart(lines=lines)
        out.append((cart, rules.quote(cart, customer, T0)))
    return out


def _campaign_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Campaign),
            [
                {
                    "id": cid,
                    "name": cid,
                    "kind": SPECS[cid, 1]["kind"],
                    "status": "paused" if cid == "mj" else "live",
                    "live_version": 2 if cid == "mj" else 1,
                    "previous_version": 1 if cid == "mj" else None,
                    "profile_version": 1,
                    "latest_version": 2 if cid == "mj" else 1,
                    "created_by": "bench",
                    "rollout_bps": 10_000,
                }
                for cid in ("mj", "sale")
            ],
        )
        conn.execute(
            insert(CampaignVersion),
            [
                {
                    "campaign_id": cid,
                    "version": v,
                    "spec": spec,
                    "state": "paused" if (cid, v) == ("mj", 2) else "live",
                    "author": "bench",
                }
                for (cid, v), spec in SPECS.items()
            ],
        )
        # What was live when: stamp 1 mj v1, 2 sale v1, 3 mj v2 (the window), 4 mj paused.
        moves = [
            ("campaign.activated", "mj", 1),
            ("campaign.activated", "sale", 1),
            ("campaign.activated", "mj", 2),
            ("campaign.paused", "mj", 2),
        ]
        conn.execute(
            insert(AuditEntry),
            [
                {
                    "at": T0 + timedelta(minutes=n - 10 if n < 3 else 10_000),
                    "actor": "bench",
                    "action": action,
                    "subject_type": "campaign",
                    "subject_id": cid,
                    "detail": {"version": v},
                }
                for n, (action, cid, v) in enumerate(moves)
            ],
        )
        conn.execute(update(RulesStamp).where(RulesStamp.id == 1).values(value=len(moves)))


def _order_rows(n: int, cart: Cart, priced: Quote, status: str) -> tuple[dict[str, Any], ...]:
    order_id = str(uuid.UUID(int=n + 1))
    at = T0 + timedelta(milliseconds=n)
    facts = {"id": f"c-{n}", "member_tier": None, "first_order": False, "groups": []}
    quote = {"id": order_id, "customer_id": f"c-{n}", "total": priced.total, "rules_stamp": 3}
    quote |= {"issued_at": at, "expires_at": at + timedelta(minutes=15), "quote": {}}
    paid = status not in ("created", "cancelled")
    head = {
        "id": order_id,
        "customer_id": f"c-{n}",
        "quote_id": order_id,
        "status": status,
        "currency": "CNY",
        "list_total": priced.list_total,
        "discount_total": priced.discount_total,
        "total": priced.total,
        "refunded_total": priced.total if status == "cancelled" else 0,
        "priced_at": at,
        "created_at": at,
        "updated_at": at,
        "customer_facts": facts | {"coupons": [], "flash_sale_used": {}, "unavailable": {}},
    }
    lines = []
    refunded = 0
    for pos, (line, out) in enumerate(zip(cart.lines, priced.lines, strict=True)):
        back = out.final_amount if status == "partially_refunded" and pos == 0 and paid else 0
        refunded += back
        lines.append(
            {
                "order_id": order_id,
                "position": pos,
                "sku": line.sku,
                "category": line.category,
                "tags": sorted(line.tags),
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "floor_price": None,
                "list_amount": out.list_amount,
                "discount": out.discount,
                "final_amount": out.final_amount,
                "refunded_quantity": line.quantity if back else 0,
                "refunded_amount": back,
            }
        )
    if refunded:
        head["refunded_total"] = refunded
    discounts = [
        {
            "order_id": order_id,
            "rule_id": d.rule_id,
            "rule_version": d.rule_version,
            "kind": d.kind,
            "layer": d.layer.name.lower(),
            "amount": d.amount,
        }
        for d in priced.discounts
    ]
    return quote, head, lines, discounts  # type: ignore[return-value]


def seed(url: str, orders: int, console: Console) -> None:
    """Write the campaigns, the history, ``orders`` orders priced under v2 and the incident."""
    migrate.upgrade(url)
    engine = create_engine(sync_url(url))
    rng = random.Random(11)
    templates = _templates(rng)
    _campaign_rows(engine)
    with Progress(
        "seeding", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("seed", total=orders)
        for start in range(0, orders, CHUNK):
            quotes, heads, lines, discounts = [], [], [], []
            for n in range(start, min(start + CHUNK, orders)):
                cart, priced = templates[n % TEMPLATES]
                q, h, ls, ds = _order_rows(n, cart, priced, STATUSES[n % len(STATUSES)])
                quotes.append(q)
                heads.append(h)
                lines += ls
                discounts += ds
            with engine.begin() as conn:
                conn.execute(insert(QuoteRecord), quotes)
                conn.execute(insert(Order), heads)
                conn.execute(insert(OrderLine), lines)
                if discounts:
                    conn.execute(insert(OrderDiscountRow), discounts)
            bar.update(task, advance=len(heads))
    with engine.begin() as conn:
        conn.execute(
            insert(Incident),
            [
                {
                    "title": "满200减20 keyed as 满250减60",
                    "status": "open",
                    "severity": "P1",
                    "computed_severity": "P1",
                    "versions": [["mj", 2]],
                    "window_start": T0,
                    "impact": {},
                    "reported": {},
                    "opened_by": "bench",
                    "opened_at": T0 + timedelta(days=1),
                    "ack_due_at": T0 + timedelta(days=1),
                    "respond_due_at": T0 + timedelta(days=1),
                    "escalation_level": 0,
                    "summary": "",
                    "root_cause": "",
                    "contributing_factors": [],
                    "action_items": [],
                }
            ],
        )
    engine.dispose()


async def plan(url: str, console: Console) -> tuple[PlanDraft, float]:
    """Time the plan of the seeded incident; returns the draft and its seconds."""
    db = Database(url)
    try:
        async with db.read() as session:
            incident = await session.get(Incident, 1)
            assert incident is not None
            with Progress(
                "planning", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as bar:
                task = bar.add_task("plan", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                # Like bench/pricing.py: start from a clean heap (the seeding's garbage is not
                # the planning's cost).
                gc.collect()
                gc.freeze()
                started = time.perf_counter()
                draft = await build_plan(session, incident, RemediationPolicy(), progress=progress)
                seconds = time.perf_counter() - started
        return draft, seconds
    finally:
        await db.dispose()


def _simulator(db_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A simulated payment provider process (no faults) on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    promoguard = str(Path(sys.executable).with_name("promoguard"))
    process = subprocess.Popen(
        [promoguard, "payment-provider", "--port", str(port), "--db", str(db_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).is_success:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError("the simulated payment provider did not start")


async def payouts(
    url: str, draft: PlanDraft, limit: int, tmp: Path, console: Console
) -> tuple[float | None, int]:
    """Store the draft (its first ``limit`` refund items; 0: all), approve it and execute it
    against a simulated provider process; returns payouts per second and how many were paid."""
    refunds = [i for i in draft.items if i.refund > 0]
    if not refunds:
        return None, 0
    chosen = refunds if limit <= 0 else refunds[:limit]
    part = PlanDraft(
        incident_id=draft.incident_id,
        severity=draft.severity,
        policy=draft.policy,
        replacements=draft.replacements,
    )
    for item in chosen:
        part.add(item)
    db = Database(url)
    try:
        async with db.write() as session:
            plan = await plans.save_draft(session, part, actor="bench", now=datetime.now(UTC))
            plan.status = "approved"
            plan_id = plan.id
    finally:
        await db.dispose()
    process, provider_url = _simulator(tmp / "provider.db")
    settings = Settings(database_url=url, payment_provider_url=provider_url, payment_concurrency=64)
    try:
        with Progress(
            "paying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("pay", total=len(chosen))

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            started = time.perf_counter()
            done = await run_plan(
                settings, plan_id, progress=step, payer_options={"concurrency": 64}
            )
            seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=20)
    paid = int(done["payouts"]["succeeded"])
    return (paid / seconds if seconds else None), paid


def main() -> None:
    """Seed, plan, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--database-url", help="an empty database (default: a temporary SQLite)")
    parser.add_argument("--profile", action="store_true", help="cProfile the planning")
    parser.add_argument(
        "--payouts",
        type=int,
        default=5_000,
        help="refunds of the plan to execute against the simulated provider (0: all)",
    )
    args = parser.parse_args()
    _pin_one_core()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        seed(url, args.orders, console)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        draft, seconds = asyncio.run(plan(url, console))
        if profiler is not None:
            profiler.disable()
            stats = pstats.Stats(profiler, stream=None)
            stats.sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(30)
        per_second = len(draft.items) / seconds if seconds else 0.0
        if hasattr(os, "sched_setaffinity"):  # execution: the service and provider share the cores
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        rate, count = asyncio.run(payouts(url, draft, args.payouts, Path(tmp), console))
    print(f"planned {len(draft.items):,} orders in {seconds:.2f} s: {per_second:,.0f} orders/s")
    print(f"  target {TARGET:,} orders/s: {'met' if per_second >= TARGET else 'MISSED'}")
    for klass, total in draft.by_class.items():
        if total.count:
            money = f"refund {total.refund:>14,}  coupons {total.coupons:>12,}"
            print(f"  {klass:<13} {total.count:>8,}  {money}")
    if rate is not None:
        print(f"paid {count:,} refunds against the simulated provider: {rate:,.0f} payouts/s")
    payouts_per_s = None if rate is None else round(rate)
    print(json.dumps({"plan_orders_per_s": round(per_second), "payouts_per_s": payouts_per_s}))


if __name__ == "__main__":
    main()
