"""Workers that see the same alert at once open one incident between them, without Redis.

With Redis the monitor claims each alert once (``SET NX``); without it every worker judges its
own traffic and may raise the same alert at the same moment. Each thread here is such a worker:
its own event loop, its own database engine and its own desk, released together by a barrier.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

from sqlalchemy import func, select

from promoguard.incidents.desk import IncidentDesk
from promoguard.incidents.grading import IncidentPolicy
from promoguard.incidents.models import Incident
from promoguard.monitoring.detectors import Alert
from promoguard.settings import Settings
from promoguard.store.db import Database

WORKERS = 6


def _alert() -> Alert:
    return Alert(
        rule="discount_rate_spike",
        detector="discount_rate",
        severity="P2",
        actions=(),
        subject="campaign:mj:v2",
        campaign_id="mj",
        version=2,
        value=Decimal("0.41"),
        threshold=Decimal("0.20"),
        message="realised discount rate 41% against p95 20%",
        at=time.time(),
    )


def test_racing_workers_open_one_incident_for_one_alert(settings: Settings) -> None:
    barrier = threading.Barrier(WORKERS)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    async def worker() -> str:
        db = Database(settings.database_url)
        try:
            desk = IncidentDesk(db, IncidentPolicy())
            async with db.read() as session:  # connect before the race starts
                await session.execute(select(1))
            barrier.wait()
            return await desk.open(_alert())
        finally:
            await db.dispose()

    def run() -> None:
        try:
            outcomes.append(asyncio.run(worker()))
        except BaseException as exc:  # reported below, with the outcomes
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    opened = [o for o in outcomes if o.startswith("opened")]
    assert len(opened) == 1, outcomes
    assert sum(o.startswith("joined") for o in outcomes) == WORKERS - 1, outcomes

    async def count() -> int:
        db = Database(settings.database_url)
        try:
            async with db.read() as session:
                return int((await session.scalar(select(func.count()).select_from(Incident))) or 0)
        finally:
            await db.dispose()

    assert asyncio.run(count()) == 1
