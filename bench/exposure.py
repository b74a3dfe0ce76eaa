"""Exposure before the automatic pause: how much money a faulty campaign version gives away, and
for how many orders and seconds, before monitoring pauses it on its own.

The bench runs the service as in the field and breaks it the two ways the issue names:

(a) **a mis-keyed threshold**: 满300减30 (``mj``) has been live; its v2 was meant to be the same
    offer but was keyed 满300减130. Lint gives warnings only (L502: depth up 4.3x, plus the L403
    of every open-ended campaign), which review acknowledges, so it passes review, is approved by
    all three departments and goes live. The ``discount-above-profile`` rule must pause it.
(b) **the member-tier service answering VIP for everyone**: the reference member service is
    told ``tier_override = "platinum"`` (``PUT /v1/faults``), so the member price campaign
    (``vip``: gold 5 %, platinum 12 % off apparel) gives every customer the platinum price. The
    ``tier-mix-shift`` rule must pause ``vip``.

**Set-up.** A database (a SQLite file in a temporary directory by default; ``--database-url
postgresql+psycopg://...`` uses a fresh schema of it, dropped afterwards), migrated, with an admin,
a storefront and one approver key per review department; the reference member service
(``promoguard member-service``) with a tiers file for 4,000 customers (72 % no tier, 12 % silver,
10 % gold, 6 % platinum); two ``promoguard serve`` processes on the database (default settings:
monitoring every 0.05 s, rules refresh 0.5 s; ``PROMOGUARD_MEMBER_TIERS_URL`` pointing at the
member service; ``--redis-url`` adds ``PROMOGUARD_REDIS_URL`` (and a key prefix of the run's
own), so changes are announced on Redis pub/sub and both workers' watches see both workers'
orders (the monitoring signal stream): how the service is meant to run with several workers). A
catalogue of 36 SKUs in three categories is loaded (``PUT /v1/catalogue``).

**Traffic.** An open loop of ``--rate`` (200) orders per second, alternating between the two
workers; each order is a signed ``POST /v1/quotes`` (a random customer, telling its true tier as the
shop would, and a random cart of 1-3 SKUs: about 3 in 4 reach 300 yuan, half hold apparel) and then
a signed ``POST /v1/orders`` of that quote on the same worker. Requests go over the raw asyncio
HTTP/1.1 client of ``bench/http_quotes.py``: httpx costs some 30 times the client CPU per request,
and on a small machine the load generator shares the cores with the service. Admin calls (set-up,
review, activation, polling) use httpx. Each worker has ``--slots`` (16) keep-alive connections, one
order in flight on each; an arrival that finds all of them busy is shed and counted, so a service
slower than the offered rate is not hidden behind a growing client-side queue (which would add
seconds to every figure). The rate actually reached is shown per phase, and for the normal phase
the CPU the two servers used per quote + order and how busy the whole machine was. On the 2-CPU
machine this was written on the servers need about 16 ms of CPU per quote + order, so they reach
some 40-75 orders/s and most of the 200/s offered is shed: the figures are those of a saturated
service at the rate it reached (see the README's HTTP benchmark for the order path's cost).

**Phases.** ``--warmup`` s (3) of orders with no campaign live, so the shop has order history
(the simulations then re-price its last 500 orders, as they would in the field). Then ``mj`` v1
and ``vip`` v1 go live through review (every lint warning acknowledged, three approvals); each
first version's simulation becomes its campaign's expected profile. ``--normal`` s (10) of normal
traffic: no alert may fire. Phase (a): v2 is added and reviewed while the traffic runs, then
activated; the bench polls ``GET /v1/campaigns/mj`` every 20 ms until it is paused (at most
``--timeout`` s), keeps the traffic on ``--tail`` s (1.5) longer so orders a worker still took
with v2 are counted, then rolls ``mj`` back to v1 and runs ``--interlude`` s (3) of normal traffic
(no new alert may fire). Phase (b): the fault is set on the member service, then the same polling
of ``vip``, the same tail; the fault is cleared and the traffic stops.

**What is measured.**

* Affected orders: (a) committed orders with a discount of ``mj`` v2 (from the order responses:
  ``discounts[].rule_version``); (b) committed orders on which ``vip`` gave more than the
  customer's true tier gets (gold customers priced as platinum, silver and no-tier customers
  given a member price at all).
* Exposure, yuan: the sum over the affected orders of the order's ``discount_total`` minus what
  the order would have been discounted as intended: the same cart priced by promoguard's engine
  (in this process) with the intended rules (``mj`` v1 for v2; the customer's true tier) and the
  service's guard (``max_discount_ratio`` 0.9). It is the net money given away: in (b) an order
  the platinum price took under 300 yuan loses its 满300减30, which counts against the excess.
  The same model re-prices every order of the normal phases, and the table shows how many it
  disagrees with (0 expected), as a check of the model. A quote the service marked degraded (the
  tier service did not answer within ``PROMOGUARD_DEPENDENCY_TIMEOUT_MS``: it happens when the
  machine is overloaded) is priced with no tier, by design, and so is its intended price.
* Seconds: from the moment the faulty version became live to the automatic pause, both read from
  the campaign's timeline (server clock, same host): (a) v2's ``campaign.activated`` entry, and
  for (b), which has no timeline entry, the bench's clock just before it sent the fault; to the
  ``campaign.paused`` entry of actor ``monitor`` (its transaction's time). The table also gives
  when the detectors raised the alert that paused it (the ``at`` of its ``alert.fired`` entry:
  the rest, to the pause, is the pause's own write, which on SQLite queues behind the orders'
  writes), and when the bench first saw the campaign paused (polling every 20 ms).
* Where the affected orders went: how many each worker took (each worker's detectors see only
  its own orders); how many were priced (their ``created_at``) by the time of the detection;
  and how many after the pause (by the other worker, until the pause reached it: Redis pub/sub,
  or its next stamp poll).
* The member-tier client does not cache tiers (``members/clients.py``: one call per quote), so
  the fault reaches the next quote. The tier travels in the signed quote token, so an order
  placed from a quote taken before the fault keeps the tier it was quoted with.

Target (the issue): paused within 50 affected orders and 5 s in both, at 200 orders/s.

Usage::

    python bench/exposure.py --redis-url redis://127.0.0.1:6379/15        # recommended
    python bench/exposure.py                                             # stamp polling only
    python bench/exposure.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/15
    python bench/exposure.py --rate 100 --normal 5

The exit status is 1 when a phase did not pause within ``--timeout`` s or an alert about a campaign
fired during normal traffic (alerts about no campaign, such as a route's p99 latency on a loaded
machine, are listed but do not count). The last line printed is one JSON object:
``exposure_a_yuan``, ``orders_a``, ``seconds_a``, ``exposure_b_yuan``, ``orders_b``,
``seconds_b``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from http_quotes import RawClient, RawSlot, own_nonce_file  # bench/ is on sys.path when run
from kill_switch import SECRET, Keys, database, free_port, make_keys
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer
from promoguard.promotions.rules import Rule, parse_rule
from promoguard.security.signing import PromoguardAuth, sign
from promoguard.store import migrate

TARGET_ORDERS = 50
TARGET_SECONDS = 5.0
TIERS = (None, "silver", "gold", "platinum")
TIER_WEIGHTS = (72, 12, 10, 6)
"""The customers' true tiers: most have none, some silver or gold, few platinum."""
CUSTOMERS = 4000
GUARD = Decimal("0.9")
"""The service's ``PROMOGUARD_MAX_DISCOUNT_RATIO`` (its default), for the intended pricing."""
POLL_SECONDS = 0.02

MJ, VIP = "mj", "vip"
INTENDED = {
    "id": MJ,
    "name": "满300减30",
    "kind": "threshold",
    "scope": {"all_items": True},
    "tiers": [{"min_spend": 30000, "discount": 3000}],
}
MISKEYED = {**INTENDED, "tiers": [{"min_spend": 30000, "discount": 13000}]}
"""满300减130 keyed where 满300减30 was meant: warnings only (L502 depth x4.3), so it passes."""
MEMBER = {
    "id": VIP,
    "name": "apparel member price",
    "kind": "member_price",
    "scope": {"categories": ["apparel"]},
    "offers": [{"tier": "gold", "percent": 5}, {"tier": "platinum", "percent": 12}],
}
FAULT_TIER = "platinum"

out = Console(width=250)
err = Console(stderr=True)


# -- the shop ---------------------------------------------------------------------------------


def catalogue() -> dict[str, Any]:
    """36 SKUs: apparel 79-459 yuan, shoes 129-589, home 29-249; cost 40 % of the price."""
    ranges = {"apparel": (7900, 3500), "shoes": (12900, 4200), "home": (2900, 2000)}
    items = []
    for category, (low, step) in ranges.items():
        for n in range(12):
            price = low + step * n
            items.append(
                {"sku": f"{category}-{n}", "category": category, "unit_price": price}
                | {"cost": price * 2 // 5}
            )
    return {"currency": "CNY", "member_tiers": ["silver", "gold", "platinum"], "items": items}


def carts(items: list[dict[str, Any]], rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    """Carts of 1-3 distinct SKUs, mostly one unit each; each a tuple of line dicts."""
    made = []
    for _ in range(count):
        picked = rng.sample(items, rng.choice((1, 1, 2, 2, 3)))
        made.append(
            tuple(
                {
                    "sku": item["sku"],
                    "category": item["category"],
                    "unit_price": item["unit_price"],
                    "quantity": rng.choice((1, 1, 1, 2)),
                }
                for item in picked
            )
        )
    return made


def customers(rng: random.Random) -> list[tuple[str, str | None]]:
    """``(customer id, true tier)``."""
    tiers = rng.choices(TIERS, weights=TIER_WEIGHTS, k=CUSTOMERS)
    return [(f"c-{n:05d}", tier) for n, tier in enumerate(tiers)]


# -- the processes ----------------------------------------------------------------------------


def _wait_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the processes ``pids``, and of the whole machine (busy: all but
    idle and iowait), from ``/proc`` (zeros where there is none)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = machine = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            used += int(fields[11]) + int(fields[12])
    with contextlib.suppress(OSError):
        jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        machine = sum(jiffies) - jiffies[3] - jiffies[4]
    return used / tick, machine / tick


@contextlib.contextmanager
def processes(
    env: dict[str, str], tiers_file: Path, logs: Path, count: int = 2
) -> Iterator[tuple[str, list[str], list[int]]]:
    """The reference member service and ``count`` ``promoguard serve`` processes (each one's
    stderr in ``logs``); yields the member service's URL, the servers' base URLs and their
    process ids."""
    promoguard = str(Path(sys.executable).with_name("promoguard"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PROMOGUARD_")}
    started: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        member = f"http://127.0.0.1:{port}"
        log = logs / "member-service.log"
        command = [promoguard, "member-service", "--port", str(port), "--tiers", str(tiers_file)]
        started.append(
            subprocess.Popen(
                command, env=base_env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
            )
        )
        _wait_up(started[-1], f"{member}/health", log)
        bases = []
        for n in range(count):
            port = free_port()
            log = logs / f"serve-{n}.log"
            started.append(
                subprocess.Popen(
                    [promoguard, "serve", "--port", str(port)],
                    env={**base_env, **env, "PROMOGUARD_MEMBER_TIERS_URL": member},
                    stdout=subprocess.DEVNULL,
                    stderr=log.open("wb"),
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for n, base in enumerate(bases):
            _wait_up(started[n + 1], f"{base}/healthz", logs / f"serve-{n}.log")
        yield member, bases, [process.pid for process in started[1:]]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the traffic ------------------------------------------------------------------------------


@dataclass(slots=True)
class Placed:
    """One arrival: what was asked, and what came of it."""

    worker: int
    customer: int
    cart: int
    sent: float
    """Unix time (``time.time()``, as every time here) the arrival was due and sent."""
    done: float = 0.0
    outcome: str = ""
    """``ok``, ``repriced`` (409 quote_changed), or an error."""
    degraded: bool = False
    created: float = 0.0
    """The order's ``created_at`` (server clock): when its request priced it, before the
    transaction (on SQLite it may then wait for the write lock)."""
    discount_total: int = 0
    discounts: tuple[tuple[str, int, int], ...] = ()
    """``(rule_id, rule_version, amount)``."""


class Traffic:
    """Quote + order arrivals at a fixed rate, alternating between the workers."""

    def __init__(
        self,
        bases: list[str],
        auth: PromoguardAuth,
        shop_carts: list[tuple[Any, ...]],
        people: list[tuple[str, str | None]],
        *,
        rate: float,
        slots: int,
        max_inflight: int,
        seed: int,
    ) -> None:
        self.bases = bases
        self.auth = auth
        self.carts = shop_carts
        self.people = people
        self.interval = 1 / rate
        self.slots = slots
        self.max_inflight = max_inflight
        self.rng = random.Random(seed)
        self.placed: list[Placed] = []
        self.shed = 0
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self._pools: list[asyncio.Queue[RawSlot]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for base in self.bases:
            host, port = base.removeprefix("http://").split(":")
            client = RawClient(host, int(port))
            pool: asyncio.Queue[RawSlot] = asyncio.Queue()
            for _ in range(self.slots):
                pool.put_nowait(await client.slot())
            self._pools.append(pool)
        self._runner = asyncio.create_task(self._arrivals())

    async def stop(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=60)
        for pool in self._pools:
            while not pool.empty():
                pool.get_nowait().close()

    def between(self, start: float, end: float) -> list[Placed]:
        """Arrivals sent in ``[start, end)``."""
        return [p for p in self.placed if start <= p.sent < end]

    async def _arrivals(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        n = 0
        while not self._stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5:  # far behind (the loop stalled): shed, do not burst to catch up
                skipped = int(-delay / self.interval)
                self.shed += skipped
                due += skipped * self.interval
            due += self.interval
            if len(self._inflight) >= self.max_inflight:
                self.shed += 1
                continue
            placed = Placed(
                worker=n % len(self.bases),
                customer=self.rng.randrange(len(self.people)),
                cart=self.rng.randrange(len(self.carts)),
                sent=time.time(),
            )
            n += 1
            self.placed.append(placed)
            task = asyncio.create_task(self._order(placed))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _signed(self, path: str, body: bytes) -> tuple[tuple[str, str], ...]:
        headers = sign(
            key_id=self.auth.key_id, secret=self.auth.secret, method="POST", path=path, body=body
        )
        return tuple(headers.items())

    def _failed(self, placed: Placed, what: str, status: int, body: bytes) -> None:
        placed.outcome = f"{what} HTTP {status}"
        self.errors[placed.outcome] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{placed.outcome}: {body[:300]!r}")

    async def _order(self, placed: Placed) -> None:
        customer, tier = self.people[placed.customer]
        facts: dict[str, Any] = {"id": customer}
        if tier is not None:
            facts["member_tier"] = tier  # the shop's claim: believed only with no tier service
        body = orjson.dumps({"customer": facts, "cart": {"lines": self.carts[placed.cart]}})
        pool = self._pools[placed.worker]
        slot = await pool.get()
        try:
            status, answer = await slot.send("/v1/quotes", body, self._signed("/v1/quotes", body))
            if status != 200:
                self._failed(placed, "quote", status, answer)
                return
            quote = orjson.loads(answer)
            placed.degraded = bool(quote["degraded"])
            body = orjson.dumps({"quote_token": quote["quote_token"]})
            headers = (*self._signed("/v1/orders", body), ("Idempotency-Key", uuid.uuid4().hex))
            status, answer = await slot.send("/v1/orders", body, headers)
            if status == 201:
                order = orjson.loads(answer)
                placed.outcome = "ok"
                placed.created = datetime.fromisoformat(order["created_at"]).timestamp()
                placed.discount_total = order["discount_total"]
                placed.discounts = tuple(
                    (d["rule_id"], d["rule_version"], d["amount"]) for d in order["discounts"]
                )
            elif status == 409 and orjson.loads(answer).get("code") == "quote_changed":
                placed.outcome = "repriced"
            else:
                self._failed(placed, "order", status, answer)
        except Exception as exc:  # a transport failure is counted, the run goes on
            placed.outcome = f"order {exc.__class__.__name__}"
            self.errors[placed.outcome] += 1
        finally:
            placed.done = time.time()
            pool.put_nowait(slot)


# -- the admin side ---------------------------------------------------------------------------


class Admin:
    """Set-up, review and lifecycle moves through worker A (httpx, signed)."""

    def __init__(self, client: httpx.AsyncClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def call(
        self, method: str, path: str, status: int = 200, **kwargs: Any
    ) -> dict[str, Any] | list[Any]:
        response = await self.client.request(method, path, **kwargs)
        if response.status_code != status:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        body: dict[str, Any] | list[Any] = response.json()
        return body

    async def obj(self, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        body = await self.call(method, path, status, **kwargs)
        assert isinstance(body, dict)
        return body

    async def review(self, campaign: str, version: int) -> list[str]:
        """Submit (acknowledging every lint warning) and approve in every department; the
        acknowledged codes."""
        base = f"/v1/campaigns/{campaign}/versions/{version}"
        lint = await self.obj("GET", f"{base}/lint")
        if lint["errors"]:
            raise RuntimeError(f"{campaign} v{version} has lint errors: {lint['findings']}")
        acks = {f["code"]: "bench: reviewed and accepted" for f in lint["findings"]}
        await self.obj("POST", f"{base}/submit", json={"acknowledgements": acks})
        for auth in self.keys.approvers.values():
            await self.obj("POST", f"{base}/approvals", json={"decision": "approve"}, auth=auth)
        return sorted(acks)

    async def go_live(self, spec: dict[str, Any]) -> list[str]:
        await self.obj("POST", "/v1/campaigns", 201, json={"spec": spec})
        acks = await self.review(spec["id"], 1)
        await self.obj("POST", f"/v1/campaigns/{spec['id']}/activate", json={})
        return acks

    async def campaign(self, campaign: str) -> dict[str, Any]:
        return await self.obj("GET", f"/v1/campaigns/{campaign}")

    async def timeline(self, campaign: str) -> list[dict[str, Any]]:
        body = await self.call("GET", f"/v1/campaigns/{campaign}/timeline")
        assert isinstance(body, list)
        return body

    async def alerts(self) -> list[dict[str, Any]]:
        body = await self.call("GET", "/v1/alerts", params={"limit": 1000})
        assert isinstance(body, list)
        return body

    async def last_alert(self) -> int:
        """The id of the newest alert (0: none yet)."""
        body = await self.call("GET", "/v1/alerts", params={"limit": 1})
        assert isinstance(body, list)
        return int(body[0]["id"]) if body else 0

    async def wait_paused(self, campaign: str, timeout: float) -> float | None:
        """Poll until the campaign is paused; when it was first seen so, or None."""
        give_up = time.time() + timeout
        while time.time() < give_up:
            if (await self.campaign(campaign))["status"] == "paused":
                return time.time()
            await asyncio.sleep(POLL_SECONDS)
        return None


def entry_time(timeline: list[dict[str, Any]], action: str, **where: Any) -> float | None:
    """Unix time of the last timeline entry with ``action`` (and ``where`` fields)."""
    found = [
        e
        for e in timeline
        if e["action"] == action and all(e.get(k) == v for k, v in where.items())
    ]
    return datetime.fromisoformat(found[-1]["at"]).timestamp() if found else None


def detected(timeline: list[dict[str, Any]]) -> float | None:
    """When the detectors raised the alert that paused the campaign: its ``at``."""
    for entry in timeline:
        detail = entry["detail"]
        if entry["action"] == "alert.fired" and detail.get("outcome", {}).get("pause") == "paused":
            return float(detail["at"])
    return None


# -- the measurement --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    campaign: str
    start: float = 0.0
    """When the bench sent the move that makes the fault (activation, or the member fault)."""
    end: float = 0.0
    """When the bench stopped watching the phase (``--tail`` s after the pause was seen)."""
    t0: float = 0.0
    """When the fault began: (a) the timeline's ``campaign.activated`` of v2, (b) ``start``."""
    seen: float | None = None
    detected_at: float | None = None
    """Unix time the detectors of the worker that paused raised the alert (``alert.fired``)."""
    paused_at: float | None = None
    """Unix time of the monitor's ``campaign.paused`` entry."""
    alert: str = ""
    acks: list[str] = field(default_factory=list)
    affected: list[Placed] = field(default_factory=list)
    exposure: int = 0

    @property
    def seconds(self) -> float | None:
        return None if self.paused_at is None else self.paused_at - self.t0


class Pricing:
    """The intended price of an order: promoguard's engine, in this process."""

    def __init__(self, people: list[tuple[str, str | None]], shop_carts: list[Any]) -> None:
        self.people = people
        self.carts = [
            Cart(lines=tuple(CartLine.model_validate(line) for line in lines))
            for lines in shop_carts
        ]
        self.policy = PricingPolicy(max_discount_ratio=GUARD)
        self.now = datetime.now(UTC)

    def discounts(self, rules: list[Rule], placed: Placed) -> tuple[int, dict[str, int]]:
        """``(discount_total, {rule_id: amount})`` of the arrival's cart for its customer, at
        the customer's true tier; at none for a degraded quote (the tier service did not answer
        in time: the service then rightly grants no member price)."""
        customer_id, tier = self.people[placed.customer]
        customer = Customer(id=customer_id, member_tier=None if placed.degraded else tier)
        quote = RuleSet(rules, self.policy).quote(self.carts[placed.cart], customer, self.now)
        per_rule: Counter[str] = Counter()
        for discount in quote.discounts:
            per_rule[discount.rule_id] += discount.amount
        return quote.discount_total, dict(per_rule)


def own(placed: Placed, rule_id: str) -> tuple[int, int]:
    """``(version, amount)`` of a campaign's discount on the order (``(0, 0)``: none)."""
    for rule, version, amount in placed.discounts:
        if rule == rule_id:
            return version, amount
    return 0, 0


def rate(placed: list[Placed], seconds: float) -> float:
    return sum(p.outcome == "ok" for p in placed) / seconds if seconds > 0 else 0.0


@dataclass
class Shop:
    """What the traffic is made of."""

    catalogue: dict[str, Any]
    people: list[tuple[str, str | None]]
    """``(customer id, true tier)``."""
    carts: list[tuple[Any, ...]]


async def miskeyed_threshold(admin: Admin, args: argparse.Namespace, a: Phase) -> None:
    """(a): v2 through review while the traffic runs, live, until paused; then v1 back."""
    await admin.obj("POST", f"/v1/campaigns/{MJ}/versions", 201, json={"spec": MISKEYED})
    a.acks = await admin.review(MJ, 2)
    err.print(f"(a) {MJ} v2 (满300减130) live, warnings {a.acks} acknowledged")
    a.start = time.time()
    await admin.obj("POST", f"/v1/campaigns/{MJ}/activate", json={"version": 2})
    a.seen = await admin.wait_paused(MJ, args.timeout)
    await asyncio.sleep(args.tail)
    a.end = time.time()
    timeline = await admin.timeline(MJ)
    a.t0 = entry_time(timeline, "campaign.activated") or 0.0
    a.paused_at = entry_time(timeline, "campaign.paused", actor="monitor")
    a.detected_at = detected(timeline)
    if a.seen is not None:
        await admin.obj("POST", f"/v1/campaigns/{MJ}/rollback", json={"reason": "bench"})


async def vip_for_everyone(
    admin: Admin, member: httpx.AsyncClient, args: argparse.Namespace, b: Phase
) -> None:
    """(b): the member service answers platinum for everyone until ``vip`` is paused."""
    err.print(f"(b) the member-tier service answers {FAULT_TIER!r} for everyone")
    b.start = b.t0 = time.time()
    (await member.put("/v1/faults", json={"tier_override": FAULT_TIER})).raise_for_status()
    b.seen = await admin.wait_paused(VIP, args.timeout)
    await asyncio.sleep(args.tail)
    b.end = time.time()
    (await member.put("/v1/faults", json={})).raise_for_status()
    timeline = await admin.timeline(VIP)
    b.paused_at = entry_time(timeline, "campaign.paused", actor="monitor")
    b.detected_at = detected(timeline)


async def scenario(
    args: argparse.Namespace,
    keys: Keys,
    member_url: str,
    servers: tuple[list[str], list[int]],
    shop: Shop,
) -> tuple[Traffic, dict[str, Phase], dict[str, Any]]:
    """Warm-up, both campaigns live, normal traffic, (a), interlude, (b), with the traffic on
    throughout; returns the traffic, the phases and notes for the report."""
    bases, pids = servers
    traffic = Traffic(
        bases,
        keys.storefront,
        shop.carts,
        shop.people,
        rate=args.rate,
        slots=args.slots,
        max_inflight=args.slots * len(bases),
        seed=args.seed,
    )
    phases = {"a": Phase("a", MJ), "b": Phase("b", VIP)}
    notes: dict[str, Any] = {}
    marks: list[int] = []  # the newest alert id after normal traffic, (a), the interlude
    notes["marks"] = marks
    async with (
        httpx.AsyncClient(base_url=bases[0], auth=keys.admin, timeout=60) as http,
        httpx.AsyncClient(base_url=member_url, timeout=10) as member,
    ):
        admin = Admin(http, keys)
        await admin.obj("PUT", "/v1/catalogue", json=shop.catalogue)
        await traffic.start()
        try:
            err.print(f"warm-up: {args.warmup:g} s of orders with no campaign live")
            await asyncio.sleep(args.warmup)
            notes["acks_v1"] = await admin.go_live(INTENDED) + await admin.go_live(MEMBER)
            await asyncio.sleep(1.0)  # every worker has loaded both (refresh 0.5 s)
            err.print(f"normal: {args.normal:g} s")
            notes["normal"] = (time.time(), time.time() + args.normal)
            before = cpu_seconds(pids)
            await asyncio.sleep(args.normal)
            notes["cpu"] = [b - a for a, b in zip(before, cpu_seconds(pids), strict=True)]
            marks.append(await admin.last_alert())

            await miskeyed_threshold(admin, args, phases["a"])
            marks.append(await admin.last_alert())
            await asyncio.sleep(1.0)  # every worker has v1 back
            err.print(f"interlude: {args.interlude:g} s of normal traffic, {MJ} v1 live again")
            notes["interlude"] = (time.time(), time.time() + args.interlude)
            await asyncio.sleep(args.interlude)
            marks.append(await admin.last_alert())

            await vip_for_everyone(admin, member, args, phases["b"])
            await asyncio.sleep(0.5)  # a late alert of the other worker
            notes["alerts"] = alerts = sorted(await admin.alerts(), key=lambda x: x["id"])
            for phase in phases.values():
                rules = {x["rule"] for x in alerts if x["campaign_id"] == phase.campaign}
                phase.alert = ", ".join(sorted(rules))
        finally:
            await traffic.stop()
    return traffic, phases, notes


def measure(
    traffic: Traffic, phases: dict[str, Phase], notes: dict[str, Any], pricing: Pricing
) -> dict[str, int]:
    """Find the affected orders and their exposure; check the pricing model on normal orders."""
    intended = [parse_rule(INTENDED), parse_rule(MEMBER)]
    a, b = phases["a"], phases["b"]
    for placed in traffic.placed:
        if placed.outcome != "ok":
            continue
        if own(placed, MJ)[0] == 2:
            a.affected.append(placed)
            a.exposure += placed.discount_total - pricing.discounts(intended, placed)[0]
        elif placed.sent >= notes["interlude"][0] and own(placed, VIP)[1] > 0:
            # Orders from the interlude on: mj v1 live again; only the fault prices above the
            # true tier (the interlude's orders are checked against the model below).
            total, per_rule = pricing.discounts(intended, placed)
            if own(placed, VIP)[1] > per_rule.get(VIP, 0):
                b.affected.append(placed)
                b.exposure += placed.discount_total - total
    # Orders sent and priced within a normal span (a slow order may straddle a move).
    checked = [
        p
        for start, end in (notes["normal"], notes["interlude"])
        for p in traffic.between(start, end)
        if p.outcome == "ok" and p.created < end
    ]
    wrong = [p for p in checked if p.discount_total != pricing.discounts(intended, p)[0]]
    for placed in wrong[:3]:
        customer, tier = pricing.people[placed.customer]
        err.print(
            f"the model disagrees: worker {placed.worker}, {customer} ({tier}), sent at "
            f"+{placed.sent - notes['normal'][0]:.3f} s: {placed.discounts} against "
            f"{pricing.discounts(intended, placed)[1]}"
        )
    return {"checked": len(checked), "wrong": len(wrong)}


def classify(notes: dict[str, Any]) -> list[dict[str, Any]]:
    """Tag every alert with the span it fired in; the false alarms: alerts about a campaign
    version during normal traffic (a late alert about ``mj`` v2 just after (a) aside). Alerts
    about no campaign (a route's latency on a loaded machine) are listed, not counted."""
    spans = ("normal", "(a)", "interlude", "(b)")
    false = []
    for alert in notes["alerts"]:
        span = sum(alert["id"] > mark for mark in notes["marks"])
        alert["span"] = spans[span]
        late = (alert["campaign_id"], alert["version"]) == (MJ, 2)
        if span in (0, 2) and alert["campaign_id"] is not None and not late:
            false.append(alert)
    return false


def report(
    args: argparse.Namespace,
    traffic: Traffic,
    phases: dict[str, Phase],
    notes: dict[str, Any],
    model: dict[str, int],
) -> dict[str, Any]:
    backend = "PostgreSQL" if args.database_url else "SQLite"
    signal = "Redis pub/sub" if args.redis_url else "stamp polling (0.5 s)"
    table = Table(
        title=f"exposure before the automatic pause: {backend}, {signal}, 2 workers, "
        f"{args.rate:g} orders/s offered ({platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs)"
    )
    for column in (
        "phase",
        "alert",
        "orders/s",
        "affected orders",
        "per worker",
        "by detection",
        "after the pause",
        "exposure ¥",
        "s to detect",
        "s to pause",
        "s seen",
        "target",
    ):
        table.add_column(column, justify="right")
    normal = traffic.between(*notes["normal"])
    false = notes["false_alarms"]
    table.add_row(
        "normal",
        ", ".join(sorted({x["rule"] for x in false})) or "none",
        f"{rate(normal, args.normal):.0f}",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "no campaign alert: " + ("MISSED" if false else "met"),
    )
    summary: dict[str, Any] = {}
    for key, phase in phases.items():
        label = "(a) 满300减130" if key == "a" else f"(b) tiers -> {FAULT_TIER}"
        window = phase.end - phase.start
        sent = traffic.between(phase.start, phase.end)
        seconds = phase.seconds
        yuan = round(phase.exposure / 100, 2)
        split = Counter(p.worker for p in phase.affected)
        early = sum(p.created <= (phase.detected_at or math.inf) for p in phase.affected)
        late = sum(p.created > (phase.paused_at or math.inf) for p in phase.affected)
        detect = None if phase.detected_at is None else phase.detected_at - phase.t0
        met = seconds is not None and len(phase.affected) <= TARGET_ORDERS
        met = met and seconds is not None and seconds <= TARGET_SECONDS
        table.add_row(
            label,
            phase.alert or "none",
            f"{rate(sent, window):.0f}",
            str(len(phase.affected)),
            " + ".join(str(split[n]) for n in range(len(traffic.bases))),
            str(early),
            str(late),
            f"{yuan:,.2f}",
            "never" if detect is None else f"{detect:.3f}",
            "never" if seconds is None else f"{seconds:.3f}",
            "never" if phase.seen is None else f"{phase.seen - phase.t0:.3f}",
            ("met" if met else "MISSED") + f" (≤ {TARGET_ORDERS}, ≤ {TARGET_SECONDS:g} s)",
        )
        summary |= {
            f"exposure_{key}_yuan": yuan,
            f"orders_{key}": len(phase.affected),
            f"seconds_{key}": None if seconds is None else round(seconds, 3),
        }
    out.print(table)
    done = [p for p in traffic.placed if p.outcome]
    outcomes = Counter(p.outcome for p in done)
    degraded = sum(p.degraded for p in done)
    latency = sorted(p.done - p.sent for p in done if p.outcome == "ok")

    def pct(share: float) -> float:
        return latency[min(len(latency) - 1, int(len(latency) * share))] * 1000 if latency else 0.0

    out.print(
        f"arrivals {len(traffic.placed):,} (shed {traffic.shed:,}); outcomes "
        f"{dict(outcomes)}; degraded quotes {degraded}; quote+order p50 {pct(0.5):.0f} ms, "
        f"p90 {pct(0.9):.0f} ms, p99 {pct(0.99):.0f} ms; "
        f"acknowledged warnings: v1s {notes['acks_v1']}, {MJ} v2 {phases['a'].acks}"
    )
    servers, machine = notes["cpu"]
    orders = sum(p.outcome == "ok" for p in normal)
    out.print(
        f"normal traffic: {orders / args.normal:.0f} orders/s, the two servers used "
        f"{servers / args.normal:.2f} CPUs ({servers * 1000 / max(1, orders):.1f} ms per quote + "
        f"order), the whole machine {machine / args.normal:.2f} of its {os.cpu_count()} CPUs"
    )
    out.print(
        f"intended-price model: {model['wrong']} of {model['checked']} normal orders disagree"
    )
    for alert in notes["alerts"]:
        outcome = alert["outcome"].get("pause", "-")
        out.print(
            f"  alert {alert['id']} in {alert['span']}: {alert['rule']} on {alert['subject']}, "
            f"pause: {outcome}: {alert['message']}"
        )
    for sample in traffic.samples:
        err.print(f"[red]{sample}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="default: SQLite in a temporary directory; PostgreSQL: a new schema"
    )
    parser.add_argument("--redis-url", help="announce changes on Redis pub/sub (recommended)")
    parser.add_argument("--rate", type=float, default=200.0, help="orders per second offered")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of history first")
    parser.add_argument("--normal", type=float, default=10.0, help="seconds of normal traffic")
    parser.add_argument("--interlude", type=float, default=3.0, help="normal seconds before (b)")
    parser.add_argument("--tail", type=float, default=1.5, help="traffic seconds after a pause")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a pause after")
    parser.add_argument(
        "--slots", type=int, default=16, help="connections per worker: its orders in flight"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--logs", help="keep the processes' stderr here (default: discarded)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    shelf = catalogue()
    shop = Shop(shelf, customers(rng), carts(shelf["items"], rng, 3000))
    pricing = Pricing(shop.people, shop.carts)
    env = {"PROMOGUARD_SECRET_KEY": SECRET, "PROMOGUARD_ENVIRONMENT": "test"}
    if args.redis_url:
        env["PROMOGUARD_REDIS_URL"] = args.redis_url
        # A run's own keys: an earlier run's alert claims (held for the rule's cooldown) and
        # signal stream are not this run's.
        env["PROMOGUARD_REDIS_PREFIX"] = f"bench-exposure-{uuid.uuid4().hex[:8]}:"
    with (
        database(args.database_url) as url,
        tempfile.TemporaryDirectory(prefix="promoguard-exposure-") as tmp,
    ):
        migrate.upgrade(url)
        keys = make_keys(url)
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        tiers_file = logs / "tiers.json"
        members = {c: t for c, t in shop.people if t is not None}
        tiers_file.write_text(json.dumps({"tiers": members}))
        server_env = {**env, "PROMOGUARD_DATABASE_URL": url, **own_nonce_file(tmp)}
        with processes(server_env, tiers_file, logs) as (
            member,
            bases,
            pids,
        ):
            traffic, phases, notes = asyncio.run(scenario(args, keys, member, (bases, pids), shop))
    model = measure(traffic, phases, notes, pricing)
    if args.logs:  # each affected order: worker; seconds from t0 to sent, to priced, to answered
        timings = {
            key: {
                "t0": phase.t0,
                "paused_after": phase.seconds,
                "orders": [
                    (p.worker, p.sent - phase.t0, p.created - phase.t0, p.done - phase.t0)
                    for p in phase.affected
                ],
            }
            for key, phase in phases.items()
        }
        (Path(args.logs) / "affected.json").write_text(json.dumps(timings, indent=1))
    notes["false_alarms"] = classify(notes)
    summary = report(args, traffic, phases, notes, model)
    failed = [k for k, p in phases.items() if p.paused_at is None]
    if failed:
        err.print(f"[red]no automatic pause within {args.timeout:g} s in phase(s) {failed}")
    if notes["false_alarms"]:
        err.print("[red]a campaign alert fired during normal traffic")
    print(json.dumps(summary))
    if failed or notes["false_alarms"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
