"""Scale-out: quote throughput of the deployed configuration at 1 and 2 gunicorn workers, and the
concurrency invariants holding across them.

For each worker count (``--workers 1,2``) the bench deploys what docs/scale-out.md describes, on
this machine: a fresh PostgreSQL schema (dropped afterwards) migrated with ``promoguard db
upgrade``, one Redis under a key prefix of its own (deleted afterwards), and ``gunicorn -c
deploy/gunicorn.conf.py`` with that many UvicornWorkers, ``PROMOGUARD_ENVIRONMENT=production``
and the default security (every request signed, nonces in Redis, the default rate limits). Then:

1. seeds through the API (review by three approver keys, activation) the campaigns of
   ``bench/http_quotes.py`` (a store-wide 每满 threshold, ten category thresholds, thirty SKU
   special prices, a member price) plus a flash sale with a stock and a threshold with a money
   budget, whose counters quotes read in Redis;
2. warms up, then drives signed ``POST /v1/quotes`` for ``--duration`` seconds with
   ``--concurrency`` requests in flight (carts of 1-8 lines over 2,000 SKUs, a fifth of the
   picks from promoted SKUs, customers from a pool of 5,000), using http_quotes.py's raw asyncio
   client, with the connections balanced over the workers and the requests signed before the
   clock starts;
3. checks the invariants with a checkout burst: ``--buyers`` customers quote first (every one is
   offered the flash price, or the budgeted discount), then all order at once over the same
   balanced connections; half race for the flash sale (stock: a third of them), half for the
   budget (enough for a third of them). Afterwards orders placed with the flash price never
   exceed the stock, the budget's discounts never exceed the budget (both read from the orders
   in PostgreSQL, the reservations, and the Redis counters), the Redis journal is empty, and a
   burst larger than the stock sold it out exactly. A breach prints the numbers and exits 1.

Reported per worker count: quotes/s, latency, errors, the server's CPU per quote and cores
used, and the load generator's own CPU (this process: cores busy while timed, and its CPU per
quote; signing before the phase is reported apart), PostgreSQL and Redis cores, and what else
kept the machine busy. On a 2-core machine the load generator competes with the workers for
the cores, so 2 workers cannot double 1: the table shows where the CPU went.

Usage::

    python bench/scale.py                          # 1 and 2 workers, 10 s each
    python bench/scale.py --duration 20 --workers 1,2,4
    python bench/scale.py --redis-url redis://127.0.0.1:6379/12 --database-url postgresql+psycopg://...

The last line printed is one JSON object: ``{"quotes_per_s_1": ..., "quotes_per_s_2": ...}``
plus the p99, the CPU figures and the invariant results of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from rich.console import Console
from rich.table import Table

from http_quotes import (  # bench/ is on sys.path when run
    DEFAULT_PG_URL,
    Credentials,
    Item,
    PhaseResult,
    Presigned,
    RawClient,
    RawSlot,
    Server,
    Sku,
    campaign_specs,
    catalogue,
    create_key,
    drive,
    free_port,
    open_slots,
    postgres_schema,
    presign,
    promoguard_env,
    quote_bodies,
    quote_check,
    quote_items,
    seed,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
FLASH = Sku("flash-phone", "cat19", 99900)  # cat19: outside the store-wide threshold
FLASH_PRICE = 49900
BUDGETED = Sku("budget-kettle", "cat19", 19900)
BUDGET_DISCOUNT = 3000

err = Console(stderr=True)


# -- the deployment --------------------------------------------------------------------------


class GunicornServer(Server):
    """``gunicorn -c deploy/gunicorn.conf.py`` in its own process group (the master leads it,
    the workers are its children), measured and stopped as http_quotes.py's server is."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = env | {
            "PROMOGUARD_BIND": f"127.0.0.1:{self.port}",
            "PROMOGUARD_WORKERS": str(workers),
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(gunicorn), "-c", str(CONFIG)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid
        self.stop_signal = signal.SIGTERM


def upgrade(env: dict[str, str]) -> None:
    """``promoguard db upgrade``: once, before any worker starts."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("promoguard")), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promoguard db upgrade failed:\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of this run's own; its keys are deleted afterwards."""
    prefix = f"bench-scale-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        store = redis.Redis.from_url(url)
        try:
            keys = list(store.scan_iter(match=f"{prefix}*"))
            for start in range(0, len(keys), 1000):
                store.delete(*keys[start : start + 1000])
        finally:
            store.close()


def redis_cpu(url: str) -> float:
    """CPU seconds the Redis server has used (``INFO cpu``)."""
    store = redis.Redis.from_url(url)
    try:
        info = store.info("cpu")
    finally:
        store.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def guarded_specs(stock: int, budget: int) -> list[dict[str, Any]]:
    """The flash sale and the budgeted threshold the invariant check races for."""
    now = datetime.now(UTC)
    window = {
        "valid_from": (now - timedelta(days=1)).isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
    }
    return [
        {
            "kind": "flash_sale",
            "id": "flash-phone-sale",
            "name": "秒杀 phone",
            "scope": {"skus": [FLASH.sku]},
            "price": FLASH_PRICE,
            "stock": stock,
            "per_user_limit": 1,
        }
        | window,
        {
            "kind": "threshold",
            "id": "budget-kettle-threshold",
            "name": "满100减30, budgeted",
            "scope": {"skus": [BUDGETED.sku]},
            "tiers": [{"min_spend": 10000, "discount": BUDGET_DISCOUNT}],
            "limits": {"budget": budget},
        }
        | window,
    ]


# -- the invariant check ---------------------------------------------------------------------


@dataclass
class Guarded:
    """What the checkout burst got, and what the store says afterwards."""

    stock: int
    budget: int
    outcomes: Counter[str] = field(default_factory=Counter)
    flash_orders: int = 0
    flash_reserved: int = 0
    flash_counter: int = 0
    budget_spent: int = 0
    budget_reserved: int = 0
    budget_counter: int = 0
    journal: int = 0
    quote_errors: int = 0

    def breaches(self) -> list[str]:
        found = []
        if max(self.flash_orders, self.flash_reserved, self.flash_counter) > self.stock:
            found.append(
                f"flash sale oversold: {self.flash_orders} orders, {self.flash_reserved} "
                f"reserved, counter {self.flash_counter}, stock {self.stock}"
            )
        if self.flash_orders != self.stock:
            found.append(f"flash sale sold {self.flash_orders} of {self.stock} to a larger burst")
        if max(self.budget_spent, self.budget_reserved, self.budget_counter) > self.budget:
            found.append(
                f"budget overspent: {self.budget_spent} given, {self.budget_reserved} reserved, "
                f"counter {self.budget_counter}, budget {self.budget}"
            )
        if not self.flash_orders == self.flash_reserved == self.flash_counter:
            found.append("flash sale: orders, reservations and the Redis counter disagree")
        if not self.budget_spent == self.budget_reserved == self.budget_counter:
            found.append("budget: orders, reservations and the Redis counter disagree")
        if self.journal:
            found.append(f"{self.journal} Redis journal entries left unsettled")
        if self.quote_errors:
            found.append(f"{self.quote_errors} quotes of the burst failed")
        return found


def burst_items(buyers: int, tag: str) -> tuple[list[Item], list[int]]:
    """One quote per buyer (alternately the flash phone and the budgeted kettle), and the total
    each should be quoted."""
    items: list[Item] = []
    expected = []
    for n in range(buyers):
        sku, total = (
            (FLASH, FLASH_PRICE) if n % 2 == 0 else (BUDGETED, BUDGETED.price - BUDGET_DISCOUNT)
        )
        line = {"sku": sku.sku, "category": sku.category, "unit_price": sku.price, "quantity": 1}
        body = {"customer": {"id": f"burst-{tag}-{n}"}, "cart": {"lines": [line]}, "coupons": []}
        items.append(("/v1/quotes", orjson.dumps(body), ()))
        expected.append(total)
    return items, expected


async def _send_all(slots: list[RawSlot], items: list[Item]) -> list[tuple[int, bytes]]:
    """Send every item, one in flight per slot; the answers in the items' order."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(items)
    numbered = iter(enumerate(items))

    async def run(slot: RawSlot) -> None:
        for index, item in numbered:
            try:
                answers[index] = await slot.send(*item)
            except (OSError, ConnectionError) as exc:
                answers[index] = (0, repr(exc).encode())

    await asyncio.gather(*(run(slot) for slot in slots))
    return answers


async def checkout_burst(
    server: Server, credentials: Credentials, args: argparse.Namespace, guarded: Guarded
) -> None:
    """Every buyer quotes, then every buyer orders at once; the outcomes by status and code."""
    client = RawClient("127.0.0.1", server.port)
    slots, _ = await open_slots(client, server, args.concurrency, balance=True)
    assert all(isinstance(s, RawSlot) for s in slots)
    raw_slots = [s for s in slots if isinstance(s, RawSlot)]
    items, expected = burst_items(args.buyers, uuid.uuid4().hex[:6])
    quotes = await _send_all(raw_slots, list(credentials.apply(items)))
    orders: list[Item] = []
    for (status, body), total in zip(quotes, expected, strict=True):
        data = orjson.loads(body) if status == 200 else {}
        if status != 200 or data.get("total") != total:
            guarded.quote_errors += 1
            continue
        token = orjson.dumps({"quote_token": data["quote_token"]})
        orders.append(("/v1/orders", token, (("Idempotency-Key", uuid.uuid4().hex),)))
    for status, body in await _send_all(raw_slots, list(credentials.apply(orders))):
        code = "placed" if status == 201 else orjson.loads(body).get("code") if body else status
        guarded.outcomes[str(code)] += 1
    for slot in raw_slots:
        slot.close()


def read_store(database_url: str, redis_url: str, prefix: str, guarded: Guarded) -> None:
    """The orders, reservations and counters of the two guarded campaigns."""
    plain = database_url.replace("postgresql+psycopg://", "postgresql://")
    held = (
        "SELECT coalesce(sum(amount), 0) FROM reservations WHERE key = %s AND state <> 'released'"
    )
    given = "SELECT count(*), coalesce(sum(amount), 0) FROM order_discounts WHERE rule_id = %s"
    with psycopg.connect(plain) as conn:

        def row(query: str, key: str) -> tuple[Any, ...]:
            found = conn.execute(query, (key,)).fetchone()
            assert found is not None  # aggregates always answer one row
            return tuple(found)

        guarded.flash_orders = int(row(given, "flash-phone-sale")[0])
        guarded.budget_spent = int(row(given, "budget-kettle-threshold")[1])
        guarded.flash_reserved = int(row(held, "stock:flash-phone-sale")[0])
        guarded.budget_reserved = int(row(held, "budget:budget-kettle-threshold")[0])
    store = redis.Redis.from_url(redis_url)
    try:
        guarded.flash_counter = int(store.get(f"{prefix}counter:stock:flash-phone-sale") or 0)
        guarded.budget_counter = int(
            store.get(f"{prefix}counter:budget:budget-kettle-threshold") or 0
        )
        guarded.journal = int(store.hlen(f"{prefix}journal"))
    finally:
        store.close()


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    quotes: PhaseResult | None = None
    redis_cpu: float = 0.0
    guarded: Guarded | None = None
    startup_s: float = 0.0
    failure: str | None = None


async def measure_quotes(
    server: Server,
    credentials: Credentials,
    bodies: list[bytes],
    *,
    stamp: int,
    run: Run,
    args: argparse.Namespace,
) -> None:
    """Warm up, then the timed quote phase with the requests signed before it starts."""
    client = RawClient("127.0.0.1", server.port)
    await asyncio.sleep(1.0)  # every worker has the final rules stamp (announced over Redis)
    warm = PhaseResult("postgresql", "quote warm-up")
    slots, _ = await open_slots(client, server, args.concurrency, balance=True)
    items = credentials.apply(quote_items(bodies))
    await drive(slots, items, duration=args.warmup, result=warm, check=quote_check(stamp, None))
    if warm.error_count:
        raise RuntimeError(f"the warm-up failed: {warm.samples}")
    ahead = int(args.duration * min(args.presign_rate, 2 * warm.rps + 500))
    timed = presign(credentials, quote_items(bodies), ahead)
    result = PhaseResult("postgresql", "quotes")
    if isinstance(timed, Presigned):
        result.presigned, result.sign_us = timed.count, timed.sign_us
    slots, result.connections = await open_slots(client, server, args.concurrency, balance=True)
    before, redis_before = server.cpu_seconds(), redis_cpu(args.redis_url)
    await drive(slots, timed, duration=args.duration, result=result, check=quote_check(stamp, None))
    after = server.cpu_seconds()
    run.redis_cpu = redis_cpu(args.redis_url) - redis_before
    result.server_cpu = after["server"] - before["server"]
    result.postgres_cpu = after["postgres"] - before["postgres"]
    result.machine_cpu = after["machine"] - before["machine"]
    result.worker_split = server.worker_split(before, after)
    result.live_signed = timed.live_signed if isinstance(timed, Presigned) else 0
    run.quotes = result


def run_workers(
    workers: int, args: argparse.Namespace, shop: list[dict[str, Any]], bodies: list[bytes]
) -> Run:
    """Deploy with ``workers`` workers on a fresh schema and prefix, seed ``shop`` and the
    guarded campaigns, measure the quotes, check the invariants, tear down."""
    run = Run(workers)
    stock = args.buyers // 3
    budget = BUDGET_DISCOUNT * (args.buyers // 3)
    specs = shop + guarded_specs(stock, budget)
    with (
        postgres_schema(args.database_url) as url,
        redis_prefix(args.redis_url) as prefix,
        tempfile.TemporaryDirectory(prefix="promoguard-bench-scale-") as tmp,
    ):
        extra = {"PROMOGUARD_REDIS_URL": args.redis_url, "PROMOGUARD_REDIS_PREFIX": prefix}
        env = promoguard_env(url, "signed", extra) | {"TMPDIR": tmp}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the hooks make one per server
        upgrade(env)
        operator, storefront = (
            create_key(url, "operator", extra),
            create_key(url, "storefront", extra),
        )
        approvers = [
            create_key(url, "approver", extra, "--department", department)
            for department in ("marketing", "engineering", "product")
        ]
        server = GunicornServer(env, workers, Path(tmp) / "gunicorn.log")
        try:
            run.startup_s = server.wait_ready()
            err.print(
                f"{workers} worker(s): gunicorn on {server.base}, ready in {run.startup_s:.1f} s"
            )
            stamp = seed(server.base, specs, operator, approvers)
            err.print(f"  seeded {stamp} live campaigns through the API")
            credentials = Credentials(storefront, "signed")
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(
                    measure_quotes(server, credentials, bodies, stamp=stamp, run=run, args=args)
                )
                run.guarded = Guarded(stock, budget)
                loop.run_until_complete(checkout_burst(server, credentials, args, run.guarded))
            finally:
                loop.close()
            read_store(url, args.redis_url, prefix, run.guarded)
        except Exception as exc:
            run.failure = f"{exc.__class__.__name__}: {exc}\n{server.tail(25)}"
        finally:
            server.stop()
            if server.tracebacks():
                err.print(f"[yellow]the server logged tracebacks:[/]\n{server.tail(40)}")
    return run


# -- the report ------------------------------------------------------------------------------


def report(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    cpus = os.cpu_count()
    table = Table(
        title=f"promoguard scale-out: gunicorn + UvicornWorker on PostgreSQL and Redis, signed "
        f"quotes, {args.concurrency} in flight, {args.duration:g} s, {cpus} CPUs "
        f"({platform.python_implementation()} {platform.python_version()})",
        caption="server / load gen / postgres / redis / other: CPU cores busy while timed (of "
        f"{cpus}). load gen = this process (the raw asyncio client; signing done before the "
        "phase is 'sign µs'). conns / split: connections and CPU share per worker. invariants: "
        "flash sale sold / stock, budget given / budget (fen), after a checkout burst of "
        f"{args.buyers} buyers.",
    )
    for column in (
        "workers",
        "quotes/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server ms/quote",
        "server",
        "load gen",
        "load gen ms/quote",
        "sign µs",
        "postgres",
        "redis",
        "other",
        "conns",
        "split %",
        "flash sold",
        "budget given",
        "invariants",
    ):
        table.add_column(column, justify="right")
    summary: dict[str, Any] = {}
    for run in runs:
        q, g = run.quotes, run.guarded
        if q is None or not q.elapsed:
            table.add_row(str(run.workers), *(["-"] * 16), "[red]failed[/]")
            summary[f"failure_{run.workers}"] = run.failure
            continue
        breaches = g.breaches() if g is not None else ["not checked"]
        table.add_row(
            str(run.workers),
            f"{q.rps:,.0f}",
            f"{q.percentile_ms(0.50):.1f}",
            f"{q.percentile_ms(0.99):.1f}",
            f"[red]{q.error_count}[/]" if q.error_count else "0",
            f"{q.server_ms_per_request:.2f}",
            f"{q.server_cpu / q.elapsed:.2f}",
            f"{q.client_cpu / q.elapsed:.2f}",
            f"{q.client_ms_per_request:.3f}",
            f"{q.sign_us:.0f}",
            f"{max(0.0, q.postgres_cpu) / q.elapsed:.2f}",
            f"{run.redis_cpu / q.elapsed:.2f}",
            f"{max(0.0, q.other_cpu - run.redis_cpu) / q.elapsed:.2f}",
            "/".join(map(str, q.connections)) or "-",
            "/".join(f"{s:.0%}".rstrip("%") for s in q.worker_split) or "-",
            f"{g.flash_orders}/{g.stock}" if g else "-",
            f"{g.budget_spent}/{g.budget}" if g else "-",
            "[green]held[/]" if not breaches else "[red]BROKEN[/]",
        )
        n = run.workers
        summary |= {
            f"quotes_per_s_{n}": round(q.rps, 1),
            f"quotes_p99_ms_{n}": round(q.percentile_ms(0.99), 2),
            f"quotes_errors_{n}": q.error_count,
            f"server_cpu_ms_per_quote_{n}": round(q.server_ms_per_request, 3),
            f"load_generator_cores_{n}": round(q.client_cpu / q.elapsed, 2),
            f"load_generator_cpu_ms_per_quote_{n}": round(q.client_ms_per_request, 4),
            f"invariants_held_{n}": not breaches,
            f"burst_outcomes_{n}": dict(g.outcomes) if g else None,
        }
        if breaches:
            summary[f"breaches_{n}"] = breaches
        if run.failure:
            summary[f"failure_{n}"] = run.failure
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    for run in runs:
        if run.guarded is not None:
            err.print(f"{run.workers} worker(s), checkout burst: {dict(run.guarded.outcomes)}")
            for breach in run.guarded.breaches():
                err.print(f"[red]{run.workers} worker(s): {breach}[/]")
        if run.failure:
            err.print(f"[red]{run.workers} worker(s) failed:[/] {run.failure}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, in order")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of timed quotes")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of quotes first")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--buyers", type=int, default=300, help="customers in the checkout burst")
    parser.add_argument("--presign-rate", type=float, default=5000.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=DEFAULT_PG_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    rng = random.Random(args.seed)
    items = catalogue(rng)
    shop = campaign_specs(items, rng)
    # The guarded SKUs are promoted too: some quotes read their counters in Redis.
    bodies = quote_bodies([*items, FLASH, BUDGETED], shop + guarded_specs(1, 1), rng)
    runs = [run_workers(workers, args, shop, bodies) for workers in counts]
    summary = report(runs, args)
    print(json.dumps(summary, ensure_ascii=False))
    if any(r.failure or r.guarded is None or r.guarded.breaches() for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
