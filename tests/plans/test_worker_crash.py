"""The must-show: the queue worker (``promoguard worker``) killed with SIGKILL in the middle of a
5,000-payout remediation plan, and started again, pays every item exactly once — checked in the
payment provider's own records — and the plan ends ``done``.

The plan's 5,000 refund items are written straight into the tables (drafting them from 5,000
real orders is what tests/plans/test_remediation_flow.py and bench/remediation.py exercise);
the execution is the real one: queued on huey's SQLite queue, run by a worker process against a
simulated provider process that fails some requests, holds some past the client's timeout and
applies them anyway, and confirms some late.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests.payments.conftest import (
    PROMOGUARD,
    faulty_simulator,
    paid_rows,
    payer_env,
    wait_for,
)

from promoguard.incidents import service as incidents
from promoguard.incidents.grading import IncidentPolicy
from promoguard.plans.jobs import PlanQueue
from promoguard.plans.models import PlanStatus, RemediationItem, RemediationPlan
from promoguard.settings import Settings
from promoguard.store import migrate
from promoguard.store.db import Database

ITEMS = 5000


def amount_of(index: int) -> int:
    return 100 + (index * 37) % 9_900


def scalar(db_file: Path, sql: str) -> object:
    with sqlite3.connect(db_file) as connection:
        return connection.execute(sql).fetchone()[0]


def approved_plan(url: str) -> tuple[int, str]:
    """An incident and its approved plan of ``ITEMS`` refunds; returns the plan id and cause."""

    async def write() -> tuple[int, str]:
        db = Database(url)
        now = datetime.now(UTC)
        try:
            async with db.write() as session:
                incident = await incidents.open_incident(
                    session, title="test", actor="test", now=now, policy=IncidentPolicy()
                )
                cause = f"incident:{incident.id}:overcharged"
                plan = RemediationPlan(
                    incident_id=incident.id,
                    status=PlanStatus.APPROVED,
                    severity="P1",
                    policy={},
                    summary={},
                    items_total=ITEMS,
                    refund_total=sum(amount_of(i) for i in range(ITEMS)),
                    created_by="author",
                    decided_by="approver",
                    decided_at=now,
                    decision_reason="",
                )
                session.add(plan)
                await session.flush()
                session.add_all(
                    RemediationItem(
                        plan_id=plan.id,
                        order_id=f"o-{i}",
                        customer_id=f"c-{i % 800}",
                        klass="overcharged",
                        action="refund_difference",
                        cause=cause,
                        idempotency_key=f"o-{i}:{cause}",
                        currency="CNY",
                        difference=amount_of(i),
                        refund=amount_of(i),
                        lines=[],
                        reason="overcharged",
                        updated_at=now,
                    )
                    for i in range(ITEMS)
                )
                return plan.id, cause
        finally:
            await db.dispose()

    return asyncio.run(write())


def test_a_worker_killed_mid_plan_and_restarted_pays_every_item_exactly_once(tmp_path: Path):
    db_file = tmp_path / "promoguard.db"
    url = f"sqlite:///{db_file}"
    migrate.upgrade(url)
    plan_id, cause = approved_plan(url)
    simulator = faulty_simulator(tmp_path / "provider.db")
    env = payer_env(
        url,
        simulator,
        PROMOGUARD_QUEUE_PATH=str(tmp_path / "queue.db"),
        PROMOGUARD_REDIS_URL="",
    )
    settings = Settings(database_url=url, queue_path=env["PROMOGUARD_QUEUE_PATH"])
    PlanQueue(settings).enqueue(plan_id)  # what POST /v1/plans/{id}/execute does

    def status() -> str:
        sql = f"SELECT status FROM remediation_plans WHERE id = {plan_id}"
        return str(scalar(db_file, sql))

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [PROMOGUARD, "worker", "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    first = second = None
    try:
        first = worker()
        wait_for(lambda: paid_rows(db_file) >= 1500 or first.poll() is not None, "payouts")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=20) == -signal.SIGKILL
        at_kill = paid_rows(db_file)
        assert 1500 <= at_kill < ITEMS, "the worker was not killed midway"
        assert status() == "executing"

        second = worker()  # re-queues the plan left executing, and finishes it
        wait_for(lambda: status() == "done", "the plan to be done", tries=6000)

        records = simulator.records()
        keys = Counter(row["idempotency_key"] for row in records)
        expected = {f"o-{i}:{cause}": amount_of(i) for i in range(ITEMS)}
        assert set(keys) == set(expected)
        assert max(keys.values()) == 1
        assert {row["idempotency_key"]: row["amount"] for row in records} == expected
        assert {row["status"] for row in records} == {"succeeded"}
        assert simulator.stats()["requests"].get("failed_injected", 0) > 0  # faults did play
        assert paid_rows(db_file) == ITEMS
        done = "SELECT COUNT(*) FROM remediation_items WHERE status = 'done'"
        assert scalar(db_file, done) == ITEMS
        reconciled = subprocess.run(
            [PROMOGUARD, "payments", "reconcile"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert reconciled.returncode == 0, reconciled.stdout.decode()
    finally:
        for process in (first, second, simulator.process):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
