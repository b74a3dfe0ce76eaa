"""The incident desk: where alerts open incidents, and the clock that escalates and re-grades.

:class:`IncidentDesk` is the service's one handle on incidents outside a request:

* :meth:`IncidentDesk.open` is the monitoring watch's ``incident`` action
  (:class:`promoguard.monitoring.watch.IncidentSink`): an alert about a campaign joins the active
  incident about that campaign, or opens one at the alert rule's severity or worse; an alert about
  no campaign (a route's error rate, an identity cluster) joins the active incident it already
  alerted, or opens one.
* :meth:`IncidentDesk.tick` (every ``PROMOGUARD_INCIDENT_CHECK_SECONDS``) escalates incidents past a
  deadline and re-measures the active ones, raising their severity as the impact grows.

Every change it makes can be announced through ``announce`` (the notifications the app wires in),
inside the same transaction, so a notice is queued exactly when the change lands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.incidents import service
from promoguard.incidents.grading import IncidentPolicy
from promoguard.incidents.models import Incident, IncidentEvent, Severity
from promoguard.loops import Periodic
from promoguard.monitoring.detectors import Alert
from promoguard.store.db import Database

__all__ = ["Announce", "IncidentDesk"]

log = logging.getLogger(__name__)

_SEVERITIES = {s.value for s in Severity}

Announce = Callable[[AsyncSession, Incident, str, dict[str, Any]], Awaitable[None]]
"""``announce(session, incident, event, detail)``: tell people (``opened``, ``severity``,
``escalated``, ``status``, ``update``), in the change's transaction."""


async def _silent(*_: Any) -> None:
    return None


_DESK_LOCK = 0x70670001  # the key of the advisory lock below (one per database)


async def _one_desk_at_a_time(session: AsyncSession) -> None:
    """Serialise the desks of every process: "find the active incident, else open one", and a
    tick of the clock.

    Without it two workers raising the same alert at once (no Redis to claim it) both find no
    incident and open two, and two workers' clocks re-measuring the same grown impact both raise
    the severity (two events, two notices; escalation itself already locks its rows). SQLite
    already has one writer at a time (``BEGIN IMMEDIATE``); on
    PostgreSQL a transaction-scoped advisory lock does the same, and is let go at commit or
    rollback. The statements after it read what the previous holder committed. Alerts and ticks
    are rare, so one lock for everything costs nothing.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_DESK_LOCK)))


class IncidentDesk:
    """Opens incidents for alerts, and runs the incidents' clocks."""

    def __init__(
        self,
        db: Database,
        policy: IncidentPolicy,
        *,
        announce: Announce | None = None,
        interval: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self.policy = policy
        self.announce: Announce = announce or _silent
        self._clock = clock
        self._loop = Periodic(self.tick, interval, log=log, what="incident clock")

    async def open(self, alert: Alert) -> str:
        """Open or join the incident for ``alert``; returns what happened, for the alert's
        record (``"opened 3 (P1)"``, ``"joined 3"``)."""
        now = self._clock()
        versions = (
            [(alert.campaign_id, alert.version)]
            if alert.campaign_id is not None and alert.version is not None
            else []
        )
        detail = {"alert": alert.as_dict()}
        async with self._db.write() as session:
            await _one_desk_at_a_time(session)
            existing = await self._active_for(session, alert)
            if existing is not None:
                service.add_event(
                    session,
                    existing,
                    actor="monitor",
                    kind="alert",
                    message=f"alert {alert.rule} [{alert.severity}]: {alert.message}",
                    now=now,
                    detail={"subject": alert.subject, **detail},
                )
                if versions and list(versions[0]) not in existing.versions:
                    existing.versions = [*existing.versions, list(versions[0])]
                if await service.reassess(session, existing, now=now, policy=self.policy):
                    await self.announce(session, existing, "severity", {})
                return f"joined {existing.id}"
            floor = Severity(alert.severity) if alert.severity in _SEVERITIES else Severity.P3
            subject = alert.campaign_id or alert.subject
            incident = await service.open_incident(
                session,
                title=f"{alert.rule} on {subject}"
                + (f" v{alert.version}" if alert.version else ""),
                actor="monitor",
                now=now,
                policy=self.policy,
                versions=versions,
                floor=floor,
                message=alert.message,
                detail={"subject": alert.subject, **detail},
            )
            service.add_event(
                session,
                incident,
                actor="monitor",
                kind="alert",
                message=f"alert {alert.rule} [{alert.severity}]: {alert.message}",
                now=now,
                detail={"subject": alert.subject, **detail},
            )
            await self.announce(session, incident, "opened", {})
            return f"opened {incident.id} ({incident.severity})"

    async def _active_for(self, session: AsyncSession, alert: Alert) -> Incident | None:
        if alert.campaign_id is not None:
            return await service.active_for_campaigns(session, {alert.campaign_id})
        rows = await session.execute(
            select(Incident, IncidentEvent.detail)
            .join(IncidentEvent, IncidentEvent.incident_id == Incident.id)
            .where(
                Incident.status.in_([s.value for s in service.ACTIVE]),
                IncidentEvent.kind == "alert",
            )
            .order_by(Incident.id.desc())
        )
        for incident, event_detail in rows.all():
            if (event_detail or {}).get("subject") == alert.subject:
                found: Incident = incident
                return found
        return None

    async def tick(self) -> list[tuple[int, str]]:
        """Escalate what is overdue, re-measure what is active; returns the escalations made as
        ``(incident id, "acknowledge" | "respond")``."""
        now = self._clock()
        async with self._db.write() as session:
            await _one_desk_at_a_time(session)
            escalated = await service.check_deadlines(session, now=now, policy=self.policy)
            for incident, missed in escalated:
                await self.announce(session, incident, "escalated", {"missed": missed})
            active = await session.scalars(
                select(Incident).where(Incident.status.in_([s.value for s in service.ACTIVE]))
            )
            for incident in active.all():
                if await service.reassess(session, incident, now=now, policy=self.policy):
                    await self.announce(session, incident, "severity", {})
            return [(incident.id, missed) for incident, missed in escalated]

    async def start(self) -> None:
        """Run :meth:`tick` every ``interval`` seconds until :meth:`stop`."""
        await self._loop.start()

    async def stop(self) -> None:
        """Stop the clock."""
        await self._loop.stop()
