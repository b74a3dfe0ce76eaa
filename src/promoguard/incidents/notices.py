"""What people are told when an incident changes: notices for the notifications outbox.

Each change becomes one :class:`~promoguard.notify.service.Notice`, queued in the change's own
transaction (so it goes out exactly when the change lands, and once: its key is unique per
incident and change). The team gets the ``team_incident_*`` templates by email and SMS, every
configured webhook gets the event as signed JSON.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.incidents.desk import Announce
from promoguard.incidents.grading import Impact
from promoguard.incidents.models import Incident, IncidentStatus
from promoguard.notify.service import Notice, Notifications, Recipient

__all__ = ["announcer", "notice_for"]


def _facts(incident: Incident) -> dict[str, Any]:
    impact = Impact.from_dict(incident.impact)
    return {
        "incident_id": incident.id,
        "severity": incident.severity,
        "title": incident.title,
        "status": incident.status,
        "orders_affected": impact.orders_affected,
        "customers_affected": impact.customers_affected,
        "money_at_stake": impact.money_at_stake,
        "currency": "CNY",
    }


def notice_for(incident: Incident, event: str, detail: dict[str, Any]) -> Notice:
    """The notice for ``event`` (``opened``, ``severity``, ``escalated``, ``status``,
    ``update``) on ``incident``."""
    facts = _facts(incident)
    if event == "opened":
        return Notice(
            key=f"incident:{incident.id}:opened",
            event="incident.opened",
            data={
                **facts,
                "summary": incident.summary or incident.title,
                "acknowledge_by": incident.ack_due_at,
                "respond_by": incident.respond_due_at,
            },
            team_template="team_incident_opened",
        )
    if event == "escalated":
        return Notice(
            key=f"incident:{incident.id}:escalated:{incident.escalation_level}:"
            f"{detail.get('missed')}:{incident.ack_due_at.isoformat()}",
            event="incident.escalated",
            data={
                **facts,
                "missed": detail.get("missed", "acknowledge"),
                "deadline": detail.get("due", incident.ack_due_at),
                "level": incident.escalation_level + 1,
            },
            team_template="team_incident_escalated",
        )
    if event == "status" and incident.status == IncidentStatus.RESOLVED:
        return Notice(
            key=f"incident:{incident.id}:resolved",
            event="incident.resolved",
            data={**facts, "summary": incident.summary or incident.title},
            team_template="team_incident_resolved",
        )
    if event == "severity":
        message = f"severity is now {incident.severity}"
        key = f"incident:{incident.id}:severity:{incident.severity}"
    elif event == "status":
        message = f"status is now {incident.status}"
        key = f"incident:{incident.id}:status:{incident.status}"
    else:
        message = str(detail.get("message", ""))
        key = f"incident:{incident.id}:{event}:{uuid.uuid4().hex}"
    customers = [
        Recipient(
            locale=c.get("locale", "zh"),
            email=c.get("email"),
            phone=c.get("phone"),
            device=c.get("device"),
            context={"order_id": c["order_id"]},
        )
        for c in detail.get("customers", [])
    ]
    return Notice(
        key=key,
        event=f"incident.{event}",
        data={**facts, "message": message},
        team_template="team_incident_update",
        customer_template="customer_incident_update" if customers else None,
        customers=customers,
    )


def announcer(notifications: Notifications) -> Announce:
    """The desk's ``announce``: queue the change's notice in its transaction."""

    async def announce(
        session: AsyncSession, incident: Incident, event: str, detail: dict[str, Any]
    ) -> None:
        await notifications.queue(session, notice_for(incident, event, detail))

    return announce
