"""``promoguard demo``: a Singles' Day (双11) that goes wrong and is put right, end to end.

Everything runs on this machine with the embedded defaults (SQLite files in a work directory, no
servers to install): the service (``promoguard serve``), the queue worker (``promoguard
worker``), the reference member-tier service and the simulated payment provider, each a real
process. The demo then drives simulated customers through the signed HTTP API:

1. the bundled 双11 catalogue and campaigns (thresholds, coupons, a flash sale, member prices,
   group-buy, first order, …) go live through lint, review by three departments and activation;
   the member-price campaign starts as a 1 % canary;
2. a mis-keyed 满50减200 is stopped by lint (``422 lint_errors``, L101);
3. normal traffic: customers claim coupons, quote, order and pay;
4. a bot hammers the coupon endpoint: rate-limited (``429``) and refused; an unsigned call is
   ``401``;
5. the flash sale: three times as many customers as phones race for them; it sells out exactly;
6. the member-tier service starts answering "platinum" for everyone: the canary's customers get
   VIP prices, the tier-mix detector trips, the campaign pauses itself, a P1 incident opens;
7. the incident is acknowledged, the remediation plan drafted, approved by another person and
   executed by the queue worker (the shop's policy for this sale cancels unshipped orders priced
   wrongly, refunds what was paid and gives a compensation coupon); some customers apply on
   their own; the post-mortem is written.

At the end a summary, the post-mortem files and the service's URL (the API, its docs at
``/docs``, and the dashboard at ``/ui`` when it is built in). ``--seed`` makes a run repeatable;
``--fast`` is a smaller sale that finishes in about a minute; ``--exit`` stops the service
instead of leaving it running for exploration. The last line printed is the summary as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promoguard.money import format_minor
from promoguard.promotions.rollout import in_rollout
from promoguard.security.signing import PromoguardAuth

__all__ = ["Demo", "DemoResult", "run_demo"]

DEPARTMENTS = ("marketing", "engineering", "product")
VIP = "d11-member-electronics"
FLASH = "d11-phone-flash"
TIERS = (("platinum", 6), ("gold", 10), ("silver", 12))
"""Share of customers per member tier, percent (the rest have none)."""


@dataclass
class DemoResult:
    """What the sale did, for the summary."""

    campaigns_live: int = 0
    lint_stopped: list[str] = field(default_factory=list)
    orders: int = 0
    discount_given: int = 0
    bot_claims: Counter[int] = field(default_factory=Counter)
    unsigned_status: int = 0
    flash_stock: int = 0
    flash_sold: int = 0
    flash_refused: int = 0
    paused_by: str = ""
    seconds_to_pause: float | None = None
    incident: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    claims: Counter[str] = field(default_factory=Counter)
    postmortem: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        impact = self.incident.get("impact", {})
        progress = self.plan.get("progress", {})
        return {
            "campaigns_live": self.campaigns_live,
            "lint_stopped": self.lint_stopped,
            "orders": self.orders,
            "bot_claims": {str(k): v for k, v in sorted(self.bot_claims.items())},
            "unsigned_status": self.unsigned_status,
            "flash_stock": self.flash_stock,
            "flash_sold": self.flash_sold,
            "paused_by": self.paused_by,
            "seconds_to_pause": self.seconds_to_pause,
            "incident_id": self.incident.get("id"),
            "incident_severity": self.incident.get("severity"),
            "affected_orders": impact.get("orders_affected", 0),
            "given_away_before_pause": impact.get("beyond_intent", 0),
            "plan_status": self.plan.get("status"),
            "refunds_paid": progress.get("paid", 0),
            "compensation_coupons": self.plan.get("summary", {})
            .get("by_action", {})
            .get("cancel_with_coupon", {})
            .get("coupons", 0),
            "claims": dict(sorted(self.claims.items())),
            "postmortem": self.postmortem,
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _shift(spec: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The bundled campaign, its window moved to today's sale."""
    spec = dict(spec)
    spec["valid_from"] = (now - timedelta(hours=1)).isoformat()
    spec["valid_until"] = (now + timedelta(days=3)).isoformat()
    return spec


@dataclass
class Demo:
    """One run: its options, its processes and its clients."""

    seed: int = 11
    fast: bool = False
    port: int = 8000
    workdir: Path = Path("promoguard-demo")
    console: Console = field(default_factory=Console)
    result: DemoResult = field(default_factory=DemoResult)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.customers = 400 if self.fast else 2500
        self.flash_stock = 20 if self.fast else 100
        if not _port_free(self.port):
            taken, self.port = self.port, _free_port()
            self.console.print(f"port {taken} is in use: the service takes {self.port} instead")
        self.base = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(24)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.placed: list[tuple[str, str]] = []
        """Every order placed: (order id, customer)."""

    # -- set-up -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("PROMOGUARD_")}
        return {
            **keep,
            "PROMOGUARD_DATABASE_URL": f"sqlite:///{self.workdir / 'promoguard.db'}",
            "PROMOGUARD_SECRET_KEY": self.secret,
            "PROMOGUARD_QUEUE_PATH": str(self.workdir / "queue.db"),
            # This sale's policy: an unshipped order priced wrongly in the shop's disfavour is
            # cancelled, its payment refunded, and the customer compensated with a coupon.
            "PROMOGUARD_REMEDIATION_POLICY": json.dumps(
                {"P1": {"undercharged": "cancel_unshipped"}}
            ),
        }

    def _start(self, name: str, args: list[str], health: str, env: dict[str, str]) -> None:
        promoguard = str(Path(sys.executable).with_name("promoguard"))
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [promoguard, *args], env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        self.processes.append(process)
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.workdir / f'{name}.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if health and httpx.get(health, timeout=1).is_success:
                    return
            if not health:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer at {health}")

    def _keys(self, env: dict[str, str]) -> None:
        from promoguard.security.keys import Role, create_key  # noqa: PLC0415
        from promoguard.store import migrate  # noqa: PLC0415
        from promoguard.store.db import Database  # noqa: PLC0415

        url = env["PROMOGUARD_DATABASE_URL"]
        migrate.upgrade(url)

        async def make() -> dict[str, tuple[str, str]]:
            db = Database(url)
            keys: dict[str, tuple[str, str]] = {}
            wanted = [
                ("admin", Role.ADMIN, None, "ops-lead"),
                ("storefront", Role.STOREFRONT, None, "shop"),
                ("operator", Role.OPERATOR, None, "on-call"),
                *((d, Role.APPROVER, d, f"{d}-lead") for d in DEPARTMENTS),
            ]
            try:
                async with db.write() as session:
                    for name, role, department, owner in wanted:
                        key, secret = await create_key(
                            session,
                            master=self.secret,
                            role=role,
                            created_by="demo",
                            department=department,
                            owner=owner,
                            label=f"demo {name}",
                        )
                        keys[name] = (key.id, secret)
            finally:
                await db.dispose()
            return keys

        self.keys = asyncio.run(make())

    def _tiers(self) -> Path:
        tiers: dict[str, str] = {}
        for n in range(self.customers * 2):
            roll = self.rng.randrange(100)
            bound = 0
            for tier, share in TIERS:
                bound += share
                if roll < bound:
                    tiers[f"c{n:05d}"] = tier
                    break
        path = self.workdir / "tiers.json"
        path.write_text(json.dumps({"tiers": tiers}))
        self.tiers = tiers
        return path

    def start(self) -> None:
        """Migrate, make keys, start the four processes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("promoguard.db", "queue.db", "provider.db"):
            for suffix in ("", "-wal", "-shm"):
                (self.workdir / f"{stale}{suffix}").unlink(missing_ok=True)
        env = self._env()
        self._keys(env)
        member_port, provider_port = _free_port(), _free_port()
        member, provider = f"http://127.0.0.1:{member_port}", f"http://127.0.0.1:{provider_port}"
        self.member = member
        self._start(
            "member-service",
            ["member-service", "--port", str(member_port), "--tiers", str(self._tiers())],
            f"{member}/health",
            env,
        )
        self._start(
            "payment-provider",
            [
                "payment-provider",
                "--port",
                str(provider_port),
                "--db",
                str(self.workdir / "provider.db"),
            ],
            f"{provider}/health",
            env,
        )
        env = {
            **env,
            "PROMOGUARD_MEMBER_TIERS_URL": member,
            "PROMOGUARD_PAYMENT_PROVIDER_URL": provider,
        }
        self.env = env
        self._start("serve", ["serve", "--port", str(self.port)], f"{self.base}/healthz", env)
        self._start("worker", ["worker", "--workers", "2"], "", env)

    def stop(self) -> None:
        """Stop every process the demo started."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- helpers ------------------------------------------------------------------------------

    def auth(self, name: str) -> PromoguardAuth:
        key_id, secret = self.keys[name]
        return PromoguardAuth(key_id, secret)

    async def call(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200, 201, 202),
        **kwargs: Any,
    ) -> Any:
        response = await client.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    async def go_live(
        self, admin: httpx.AsyncClient, spec: dict[str, Any], rollout: str | None = None
    ) -> None:
        """Create, lint, submit (every warning acknowledged), approve in every department and
        activate a campaign."""
        created = await self.call(admin, "POST", "/v1/campaigns", json={"spec": spec})
        version = created.get("latest_version", 1)
        base = f"/v1/campaigns/{spec['id']}/versions/{version}"
        lint = await self.call(admin, "GET", f"{base}/lint")
        acks = {f["code"]: "demo: reviewed for the 双11 sale" for f in lint["findings"]}
        await self.call(admin, "POST", f"{base}/submit", json={"acknowledgements": acks})
        for department in DEPARTMENTS:
            await self.call(
                admin,
                "POST",
                f"{base}/approvals",
                json={"decision": "approve", "reason": "ok for 双11"},
                auth=self.auth(department),
            )
        body: dict[str, Any] = {}
        if rollout is not None:
            body["rollout_percent"] = rollout
        await self.call(admin, "POST", f"/v1/campaigns/{spec['id']}/activate", json=body)
        self.result.campaigns_live += 1

    def cart(self, *, category: str | None = None) -> list[dict[str, Any]]:
        items = [
            i
            for i in self.catalogue["items"]
            if i["category"] != "gift-card"
            and i["sku"] != "phone-x"
            and (category is None or i["category"] == category)
        ]
        chosen = self.rng.sample(items, k=min(len(items), self.rng.randint(1, 3)))
        return [
            {
                "sku": i["sku"],
                "category": i["category"],
                "tags": i.get("tags", []),
                "unit_price": i["unit_price"],
                "quantity": self.rng.randint(1, 2),
            }
            for i in chosen
        ]

    async def buy(
        self, shop: httpx.AsyncClient, customer: str, lines: list[dict[str, Any]], key: str
    ) -> dict[str, Any] | None:
        """Quote, order and pay; None when the order was refused (sold out, price changed)."""
        facts: dict[str, Any] = {"id": customer}
        if customer in self.tiers:  # the shop tells the tier it knows (checked when it matters)
            facts["member_tier"] = self.tiers[customer]
        quoted = await shop.post("/v1/quotes", json={"customer": facts, "cart": {"lines": lines}})
        if quoted.status_code != 200:
            return None
        placed = await shop.post(
            "/v1/orders",
            json={"quote_token": quoted.json()["quote_token"]},
            headers={"Idempotency-Key": key},
        )
        if placed.status_code != 201:
            return None
        order: dict[str, Any] = placed.json()
        await shop.post(f"/v1/orders/{order['id']}/events", json={"type": "paid"})
        self.result.orders += 1
        self.result.discount_given += order["discount_total"]
        self.placed.append((order["id"], customer))
        return order

    async def crowd(self, jobs: list[Any], label: str, limit: int = 12) -> list[Any]:
        """Run coroutine factories ``limit`` at a time under a progress bar."""
        gate = asyncio.Semaphore(limit)
        with Progress(
            TextColumn(f"  {label:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(label, total=len(jobs))

            async def one(job: Any) -> Any:
                async with gate:
                    try:
                        return await job()
                    finally:
                        bar.advance(task)

            return await asyncio.gather(*(one(job) for job in jobs))

    def say(self, text: str) -> None:
        self.console.print(text)

    # -- the sale -----------------------------------------------------------------------------

    async def sale(self) -> None:  # noqa: PLR0915 (the story, step by step)
        now = datetime.now(UTC)
        limits = httpx.Limits(max_connections=32)
        async with (
            httpx.AsyncClient(base_url=self.base, auth=self.auth("admin"), timeout=60) as admin,
            httpx.AsyncClient(
                base_url=self.base, auth=self.auth("storefront"), timeout=60, limits=limits
            ) as shop,
        ):
            # 1. Catalogue and campaigns.
            self.catalogue = json.loads(
                resources.files("promoguard.examples").joinpath("catalogue.json").read_text()
            )
            await self.call(admin, "PUT", "/v1/catalogue", json=self.catalogue)
            bundled = json.loads(
                resources.files("promoguard.examples").joinpath("campaigns.json").read_text()
            )
            self.say("[bold]1.[/] 双11 campaigns go live through lint and three approvals")
            later = [s for s in bundled if s["id"] in (VIP, FLASH)]
            for spec in bundled:
                if spec["id"] not in (VIP, FLASH):
                    await self.go_live(admin, _shift(spec, now))
            self.say(f"   {self.result.campaigns_live} campaigns live")

            # 2. Lint stops the mis-keyed 满50减200.
            oops = {
                "id": "d11-oops",
                "kind": "threshold",
                "name": "满50减200 (meant 满500减20)",
                "scope": {"all_items": True},
                "tiers": [{"min_spend": 5000, "discount": 20000}],
                **_shift({}, now),
            }
            await self.call(admin, "POST", "/v1/campaigns", json={"spec": oops})
            refused = await admin.post(
                "/v1/campaigns/d11-oops/versions/1/submit", json={"acknowledgements": {}}
            )
            codes = sorted(
                {f["code"] for f in refused.json().get("findings", []) if f["severity"] == "error"}
            )
            self.result.lint_stopped = codes
            self.say(
                f"[bold]2.[/] 满50减200 refused at submission: {refused.status_code} "
                f"{refused.json().get('code')} ({', '.join(codes)})"
            )

            # 3. Normal traffic (its orders are the history the member-price canary is judged by).
            people = [f"c{n:05d}" for n in range(self.customers)]
            self.say(f"[bold]3.[/] {len(people)} customers shop")

            def shopper(n: int, who: str) -> Any:
                async def go() -> None:
                    if n % 3 == 0:
                        await shop.post(
                            "/v1/coupons/d11-coupon-welcome/claims", json={"customer_id": who}
                        )
                    await self.buy(shop, who, self.cart(), f"normal-{n}")

                return go

            await self.crowd([shopper(n, who) for n, who in enumerate(people)], "quote, order, pay")

            # 4. A bot on the coupon endpoint; an unsigned call.
            bot = [
                (lambda: shop.post("/v1/coupons/d11-coupon-1000-100/claims",
                                   json={"customer_id": "bot-7"}))
                for _ in range(40)
            ]  # fmt: skip
            answers = await self.crowd(bot, "a bot claims coupons", limit=8)
            self.result.bot_claims = Counter(a.status_code for a in answers)
            unsigned = await shop.post(
                "/v1/coupons/d11-coupon-1000-100/claims",
                json={"customer_id": "bot-7"},
                auth=httpx.BasicAuth("", ""),
            )
            self.result.unsigned_status = unsigned.status_code
            self.say(
                f"[bold]4.[/] bot: {dict(self.result.bot_claims)} by status; "
                f"an unsigned call: {unsigned.status_code}"
            )

            # 5. The flash sale: three customers for each phone.
            flash = {
                **_shift(next(s for s in later if s["id"] == FLASH), now),
                "stock": self.flash_stock,
            }
            await self.go_live(admin, flash)
            self.result.flash_stock = self.flash_stock
            phone = next(i for i in self.catalogue["items"] if i["sku"] == "phone-x")
            line = [
                {
                    "sku": "phone-x",
                    "category": phone["category"],
                    "unit_price": phone["unit_price"],
                    "quantity": 1,
                }
            ]

            def racer(n: int) -> Any:
                async def go() -> bool:
                    order = await self.buy(shop, f"c{n:05d}", line, f"flash-{n}")
                    return bool(order and any(d["rule_id"] == FLASH for d in order["discounts"]))

                return go

            wins = await self.crowd(
                [racer(n) for n in range(3 * self.flash_stock)], "flash sale race", limit=24
            )
            self.result.flash_sold = sum(wins)
            self.say(
                f"[bold]5.[/] flash sale: {self.result.flash_sold} of {self.flash_stock} phones "
                f"sold to {3 * self.flash_stock} customers racing"
            )

            # 6. The member-price canary, then the member-tier service goes wrong.
            vip = next(s for s in later if s["id"] == VIP)
            await self.go_live(admin, _shift(vip, now), rollout="1")
            ordinary = [f"c{n:05d}" for n in range(2 * self.customers)]
            canary = await self._canary(admin, [c for c in ordinary if c not in self.tiers])
            self.say(
                f"[bold]6.[/] member prices live for a 1 % canary ({len(canary)} customers); "
                "the member-tier service starts answering 'platinum' for everyone"
            )
            httpx.put(
                f"{self.member}/v1/faults", json={"tier_override": "platinum"}
            ).raise_for_status()
            started = time.time()
            paused = await self._until_paused(admin, shop, canary)
            httpx.put(f"{self.member}/v1/faults", json={}).raise_for_status()
            self.result.seconds_to_pause = None if paused is None else round(paused - started, 2)
            alerts = await self.call(admin, "GET", "/v1/alerts", params={"campaign_id": VIP})
            self.result.paused_by = next(
                (a["rule"] for a in alerts if a["outcome"].get("pause") == "paused"), ""
            )
            self.say(
                f"   paused by [bold]{self.result.paused_by or '(nothing)'}[/] "
                f"after {self.result.seconds_to_pause} s"
            )

            # 7. The incident, the plan, the payouts, the claims, the post-mortem.
            await self._clean_up(admin, shop)

    async def _canary(self, admin: httpx.AsyncClient, pool: list[str]) -> list[str]:
        """Customers in the member-price canary (the ones a quote gives its rollout bucket)."""
        campaign = await self.call(admin, "GET", f"/v1/campaigns/{VIP}")
        return [c for c in pool if in_rollout(VIP, c, campaign["rollout_bps"])]

    async def _until_paused(
        self, admin: httpx.AsyncClient, shop: httpx.AsyncClient, canary: list[str]
    ) -> float | None:
        """Canary customers buy electronics until the campaign is paused (or 60 s pass)."""
        give_up = time.time() + 60
        n = 0
        while time.time() < give_up:
            batch = canary[n % len(canary) :][:8] if canary else []
            await asyncio.gather(
                *(
                    self.buy(shop, who, self.cart(category="electronics"), f"vip-{n}-{i}")
                    for i, who in enumerate(batch)
                )
            )
            n += len(batch) or 1
            status = (await self.call(admin, "GET", f"/v1/campaigns/{VIP}"))["status"]
            if status == "paused":
                return time.time()
        return None

    async def _clean_up(self, admin: httpx.AsyncClient, shop: httpx.AsyncClient) -> None:
        incidents = await self.call(admin, "GET", "/v1/incidents")
        incident = next((i for i in incidents if [VIP, 1] in i["versions"]), None)
        if incident is None:
            self.say("[red]   no incident was opened[/]")
            return
        number = incident["id"]
        await self.call(
            admin,
            "POST",
            f"/v1/incidents/{number}/acknowledge",
            json={"message": "on it"},
            auth=self.auth("operator"),
        )
        await self.call(
            admin,
            "POST",
            f"/v1/incidents/{number}/notes",
            json={
                "kind": "update",
                "message": "Member prices were given to some customers by mistake; "
                "we are correcting the affected orders.",
            },
        )
        self.say(
            f"[bold]7.[/] incident {number} [bold]{incident['severity']}[/] opened by the alert; "
            "acknowledged"
        )
        plan = await self.call(admin, "POST", f"/v1/incidents/{number}/plans")
        self.say(
            f"   plan {plan['id']}: {plan['items_total']} items, "
            f"¥{format_minor(plan['refund_total'])} to refund (the policy cancels unshipped "
            "orders priced in the shop's disfavour, refunds them and adds a coupon)"
        )
        await self.call(
            admin,
            "POST",
            f"/v1/plans/{plan['id']}/decision",
            json={"decision": "approve", "reason": "policy for 双11"},
            auth=self.auth("marketing"),
        )
        await self.call(admin, "POST", f"/v1/plans/{plan['id']}/execute")
        with Progress(
            TextColumn("  remediation payouts                 "),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task("pay", total=plan["items_total"] or 1)
            for _ in range(1200):
                plan = await self.call(admin, "GET", f"/v1/plans/{plan['id']}")
                left = plan["progress"]["items"]["planned"]
                bar.update(task, completed=plan["items_total"] - left)
                if plan["status"] == "done":
                    break
                await asyncio.sleep(0.25)
        self.result.plan = plan
        self.say(
            f"   plan {plan['status']}: ¥{format_minor(plan['progress']['paid'])} refunded, "
            f"{plan['progress']['items']['done']} items done"
        )
        await self._claims(admin, shop, plan)
        await self.call(
            admin,
            "PUT",
            f"/v1/incidents/{number}/postmortem",
            json={
                "summary": "The member-tier service mapped every customer to platinum; the "
                "member-price canary priced them as VIP until the tier-mix detector paused it.",
                "root_cause": "A member-tier service release answered 'platinum' for every "
                "customer id.",
                "contributing_factors": [
                    "Prices trusted the member-tier service without a sanity check of the mix",
                ],
                "action_items": [
                    {"what": "Contract test of the tier service's mapping", "owner": "member-team"},
                    {"what": "Canary the tier service itself", "owner": "platform"},
                ],
            },
        )
        for status in ("mitigated", "resolved"):
            await self.call(
                admin, "POST", f"/v1/incidents/{number}/status", json={"status": status}
            )
        report = await admin.get(f"/v1/incidents/{number}/report")
        html = await admin.get(f"/v1/incidents/{number}/report", params={"format": "html"})
        (self.workdir / "postmortem.md").write_text(report.text, encoding="utf-8")
        (self.workdir / "postmortem.html").write_text(html.text, encoding="utf-8")
        self.result.postmortem = str(self.workdir / "postmortem.md")
        self.result.incident = await self.call(admin, "GET", f"/v1/incidents/{number}")
        self.say(f"   post-mortem written: {self.result.postmortem}")

    async def _claims(
        self, admin: httpx.AsyncClient, shop: httpx.AsyncClient, plan: dict[str, Any]
    ) -> None:
        items = await self.call(admin, "GET", f"/v1/plans/{plan['id']}/items")
        affected = [(i["order_id"], i["customer_id"]) for i in items if i["order_id"]][:3]
        touched = {order for order, _ in affected}
        others = [o for o in self.placed if o[0] not in touched][:2]
        for order_id, customer in [*affected, *others]:
            answer = await shop.post(
                "/v1/claims",
                json={
                    "order_id": order_id,
                    "customer_id": customer,
                    "reason": "price_wrong",
                    "message": "我的订单价格好像不对",
                    "locale": "zh",
                },
            )
            status = answer.json().get("status", str(answer.status_code))
            self.result.claims[status] += 1
        self.say(f"   customers' own claims: {dict(self.result.claims)}")

    def summary(self) -> None:
        """Print the summary table."""
        r = self.result.as_dict()
        table = Table(title="双11 demo: what happened", show_header=False)
        rows = [
            ("campaigns live", r["campaigns_live"]),
            ("stopped by lint", ", ".join(r["lint_stopped"]) or "-"),
            ("orders", r["orders"]),
            (
                "bot coupon claims by status",
                ", ".join(f"{n} × {s}" for s, n in r["bot_claims"].items()),
            ),
            ("unsigned request", r["unsigned_status"]),
            ("flash sale", f"{r['flash_sold']} of {r['flash_stock']} sold"),
            ("auto-pause", f"{r['paused_by']} after {r['seconds_to_pause']} s"),
            ("incident", f"{r['incident_id']} ({r['incident_severity']})"),
            ("affected orders", r["affected_orders"]),
            ("given away before the pause", f"¥{format_minor(r['given_away_before_pause'])}"),
            ("refunds paid (cancelled orders)", f"¥{format_minor(r['refunds_paid'])}"),
            ("compensation coupons", f"¥{format_minor(r['compensation_coupons'])}"),
            ("customers' claims", ", ".join(f"{n} {s}" for s, n in r["claims"].items()) or "-"),
            ("post-mortem", r["postmortem"]),
        ]
        for name, value in rows:
            table.add_row(name, str(value))
        self.console.print(table)


def run_demo(demo: Demo, *, stay: bool) -> DemoResult:
    """Run the demo; with ``stay`` the service keeps running until Ctrl-C."""
    demo.console.print(f"[bold]promoguard demo[/] (seed {demo.seed}) in {demo.workdir}")
    try:
        with demo.console.status("starting the service, the worker, the member-tier service"):
            demo.start()
        asyncio.run(demo.sale())
        demo.summary()
        (demo.workdir / "keys.json").write_text(json.dumps(demo.keys, indent=2))
        env = demo.workdir / "demo.env"
        env.write_text(
            "".join(
                f"{k}={v}\n"
                for k, v in demo.env.items()
                if k.startswith("PROMOGUARD_") and k != "PROMOGUARD_REMEDIATION_POLICY"
            )
        )
        if stay:
            demo.console.print(
                f"The service: {demo.base} (API docs {demo.base}/docs; dashboard "
                f"{demo.base}/ui; the keys are in {demo.workdir / 'keys.json'}). "
                "Press Ctrl-C to stop."
            )
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in demo.processes):
                    time.sleep(1)
        else:
            demo.console.print(
                f"Explore what it did: [bold]make explore[/] (or `set -a; . {env}; set +a; "
                f"promoguard serve`) and open http://127.0.0.1:8000/docs or /ui; the keys are in "
                f"{demo.workdir / 'keys.json'}."
            )
        return demo.result
    finally:
        demo.stop()
