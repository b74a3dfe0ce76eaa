"""The must-show: a payment worker killed with SIGKILL in the middle of a 5,000-payout plan, and
started again, pays every payout exactly once — checked in the provider's own records."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path

from promoguard.payments.models import payout_key
from promoguard.payments.payer import NewPayout, plan_payouts
from promoguard.store import migrate
from promoguard.store.db import Database, utcnow

from .conftest import PROMOGUARD, faulty_simulator, paid_rows, payer_env, wait_for

PAYOUTS = 5000
CAUSE = "incident:1:overcharge"


def amount_of(index: int) -> int:
    return 100 + (index * 37) % 9_900


def test_a_worker_killed_mid_plan_and_restarted_pays_every_payout_exactly_once(tmp_path: Path):
    db_file = tmp_path / "promoguard.db"
    url = f"sqlite:///{db_file}"
    migrate.upgrade(url)

    async def plan() -> None:
        db = Database(url)
        try:
            async with db.write() as session:
                items = [
                    NewPayout(f"o-{i}", f"c-{i % 800}", CAUSE, amount_of(i), "CNY")
                    for i in range(PAYOUTS)
                ]
                assert len(await plan_payouts(session, items=items, now=utcnow())) == PAYOUTS
        finally:
            await db.dispose()

    asyncio.run(plan())
    simulator = faulty_simulator(tmp_path / "provider.db")
    env = payer_env(url, simulator)
    try:
        worker = subprocess.Popen(
            [PROMOGUARD, "payments", "pay"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: paid_rows(db_file) >= 1500 or worker.poll() is not None, "payouts")
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=20) == -signal.SIGKILL
        paid_at_kill = paid_rows(db_file)
        assert 1500 <= paid_at_kill < PAYOUTS, "the worker was not killed midway"

        restarted = subprocess.run(
            [PROMOGUARD, "payments", "pay"],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert restarted.returncode == 0, restarted.stderr.decode()

        # The provider's own records: every key refunded once, with its amount, succeeded.
        records = simulator.records()
        keys = Counter(row["idempotency_key"] for row in records)
        expected = {payout_key(f"o-{i}", CAUSE): amount_of(i) for i in range(PAYOUTS)}
        assert set(keys) == set(expected)
        assert max(keys.values()) == 1
        assert {row["idempotency_key"]: row["amount"] for row in records} == expected
        assert {row["status"] for row in records} == {"succeeded"}
        stats = simulator.stats()
        assert stats["requests"].get("failed_injected", 0) > 0  # the faults did play

        # Our side: one money-out ledger row per payout, and reconciliation passes.
        assert paid_rows(db_file) == PAYOUTS
        reconciled = subprocess.run(
            [PROMOGUARD, "payments", "reconcile"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert reconciled.returncode == 0, reconciled.stdout.decode()
        assert "5000 = 5000 + 0 + 0 + 0" in reconciled.stdout.decode()
    finally:
        simulator.process.terminate()
        simulator.process.wait(timeout=20)
