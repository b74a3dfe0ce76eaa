"""A rate limit holds across worker processes that share Redis: of 10·N concurrent requests
from one customer, exactly N pass, however they are spread over the workers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.service.conftest import SECRET, make_key, signed_client
from tests.service.helpers import coupon_spec, live
from tests.serving import serving

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store import migrate

N = 5
WORKERS = 2


@pytest.fixture
def servers(tmp_path: Path, redis_url: str) -> Iterator[tuple[Settings, list[str]]]:
    """Two ``promoguard serve`` processes on one SQLite file and one Redis."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    limits = {"coupon_claim": {"customer": f"{N}/minute"}}
    settings = Settings(
        database_url=url,
        secret_key=SECRET,
        environment="test",
        redis_url=redis_url,
        rate_limits=limits,
    )
    migrate.upgrade(url)
    env = {
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_REDIS_URL": redis_url,
        "PROMOGUARD_RATE_LIMITS": json.dumps(limits),
    }
    with serving(env) as one, serving(env) as two:
        yield settings, [one, two]


def test_of_ten_times_n_concurrent_claims_exactly_n_pass_across_workers(servers):
    settings, bases = servers
    with signed_client(settings) as admin:
        live(admin, coupon_spec(per_user_limit=1000, quantity=100_000))
    key_id, secret = make_key(settings, "storefront")
    customer = f"bot-{uuid.uuid4().hex[:8]}"

    async def storm() -> list[int]:
        auth = PromoguardAuth(key_id, secret)
        clients = [httpx.AsyncClient(base_url=b, auth=auth, timeout=30) for b in bases]
        try:
            calls = [
                clients[n % WORKERS].post("/v1/coupons/cp/claims", json={"customer_id": customer})
                for n in range(10 * N)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]
        finally:
            for client in clients:
                await client.aclose()

    statuses = Counter(asyncio.run(storm()))

    assert statuses == Counter({201: N, 429: 9 * N})
    with signed_client(settings) as admin:
        wallet = admin.get(f"/v1/customers/{customer}/coupons").json()
    assert len(wallet) == N
