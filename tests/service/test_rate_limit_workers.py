"""A rate limit holds across worker processes that share Redis: of 10·N concurrent requests
from one customer, exactly N pass, however they are spread over the workers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.service.conftest import SECRET, make_key, signed_client
from tests.service.helpers import coupon_spec, live

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store import migrate

N = 5
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def servers(tmp_path: Path, redis_url: str) -> Iterator[tuple[Settings, list[str]]]:
    """Two ``promoguard serve`` processes on one SQLite file and one Redis."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    limits = json.dumps({"coupon_claim": {"customer": f"{N}/minute"}})
    settings = Settings(
        database_url=url,
        secret_key=SECRET,
        environment="test",
        redis_url=redis_url,
        rate_limits={"coupon_claim": {"customer": f"{N}/minute"}},
    )
    migrate.upgrade(url)
    env = {
        **os.environ,
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_REDIS_URL": redis_url,
        "PROMOGUARD_RATE_LIMITS": limits,
    }
    ports = [_free_port() for _ in range(WORKERS)]
    procs = [
        subprocess.Popen(
            [str(Path(sys.executable).with_name("promoguard")), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, proc in zip(bases, procs, strict=True):
            for _ in range(200):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                    )
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"{base} did not come up")
        yield settings, bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


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
