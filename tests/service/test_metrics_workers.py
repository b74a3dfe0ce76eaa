"""``promoguard serve --workers 2`` keeps one set of metrics: every worker writes to one
multiprocess directory, and /metrics answers the sum over all of them, whichever worker serves
the scrape."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from tests.service.conftest import SECRET, make_key
from tests.service.helpers import line
from tests.serving import free_port, serving

from promoguard.members.clients import INVENTORY, MEMBER_TIERS
from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store import migrate

WORKERS = 2
BURST = 10
FAILURES = "promoguard_dependency_failures_total"


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """A migrated SQLite file and the environment of a server whose inventory and member-tier
    services are down (nothing listens on their port), with breakers that never open: every
    quote is one inventory failure, counted by whichever worker priced it."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    migrate.upgrade(url)
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_INVENTORY_URL": nowhere,
        "PROMOGUARD_MEMBER_TIERS_URL": nowhere,
        "PROMOGUARD_BREAKER_THRESHOLD": "1000",
    }
    return Settings(database_url=url, secret_key=SECRET, environment="test"), env


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics over a new connection (so any worker may answer): (name, labels) -> value."""
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def per_worker(directory: Path, name: str, **labels: str) -> dict[str, float]:
    """The value of one series in each process's own file: pid -> value."""
    found = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    found[path.stem.removeprefix("counter_")] = sample.value
    return found


def wait_for_workers(directory: Path, pattern: str) -> set[str]:
    """The pids with a ``pattern`` file in ``directory`` once every worker has one (each worker
    creates its files at startup; serving() returns once the first worker answers)."""
    for _ in range(600):
        pids = {path.stem.rsplit("_", 1)[1] for path in directory.glob(pattern)}
        if len(pids) >= WORKERS:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"only {sorted(directory.iterdir())} in {directory}")


def quote_burst(base: str, auth: PromoguardAuth) -> list[httpx.Response]:
    """BURST concurrent quotes on new connections, which the workers share between them."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, auth=auth, timeout=30) as client:
            body = {"customer": {"id": "c-1"}, "cart": {"lines": [line("sku-1", 10000)]}}
            return list(
                await asyncio.gather(*(client.post("/v1/quotes", json=body) for _ in range(BURST)))
            )

    return asyncio.run(burst())


def test_two_workers_count_into_one_temporary_metrics_dir_summed_by_every_scrape(
    shop, tmp_path: Path
):
    settings, env = shop
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    auth = PromoguardAuth(*make_key(settings, "storefront"))

    with serving({**env, "TMPDIR": str(temporary)}, "--workers", str(WORKERS)) as base:
        [directory] = temporary.glob("promoguard-metrics-*")
        wait_for_workers(directory, "counter_*.db")
        quotes = 0
        # Until both workers have priced quotes: which worker accepts a connection is the
        # kernel's choice, so a few bursts may go to one.
        for _ in range(30):
            for response in quote_burst(base, auth):
                assert response.status_code == 200, response.text
                assert response.json()["degraded"] == [INVENTORY]
                quotes += 1
            counted = per_worker(directory, FAILURES, dependency=INVENTORY)
            if len([n for n in counted.values() if n > 0]) >= WORKERS:
                break
        else:
            pytest.fail(f"every quote went to one worker: {counted}")
        assert sum(counted.values()) == quotes

        for _ in range(2 * WORKERS):
            samples = scrape(base)
            assert samples[(FAILURES, frozenset({("dependency", INVENTORY)}))] == quotes

    assert not directory.exists()  # removed with the server


def test_a_configured_metrics_dir_is_wiped_of_stale_files_and_breakers_show_one_series_each(
    shop, tmp_path: Path
):
    _, env = shop
    directory = tmp_path / "prometheus"
    directory.mkdir()
    # What a worker of an earlier run left behind: it must not be reported as current.
    stale = MmapedDict(str(directory / "counter_999999.db"))
    stale.write_value(
        mmap_key("promoguard_quotes", "promoguard_quotes_total", [], [], "Quotes priced"), 7, 0
    )
    stale.close()

    with serving({**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}, "--workers", "2") as base:
        pids = wait_for_workers(directory, "gauge_livemax_*.db")
        assert "999999" not in pids
        assert not (directory / "counter_999999.db").exists()
        samples = scrape(base)

    states = {labels: v for (name, labels), v in samples.items() if name.endswith("breaker_state")}
    assert states == {
        frozenset({("dependency", MEMBER_TIERS)}): 0,
        frozenset({("dependency", INVENTORY)}): 0,
    }  # one series per dependency, not one per worker (no pid label)
    assert samples.get(("promoguard_quotes_total", frozenset())) != 7
    assert directory.is_dir()  # the user's directory stays
