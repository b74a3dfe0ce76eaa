"""The kill switch across worker processes: a pause or a rollback made through one ``promoguard
serve`` process (or from the command line) prices on every other process within 1 s.

Two real worker processes share one database (SQLite file and PostgreSQL). Set-up and the move
go through worker A's HTTP API; the check goes through worker B's. No test measures speed (that
is ``bench/kill_switch.py``): each one notes when the move returned, waits until 1 s after it, and
asserts that the quote B gives *then* already reflects the move. Before every move the test
asserts B still priced the old way, with a warm cache, so a move that does not reach B fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.service.conftest import SECRET, make_key
from tests.service.helpers import approve, line, live, threshold
from tests.serving import serving

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings

DEADLINE = 1.0
"""Seconds after a move returns by which every worker prices with it (the issue's must-show)."""
DEFAULT_REFRESH = "0.5"
"""The refresh interval's default, spelt out so an inherited variable cannot change it."""
SLOW_REFRESH = "30"
"""With Redis: so slow a stamp poll cannot meet the deadline; only the announcement can."""
COAT = [line("coat", 30000)]


@dataclass
class Workers:
    """An admin client on worker A, storefront clients on A and B, and the workers' environment."""

    admin: httpx.Client
    shop_a: httpx.Client
    shop_b: httpx.Client
    env: dict[str, str]


@contextmanager
def two_workers(settings: Settings, **env: str) -> Iterator[Workers]:
    """Start two ``promoguard serve`` processes on ``settings.database_url`` (plus ``env``)."""
    environment = {
        "PROMOGUARD_DATABASE_URL": settings.database_url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_RULES_REFRESH_SECONDS": DEFAULT_REFRESH,
        "PROMOGUARD_REDIS_URL": "",  # none unless asked for: "" is no Redis
        # Keys of this test's own: tests running at once must not share monitoring streams.
        "PROMOGUARD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}:",
        **env,
    }
    admin_auth = PromoguardAuth(*make_key(settings, "admin"))
    shop_auth = PromoguardAuth(*make_key(settings, "storefront"))
    with ExitStack() as stack:

        def start(_: int) -> str:  # both at once: each takes seconds to import and migrate
            manager = serving(environment)
            base = manager.__enter__()
            stack.push(manager.__exit__)
            return base

        with ThreadPoolExecutor(2) as pool:
            base_a, base_b = pool.map(start, range(2))
        admin = stack.enter_context(httpx.Client(base_url=base_a, auth=admin_auth, timeout=30))
        admin.settings = settings  # type: ignore[attr-defined]  # helpers.approver makes keys with it
        shop_a = stack.enter_context(httpx.Client(base_url=base_a, auth=shop_auth, timeout=30))
        shop_b = stack.enter_context(httpx.Client(base_url=base_b, auth=shop_auth, timeout=30))
        yield Workers(admin, shop_a, shop_b, environment)


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    """Two workers, default refresh interval, no Redis: the stamp poll is the only signal."""
    with two_workers(settings) as pair:
        yield pair


@pytest.fixture
def redis_workers(settings: Settings, redis_url: str) -> Iterator[Workers]:
    """Two workers listening on Redis, with a refresh interval far beyond the deadline."""
    with two_workers(
        settings, PROMOGUARD_REDIS_URL=redis_url, PROMOGUARD_RULES_REFRESH_SECONDS=SLOW_REFRESH
    ) as pair:
        yield pair


def discount(client: httpx.Client) -> int:
    """The discount one worker gives a 300-yuan coat (a threshold of 满200 applies to it)."""
    response = client.post("/v1/quotes", json={"customer": {"id": "c-1"}, "cart": {"lines": COAT}})
    assert response.status_code == 200, response.text
    total: int = response.json()["discount_total"]
    return total


def settled(client: httpx.Client, expected: int) -> int:
    """The discount once it is ``expected`` (set-up: the state before a move, however long the
    set-up took to reach the worker), or what it still is after 10 s."""
    give_up = time.monotonic() + 10
    while (seen := discount(client)) != expected and time.monotonic() < give_up:
        time.sleep(0.05)
    return seen


def after_deadline(returned_at: float) -> None:
    """Sleep until ``DEADLINE`` seconds after ``returned_at`` (a ``time.monotonic()`` reading)."""
    time.sleep(max(0.0, returned_at + DEADLINE - time.monotonic()))


def move(admin: httpx.Client, campaign_id: str, action: str, **body: Any) -> float:
    """Call a lifecycle move on worker A; return when it returned (monotonic)."""
    response = admin.post(f"/v1/campaigns/{campaign_id}/{action}", json=body)
    assert response.status_code == 200, response.text
    return time.monotonic()


def go_live(admin: httpx.Client, rule: dict[str, Any]) -> None:
    """Take ``rule`` through review and live through worker A."""
    assert live(admin, rule)["status"] == "live"  # type: ignore[arg-type]  # any httpx client


def two_versions_live(admin: httpx.Client) -> None:
    """v1 (满200减50) live, then v2 (满200减90) approved and live in its place."""
    go_live(admin, threshold(off=5000))
    added = admin.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=9000)})
    assert added.status_code == 201, added.text
    approve(admin, "mj", 2)  # type: ignore[arg-type]
    move(admin, "mj", "activate", version=2)


def cli(env: dict[str, str], *args: str) -> float:
    """Run ``promoguard ARGS`` against the workers' database; return when it exited."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("promoguard")), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return time.monotonic()


def test_a_pause_through_worker_a_stops_worker_b_discounting_by_the_deadline(workers):
    go_live(workers.admin, threshold())
    assert settled(workers.shop_b, 5000) == 5000

    after_deadline(move(workers.admin, "mj", "pause", reason="the discount is wrong"))
    assert discount(workers.shop_b) == 0

    after_deadline(move(workers.admin, "mj", "activate"))  # resume
    assert discount(workers.shop_b) == 5000


def test_a_rollback_through_worker_a_brings_the_old_version_back_on_b_by_the_deadline(workers):
    two_versions_live(workers.admin)
    assert settled(workers.shop_b, 9000) == 9000

    after_deadline(move(workers.admin, "mj", "rollback", reason="9000 was a typo"))
    assert discount(workers.shop_b) == 5000


def test_a_pause_from_the_cli_stops_both_workers_discounting_by_the_deadline(workers):
    go_live(workers.admin, threshold())
    assert (settled(workers.shop_a, 5000), settled(workers.shop_b, 5000)) == (5000, 5000)

    after_deadline(cli(workers.env, "campaigns", "pause", "mj", "--reason", "stop it now"))
    assert (discount(workers.shop_a), discount(workers.shop_b)) == (0, 0)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_with_redis_a_rollback_and_a_cli_pause_reach_every_worker_by_the_deadline(redis_workers):
    """The workers poll the stamp only every 30 s here: only the Redis announcement (from worker
    A for the rollback, from the CLI for the pause) can make the deadline."""
    workers = redis_workers
    two_versions_live(workers.admin)
    assert settled(workers.shop_b, 9000) == 9000

    after_deadline(move(workers.admin, "mj", "rollback", reason="9000 was a typo"))
    assert discount(workers.shop_b) == 5000
    assert discount(workers.shop_a) == 5000

    after_deadline(cli(workers.env, "campaigns", "pause", "mj", "--reason", "stop it now"))
    assert (discount(workers.shop_a), discount(workers.shop_b)) == (0, 0)
