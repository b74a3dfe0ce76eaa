"""The incidents tables: one row per incident, and its own timeline of events (append-only).

The campaign moves made during an incident (pause, rollback, …) are not copied here: they are in
the audit log already, and the incident's timeline merges them in (see
:func:`promoguard.incidents.service.timeline`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["Incident", "IncidentEvent", "IncidentStatus", "Severity"]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class Severity(StrEnum):
    """P0 is the worst."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 for P0 … 3 for P3: lower is worse."""
        return int(self.value[1])


class IncidentStatus(StrEnum):
    """``open → acknowledged → mitigated → resolved → reviewed`` (forward only)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"
    REVIEWED = "reviewed"


class Incident(Base):
    """One incident: what went wrong, how bad, who must act by when, and what was learned."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN, index=True)
    severity: Mapped[str] = mapped_column(String(2))
    computed_severity: Mapped[str] = mapped_column(String(2))
    """What the impact alone grades (the severity may be higher, raised by hand or by an
    alert)."""
    versions: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)
    """The campaign versions involved: ``[[campaign_id, version], …]``."""
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    impact: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The last measured :class:`~promoguard.incidents.grading.Impact`."""
    reported: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Impact entered by people (outages, figures the store cannot see)."""
    opened_by: Mapped[str] = mapped_column(String(128))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    mitigated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ack_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    respond_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    """The on-call level now responsible: 0 is the first."""
    plan_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The remediation plan, once there is one."""
    summary: Mapped[str] = mapped_column(Text, default="")
    root_cause: Mapped[str] = mapped_column(Text, default="")
    contributing_factors: Mapped[list[str]] = mapped_column(JSON, default=list)
    action_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """``[{"what", "owner", "due"}, …]``."""


class IncidentEvent(Base):
    """One entry of an incident's own timeline: automatic or written by a person."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    """``opened``, ``alert``, ``acknowledged``, ``status``, ``severity``, ``escalated``,
    ``impact``, ``note``, ``update`` (a status update for customers), ``postmortem``, …"""
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(IncidentEvent, "before_update")
@event.listens_for(IncidentEvent, "before_delete")
def _append_only(*_: Any) -> None:
    raise RuntimeError("an incident's timeline is append-only")
