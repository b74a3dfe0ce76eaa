"""The scaled-out configuration, for real: ``gunicorn -c deploy/gunicorn.conf.py`` with two
UvicornWorkers and one ``promoguard worker``, on a PostgreSQL schema migrated by ``promoguard db
upgrade`` and one Redis under a key prefix of its own, as docs/scale-out.md deploys it.

Both API workers listen on one socket, so which of them answers a request is the kernel's
choice. Every request here goes on a new connection, and the test learns which worker answered
from the workers' own Prometheus files (one per process, in the multiprocess directory the
gunicorn hooks prepared): a property "across the workers" is asserted only once each worker has
been seen doing its part. What is proven:

* a flash sale of stock N sells exactly N to concurrent orders spread over both workers (the
  stock counter is in Redis, the reservations in PostgreSQL: both say N);
* a per-customer coupon-claim rate limit is one budget: after the limit, every worker refuses;
* a pause made through one worker stops both discounting, with a rules refresh of 30 s (so
  only the Redis announcement can have told them);
* a remediation plan queued through the API is run by the queue worker, and each refund is paid
  once (the simulated provider's own records);
* ``/metrics`` on either worker is the sum over both, and the temporary metrics directory is
  gone once gunicorn has stopped.

Skipped with a message when PostgreSQL or Redis is absent (a failure under
PROMOGUARD_REQUIRE_SERVICES=1). No timing is asserted (speed is bench/scale.py's).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict
from tests.payments.conftest import Simulator, simulator, wait_for  # noqa: F401 (fixture)
from tests.service.conftest import (  # noqa: F401 (redis_url: fixture)
    POSTGRES_URL,
    SECRET,
    _postgres_or_skip,
    make_key,
    redis_url,
)
from tests.service.helpers import approve, coupon_spec, line, live, spec, threshold
from tests.serving import free_port

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
BIN = Path(sys.executable).parent
WORKERS = 2
FLASH_STOCK = 8
FLASH_BUYERS = 24
CLAIM_LIMIT = 3
ANNOUNCED = 1.0
"""Seconds after a move by which every worker prices with it (the kill switch's deadline)."""
TRIES = 40
"""New connections tried before giving up on reaching both workers (each goes to either one)."""

Served = Counter[tuple[int, str, str]]
"""Requests answered per (worker pid, route template, status)."""


@dataclass
class Deployment:
    """The running configuration and what the test calls it with."""

    base: str
    settings: Settings
    prefix: str
    redis_url: str
    tmp: Path
    admin: PromoguardAuth
    shop: PromoguardAuth

    def call(self, auth: PromoguardAuth, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request on a connection of its own (so either worker may take it)."""
        headers = {"Connection": "close", **kw.pop("headers", {})}
        with httpx.Client(base_url=self.base, auth=auth, timeout=30) as client:
            return client.request(method, path, headers=headers, **kw)

    def admin_client(self) -> httpx.Client:
        """A keep-alive admin client for set-up (review, lifecycle moves)."""
        client = httpx.Client(base_url=self.base, auth=self.admin, timeout=30)
        client.settings = self.settings  # type: ignore[attr-defined]  # helpers.approver's keys
        return client

    def metrics_dir(self) -> Path:
        """The temporary directory the gunicorn hooks made (TMPDIR is the test's)."""
        made = list(self.tmp.glob("promoguard-metrics-*"))
        assert len(made) == 1, made
        return made[0]

    def served(self) -> Served:
        """What each worker has answered so far, from its own metrics file."""
        counts: Served = Counter()
        for path in self.metrics_dir().glob("counter_*.db"):
            pid = int(path.stem.split("_")[1])
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                _, sample, labels, _ = json.loads(key)
                if sample == "promoguard_http_requests_total":
                    counts[(pid, labels["route"], labels["status"])] += int(value)
        return counts

    def quiet(self) -> Served:
        """The counts once every answer sent so far is counted (a worker counts a request just
        after its response has gone): two looks 50 ms apart agree."""
        last = self.served()
        for _ in range(100):
            time.sleep(0.05)
            now = self.served()
            if now == last:
                return now
            last = now
        raise AssertionError("the workers' request counts never settled")

    def on_which_worker(self, send: Callable[[], httpx.Response], route: str) -> tuple[int, Any]:
        """Send one request; return the pid of the worker that answered and the response."""
        before = self.quiet()
        response = send()
        grew: list[int] = []

        def counted() -> bool:
            after = self.served()
            grew[:] = [
                pid
                for (pid, seen, status), n in after.items()
                if seen == route and n > before[(pid, seen, status)]
            ]
            return bool(grew)

        wait_for(counted, f"a worker to count its {route} answer")
        assert len(set(grew)) == 1, grew
        return grew[0], response


def _sql(url: str, query: str) -> Any:
    """One value read straight from PostgreSQL."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _promoguard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "promoguard"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def deployment(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 (fixture)
    simulator: Simulator,  # noqa: F811 (fixture)
) -> Iterator[Deployment]:
    """gunicorn (2 workers) + a queue worker on a fresh schema and a Redis prefix of their own."""
    _postgres_or_skip()
    schema = f"scale_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    prefix = f"scale-{uuid.uuid4().hex[:12]}:"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROMOGUARD_")},
        "PROMOGUARD_ENVIRONMENT": "production",
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_REDIS_URL": redis_url,
        "PROMOGUARD_REDIS_PREFIX": prefix,
        "PROMOGUARD_SECRET_KEY": SECRET,
        # So slow that only the Redis announcement can bring a change to the other worker.
        "PROMOGUARD_RULES_REFRESH_SECONDS": "30",
        "PROMOGUARD_RATE_LIMITS": json.dumps({"coupon_claim": {"customer": f"{CLAIM_LIMIT}/hour"}}),
        "PROMOGUARD_PAYMENT_PROVIDER_URL": simulator.url,
        "PROMOGUARD_PAYMENT_BACKOFF_BASE_SECONDS": "0.05",
        "PROMOGUARD_PAYMENT_BACKOFF_MAX_SECONDS": "0.5",
        "PROMOGUARD_BIND": f"127.0.0.1:{port}",
        "PROMOGUARD_WORKERS": str(WORKERS),
        # No PROMETHEUS_MULTIPROC_DIR: the hooks make a temporary one, here under the test's.
        "TMPDIR": str(tmp_path),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        upgraded = _promoguard(env, "db", "upgrade")  # once, before any worker starts
        assert upgraded.returncode == 0, upgraded.stderr
        logs = tmp_path / "gunicorn.log"
        with logs.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(BIN / "gunicorn"), "-c", str(CONFIG)],
                    env=env,
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            processes.append(
                subprocess.Popen(
                    [str(BIN / "promoguard"), "worker", "--workers", "1"],
                    env=env,
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a process exited:\n{logs.read_text()[-3000:]}")
            try:
                return httpx.get(f"{base}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_for(up, "gunicorn to answer /healthz", tries=1200)
        settings = Settings(database_url=url, secret_key=SECRET, environment="test")
        yield Deployment(
            base=base,
            settings=settings,
            prefix=prefix,
            redis_url=redis_url,
            tmp=tmp_path,
            admin=PromoguardAuth(*make_key(settings, "admin")),
            shop=PromoguardAuth(*make_key(settings, "storefront")),
        )
        _stop(processes[0])  # gunicorn: its hooks remove the metrics directory they made
        assert not list(tmp_path.glob("promoguard-metrics-*"))
    finally:
        for process in processes:
            _stop(process)
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        store = redis.Redis.from_url(redis_url)
        try:
            keys = list(store.scan_iter(match=f"{prefix}*"))
            if keys:
                store.delete(*keys)
        finally:
            store.close()


# -- the four properties ----------------------------------------------------------------------


def remediation_queued(deploy: Deployment) -> tuple[int, int, list[str]]:
    """满200减20 live; v2 keyed 满500减20 (no discount on a 300-yuan cart) live for three paid
    orders, then rolled back; an incident about v2, its plan drafted, approved by someone else
    and queued through the API. Returns the incident, the plan and the overcharged orders."""
    cart = [line("sku-8", 30000)]
    scope = {"skus": ["sku-8"]}
    with deploy.admin_client() as admin:
        live(admin, threshold(spend=20000, off=2000, scope=scope))  # type: ignore[arg-type]
        added = admin.post(
            "/v1/campaigns/mj/versions",
            json={"spec": threshold(spend=50000, off=2000, scope=scope)},
        )
        assert added.status_code == 201, added.text
        approve(admin, "mj", 2)  # type: ignore[arg-type]
        started = datetime.now(UTC)
        assert admin.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
        overcharged = []
        for n in range(3):
            body = {"customer": {"id": f"hit-{n}"}, "cart": {"lines": cart}}
            for _ in range(TRIES):  # v2 reaches the other worker over Redis
                quoted = deploy.call(deploy.shop, "POST", "/v1/quotes", json=body)
                assert quoted.status_code == 200, quoted.text
                if quoted.json()["discount_total"] == 0:
                    break
                time.sleep(0.05)
            assert quoted.json()["discount_total"] == 0
            placed = deploy.call(
                deploy.shop,
                "POST",
                "/v1/orders",
                json={"quote_token": quoted.json()["quote_token"]},
                headers={"Idempotency-Key": f"hit-{n}"},
            )
            assert placed.status_code == 201, placed.text
            number = placed.json()["id"]
            paid = deploy.call(
                deploy.shop, "POST", f"/v1/orders/{number}/events", json={"type": "paid"}
            )
            assert paid.status_code == 200, paid.text
            overcharged.append(number)
        rolled = admin.post("/v1/campaigns/mj/rollback", json={"reason": "v2 keyed 500 for 200"})
        assert rolled.status_code == 200, rolled.text
        opened = admin.post(
            "/v1/incidents",
            json={
                "title": "满500减20 live instead of 满200减20",
                "severity": "P1",
                "versions": [{"campaign_id": "mj", "version": 2}],
                "window_start": started.isoformat(),
            },
        )
        assert opened.status_code == 201, opened.text
        incident = opened.json()["id"]
        drafted = admin.post(f"/v1/incidents/{incident}/plans")
        assert drafted.status_code == 201, drafted.text
        plan = drafted.json()["id"]
        assert drafted.json()["refund_total"] == 3 * 2000
        approver = PromoguardAuth(*make_key(deploy.settings, "approver", department="marketing"))
        decided = admin.post(
            f"/v1/plans/{plan}/decision", json={"decision": "approve"}, auth=approver
        )
        assert decided.status_code == 200, decided.text
        queued = deploy.call(deploy.admin, "POST", f"/v1/plans/{plan}/execute")
        assert queued.status_code == 202, queued.text
    return incident, plan, overcharged


RACE_ROUNDS = 5
"""Races run until one is served by both workers: which worker accepts a connection is the
kernel's choice, so one burst can land on one worker; every round checks every invariant."""


def flash_sale_sells_exactly_its_stock(deploy: Deployment) -> None:
    """Every buyer quotes first (all are offered the flash price), then all order at once; a new
    sale per round until a round's orders were served by both workers."""
    for n in range(RACE_ROUNDS):
        if flash_sale_round(deploy, f"fs{n}", f"r{n}"):
            return
    raise AssertionError(f"no race of {RACE_ROUNDS} was spread over both workers")


def flash_sale_round(deploy: Deployment, sale: str, tag: str) -> bool:
    """One race on a new flash sale ``sale``; whether both workers served its orders."""
    with deploy.admin_client() as admin:
        live(
            admin,  # type: ignore[arg-type]
            spec(
                sale,
                "flash_sale",
                scope={"skus": [f"phone-{tag}"]},
                price=5000,
                stock=FLASH_STOCK,
                per_user_limit=1,
            ),
        )
    cart = [line(f"phone-{tag}", 10000, category="electronics")]  # a sale of its own

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        async with httpx.AsyncClient(
            base_url=deploy.base, auth=deploy.shop, timeout=60, limits=limits
        ) as client:
            tokens = []
            for n in range(FLASH_BUYERS):
                body = {"customer": {"id": f"buyer-{tag}-{n}"}, "cart": {"lines": cart}}
                for _ in range(TRIES):  # the sale reaches the other worker over Redis
                    quoted = await client.post("/v1/quotes", json=body)
                    assert quoted.status_code == 200, quoted.text
                    if quoted.json()["total"] == 5000:
                        break
                    await asyncio.sleep(0.05)
                assert quoted.json()["total"] == 5000, quoted.text
                tokens.append(quoted.json()["quote_token"])
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/orders",
                        json={"quote_token": token},
                        headers={"Idempotency-Key": f"flash-{tag}-{n}"},
                    )
                    for n, token in enumerate(tokens)
                )
            )

    before = deploy.served()
    answers = asyncio.run(race())
    statuses = Counter(r.status_code for r in answers)
    refusals = Counter(r.json()["code"] for r in answers if r.status_code != 201)
    assert statuses[201] == FLASH_STOCK, (statuses, refusals)
    assert set(refusals) <= {"flash_sale_sold_out", "quote_changed"}, refusals
    assert statuses[409] == FLASH_BUYERS - FLASH_STOCK

    def both_counted() -> bool:
        grew = deploy.served() - before
        return sum(n for (_, route, _), n in grew.items() if route == "/v1/orders") == len(answers)

    wait_for(both_counted, "both workers to count their orders")
    grew = deploy.served() - before
    workers = {pid for (pid, route, _), n in grew.items() if route == "/v1/orders" and n}

    url = deploy.settings.database_url
    sold = f"SELECT count(*) FROM order_discounts WHERE rule_id = '{sale}'"
    assert _sql(url, sold) == FLASH_STOCK
    held = f"SELECT coalesce(sum(amount), 0) FROM reservations WHERE key = 'stock:{sale}'"
    assert _sql(url, f"{held} AND state <> 'released'") == FLASH_STOCK
    store = redis.Redis.from_url(deploy.redis_url)
    try:
        assert int(store.get(f"{deploy.prefix}counter:stock:{sale}") or 0) == FLASH_STOCK
        assert store.hlen(f"{deploy.prefix}journal") == 0  # every take settled
    finally:
        store.close()
    return len(workers) == WORKERS


def claim_rate_limit_is_one_budget(deploy: Deployment) -> None:
    """CLAIM_LIMIT claims pass; then every further claim is refused, by both workers."""
    with deploy.admin_client() as admin:
        live(admin, coupon_spec("cp", per_user_limit=1000, quantity=100_000))  # type: ignore[arg-type]
    customer = f"bot-{uuid.uuid4().hex[:8]}"
    route = "/v1/coupons/{template}/claims"
    # A refused claim counts against the limit too: claim only once both workers offer it.
    offered_by: set[int] = set()
    for _ in range(TRIES):
        pid, listed = deploy.on_which_worker(
            lambda: deploy.call(deploy.shop, "GET", "/v1/coupons/templates"),
            "/v1/coupons/templates",
        )
        assert listed.status_code == 200, listed.text
        if "cp" in json.dumps(listed.json()):
            offered_by.add(pid)
        if len(offered_by) == WORKERS:
            break
        time.sleep(0.02)
    assert len(offered_by) == WORKERS, "the coupon never reached both workers"

    def claim() -> httpx.Response:
        return deploy.call(
            deploy.shop, "POST", "/v1/coupons/cp/claims", json={"customer_id": customer}
        )

    for _ in range(CLAIM_LIMIT):
        answer = claim()
        assert answer.status_code == 201, answer.text
    refused_by: set[int] = set()
    for _ in range(TRIES):
        pid, answer = deploy.on_which_worker(claim, route)
        assert answer.status_code == 429, answer.text
        assert answer.json()["code"] == "rate_limited"
        refused_by.add(pid)
        if len(refused_by) == WORKERS:
            break
    assert len(refused_by) == WORKERS, "every claim went to one worker"
    wallet = deploy.call(deploy.admin, "GET", f"/v1/customers/{customer}/coupons")
    assert len(wallet.json()) == CLAIM_LIMIT


def pause_reaches_both_workers(deploy: Deployment) -> None:
    """A threshold priced by both workers; paused through one; both stop by the deadline."""
    with deploy.admin_client() as admin:
        live(admin, threshold("pz", off=3000, scope={"skus": ["coat"]}))  # type: ignore[arg-type]
    body = {"customer": {"id": "c-1"}, "cart": {"lines": [line("coat", 30000)]}}

    def quote() -> httpx.Response:
        return deploy.call(deploy.shop, "POST", "/v1/quotes", json=body)

    def discounts_on_each_worker(expected: int, *, settle: bool) -> dict[int, int]:
        seen: dict[int, int] = {}
        for _ in range(TRIES):
            pid, answer = deploy.on_which_worker(quote, "/v1/quotes")
            assert answer.status_code == 200, answer.text
            discount = answer.json()["discount_total"]
            if settle and discount != expected:
                time.sleep(0.05)  # set-up: the campaign is still on its way to this worker
                continue
            seen[pid] = discount
            if len(seen) == WORKERS:
                break
        return seen

    priced = discounts_on_each_worker(3000, settle=True)
    assert list(priced.values()) == [3000] * WORKERS, priced
    with deploy.admin_client() as admin:
        paused = admin.post("/v1/campaigns/pz/pause", json={"reason": "the discount is wrong"})
        assert paused.status_code == 200, paused.text
        returned = time.monotonic()
    time.sleep(max(0.0, returned + ANNOUNCED - time.monotonic()))
    stopped = discounts_on_each_worker(0, settle=False)
    assert stopped == dict.fromkeys(priced, 0), stopped


def metrics_are_summed_over_both_workers(deploy: Deployment) -> None:
    """Either worker's /metrics reports what both answered (here: the coupon claims refused)."""
    per_worker = deploy.served()
    refused = sum(n for (_, route, status), n in per_worker.items() if status == "429")
    assert refused >= WORKERS
    text = deploy.call(deploy.admin, "GET", "/metrics").text
    lines = [
        row
        for row in text.splitlines()
        if row.startswith("promoguard_http_requests_total{") and 'status="429"' in row
    ]
    assert sum(float(row.rsplit(" ", 1)[1]) for row in lines) == refused


def test_two_gunicorn_workers_and_a_queue_worker_keep_every_guarantee_across_workers(
    deployment: Deployment,
    simulator: Simulator,  # noqa: F811 (fixture)
) -> None:
    incident, plan, overcharged = remediation_queued(deployment)
    flash_sale_sells_exactly_its_stock(deployment)
    claim_rate_limit_is_one_budget(deployment)
    pause_reaches_both_workers(deployment)
    metrics_are_summed_over_both_workers(deployment)

    def plan_done() -> bool:
        status = deployment.call(deployment.admin, "GET", f"/v1/plans/{plan}").json()["status"]
        return bool(status == "done")

    wait_for(plan_done, "the queue worker to execute the plan", tries=1200)
    records = simulator.records()
    keys = Counter(row["idempotency_key"] for row in records)
    assert keys == Counter(f"{o}:incident:{incident}:overcharged" for o in overcharged)
    assert {row["amount"] for row in records} == {2000}
    assert {row["status"] for row in records} == {"succeeded"}
