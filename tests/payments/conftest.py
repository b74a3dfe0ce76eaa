"""Fixtures of the payment tests: a real simulated provider process, a fake clock, databases.

``database_url`` is the service tests' fixture (a migrated SQLite file, and a fresh PostgreSQL
schema or a skip saying why PostgreSQL is absent; a failure under PROMOGUARD_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.service.conftest import database_url  # noqa: F401 (fixture)
from tests.serving import free_port

PROMOGUARD = str(Path(sys.executable).with_name("promoguard"))


class FakeClock:
    """Now, as the test says: time moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def wait_for(condition: Any, what: str, *, tries: int = 600) -> None:
    """Wait (0.05 s between looks) until ``condition()`` holds: for another process's work."""
    pause = threading.Event()
    for _ in range(tries):
        if condition():
            return
        pause.wait(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@dataclass
class Simulator:
    """A running ``promoguard payment-provider`` process."""

    url: str
    db: Path
    process: subprocess.Popen[bytes]

    def faults(self, **faults: Any) -> None:
        """Replace the injected faults (none given: clear them)."""
        httpx.put(f"{self.url}/v1/faults", json=faults, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Refunds by status and requests by outcome, as the provider counts them."""
        answer = httpx.get(f"{self.url}/v1/stats", timeout=5)
        answer.raise_for_status()
        return dict(answer.json())

    def records(self) -> list[sqlite3.Row]:
        """The provider's own refund records, read from its own SQLite file."""
        with sqlite3.connect(self.db) as connection:
            connection.row_factory = sqlite3.Row
            return connection.execute("SELECT * FROM refunds ORDER BY seq").fetchall()

    def requests_for(self, key: str) -> list[str]:
        """The outcomes of every refund request that came with ``key``."""
        with sqlite3.connect(self.db) as connection:
            rows = connection.execute(
                "SELECT outcome FROM requests WHERE idempotency_key = ? ORDER BY id", (key,)
            ).fetchall()
        return [row[0] for row in rows]


def start_simulator(db: Path, *extra: str) -> Simulator:
    """Start a simulated provider process keeping its records in ``db``."""
    port = free_port()
    process = subprocess.Popen(
        [PROMOGUARD, "payment-provider", "--port", str(port), "--db", str(db), *extra],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"promoguard payment-provider exited: {error}")
        try:
            return httpx.get(f"{url}/health", timeout=1).is_success
        except httpx.HTTPError:
            return False

    wait_for(up, "the simulated provider to answer")
    return Simulator(url=url, db=db, process=process)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A simulated provider process with its own records file, stopped after the test."""
    sim = start_simulator(tmp_path / "provider.db", "--seed", "7")
    try:
        yield sim
    finally:
        sim.process.terminate()
        sim.process.wait(timeout=20)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def faulty_simulator(db: Path) -> Simulator:
    """A simulated provider for the crash tests: some refund requests fail, some are held past
    the client's timeout and applied anyway, some refunds are confirmed late."""
    return start_simulator(
        db,
        "--seed", "11",
        "--failure-rate", "0.02",
        "--timeout-rate", "0.002",
        "--hang-ms", "800",
        "--pending-rate", "0.01",
        "--confirm-after-ms", "200",
    )  # fmt: skip


def payer_env(url: str, simulator: Simulator, **extra: str) -> dict[str, str]:
    """The environment of a worker process paying against ``simulator`` quickly: a short
    client timeout and claim lease, short backoffs, many attempts."""
    return {
        **os.environ,
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_PAYMENT_PROVIDER_URL": simulator.url,
        "PROMOGUARD_PAYMENT_TIMEOUT_SECONDS": "0.4",
        "PROMOGUARD_PAYMENT_CLAIM_TIMEOUT_SECONDS": "1",
        "PROMOGUARD_PAYMENT_BACKOFF_BASE_SECONDS": "0.05",
        "PROMOGUARD_PAYMENT_BACKOFF_MAX_SECONDS": "0.5",
        "PROMOGUARD_PAYMENT_MAX_ATTEMPTS": "12",
        "PROMOGUARD_PAYMENT_POLL_SECONDS": "0.2",
        "PROMOGUARD_PAYMENT_CONCURRENCY": "32",
        **extra,
    }


def paid_rows(db_file: Path) -> int:
    """Money-out ledger rows in a SQLite database file."""
    with sqlite3.connect(db_file) as connection:
        return int(
            connection.execute(
                "SELECT COUNT(*) FROM payout_ledger WHERE event IN ('succeeded', 'confirmed')"
            ).fetchone()[0]
        )
