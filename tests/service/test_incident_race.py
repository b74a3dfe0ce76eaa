"""Workers' incident desks racing each other, without Redis: one incident per alert, one
escalation per missed deadline.

With Redis the monitor claims each alert once (``SET NX``); without it every worker judges its
own traffic and may raise the same alert at the same moment, and every worker's desk runs the
incident clock. Each thread here is such a worker: its own event loop, its own database engine
and its own desk, released together by a barrier.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import select

from promoguard.incidents.desk import IncidentDesk
from promoguard.incidents.grading import IncidentPolicy
from promoguard.incidents.models import Incident
from promoguard.monitoring.detectors import Alert
from promoguard.settings import Settings
from promoguard.store.db import Database

WORKERS = 6
T = TypeVar("T")


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


def _race(
    settings: Settings,
    act: Callable[[IncidentDesk], Awaitable[T]],
    clock: Callable[[], datetime] | None = None,
) -> list[T]:
    """Run ``act`` on WORKERS desks at once, each in its own thread, loop and engine."""
    barrier = threading.Barrier(WORKERS)
    outcomes: list[T] = []
    errors: list[BaseException] = []

    async def worker() -> T:
        db = Database(settings.database_url)
        try:
            async with db.read() as session:  # connect before the race starts
                await session.execute(select(1))
            barrier.wait()
            desk = IncidentDesk(db, IncidentPolicy())
            if clock is not None:
                desk._clock = clock  # the injectable clock
            return await act(desk)
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
    return outcomes


async def _incidents(settings: Settings) -> list[Incident]:
    db = Database(settings.database_url)
    try:
        async with db.read() as session:
            return list(await session.scalars(select(Incident)))
    finally:
        await db.dispose()


def test_racing_workers_open_one_incident_for_one_alert(settings: Settings) -> None:
    outcomes = _race(settings, lambda desk: desk.open(_alert()))

    opened = [o for o in outcomes if o.startswith("opened")]
    assert len(opened) == 1, outcomes
    assert sum(o.startswith("joined") for o in outcomes) == WORKERS - 1, outcomes
    assert len(asyncio.run(_incidents(settings))) == 1


def test_racing_clocks_escalate_a_missed_deadline_once(settings: Settings) -> None:
    _race(settings, lambda desk: desk.open(_alert()))
    (incident,) = asyncio.run(_incidents(settings))
    assert incident.escalation_level == 0
    due: datetime = incident.ack_due_at

    escalations = _race(settings, lambda desk: desk.tick(), clock=lambda: due)

    assert sorted(escalations) == [[]] * (WORKERS - 1) + [[(incident.id, "acknowledge")]]
    (after,) = asyncio.run(_incidents(settings))
    assert after.escalation_level == 1
