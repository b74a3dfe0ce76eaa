"""Incidents: open (by hand or from an alert), measure and grade, move through their states,
escalate on missed deadlines, and tell their story (the timeline).

Every function works in the caller's session (one transaction) and takes the time as ``now``,
so tests drive the clocks without sleeping. Each change adds an :class:`IncidentEvent` and an
audit entry in the same transaction.

**Measuring** (:func:`measure`): the orders an incident's campaign versions discounted since its
window started — orders, customers, the discount those versions gave, and the customers active
in the window (the share's denominator). *Beyond intent* is estimated per order as the version's
discount above the campaign's expected discount per order (its expected profile's p95) when the
version is not the one that profile came from; otherwise (no profile, or the faulty version is
the profiled one, as when a dependency mis-prices it) the whole discount given is counted as at
stake, an upper bound until remediation re-prices the orders.

**Grading**: the severity is the worse of the impact's grade and any floor (an alert rule's
severity, a person raising it). Impact is re-measured (:func:`reassess`) as orders arrive; a
worse grade raises the severity, tightens the deadlines and is recorded; it is never lowered on
its own. People may raise it freely; lowering needs a reason.

**Escalation** (:func:`check_deadlines`): an incident not acknowledged by its acknowledge
deadline, or not mitigated by its respond deadline, moves to the next on-call level (the last
level stays last), the miss is recorded, and the deadline is re-armed one period later, so an
incident nobody answers keeps escalating.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.audit import AuditEntry
from promoguard.campaigns.models import Campaign
from promoguard.errors import ConflictError, InvalidError, NotFoundError
from promoguard.incidents.grading import Impact, IncidentPolicy, deadlines, grade, worse
from promoguard.incidents.models import Incident, IncidentEvent, IncidentStatus, Severity
from promoguard.orders.models import Order, OrderDiscountRow

__all__ = [
    "ACTIVE",
    "ORDER",
    "acknowledge",
    "active_for_campaigns",
    "add_event",
    "check_deadlines",
    "get",
    "measure",
    "move",
    "open_incident",
    "reassess",
    "report_impact",
    "set_severity",
    "timeline",
    "update_postmortem",
    "versions_of",
]

ORDER = [s.value for s in IncidentStatus]
"""The states in their order: an incident only moves forward."""
ACTIVE = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.MITIGATED)
"""States in which an incident still takes new alerts and is re-measured."""

Version = tuple[str, int]


def versions_of(incident: Incident) -> list[Version]:
    """The campaign versions an incident is about."""
    return [(str(c), int(v)) for c, v in incident.versions]


def add_event(
    session: AsyncSession,
    incident: Incident,
    *,
    actor: str,
    kind: str,
    message: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> IncidentEvent:
    """Append to the incident's timeline (and the audit log)."""
    entry = IncidentEvent(
        incident_id=incident.id,
        at=now,
        actor=actor,
        kind=kind,
        message=message[:4000],
        detail=detail or {},
    )
    session.add(entry)
    audit.record(
        session,
        actor=actor,
        action=f"incident.{kind}",
        subject_type="incident",
        subject_id=str(incident.id),
        detail={"message": message[:500], **(detail or {})},
    )
    return entry


async def get(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident:
    """The incident, read fresh (and locked for the transaction when ``lock``), or 404."""
    incident = await session.get(
        Incident, incident_id, with_for_update=lock, populate_existing=lock
    )
    if incident is None:
        raise NotFoundError("incident_not_found", f"there is no incident {incident_id}")
    return incident


# -- measuring ----------------------------------------------------------------------------------


async def _expected_per_order(session: AsyncSession, versions: Sequence[Version]) -> dict[str, int]:
    """Per campaign whose faulty version is not its profiled one: the expected p95 discount per
    order."""
    campaigns = {c for c, _ in versions}
    if not campaigns:
        return {}
    rows = await session.execute(
        select(Campaign.id, Campaign.profile_version, Campaign.expected_profile).where(
            Campaign.id.in_(campaigns)
        )
    )
    faulty = defaultdict(set)
    for campaign_id, version in versions:
        faulty[campaign_id].add(version)
    expected: dict[str, int] = {}
    for campaign_id, profile_version, profile in rows.all():
        p95 = ((profile or {}).get("discount_per_order") or {}).get("p95")
        if isinstance(p95, int) and profile_version not in faulty[campaign_id]:
            expected[campaign_id] = p95
    return expected


async def measure(
    session: AsyncSession,
    versions: Sequence[Version],
    start: datetime,
    end: datetime | None,
) -> Impact:
    """What the versions did to orders created in ``[start, end]`` (see the module docstring)."""
    window = [Order.created_at >= start]
    if end is not None:
        window.append(Order.created_at <= end)
    active = await session.scalar(
        select(func.count(func.distinct(Order.customer_id))).where(*window)
    )
    if not versions:
        return Impact(active_customers=active or 0)
    rows = await session.execute(
        select(Order.id, Order.customer_id, OrderDiscountRow.rule_id, OrderDiscountRow.amount)
        .join(OrderDiscountRow, OrderDiscountRow.order_id == Order.id)
        .where(
            *window,
            tuple_(OrderDiscountRow.rule_id, OrderDiscountRow.rule_version).in_(list(versions)),
        )
    )
    expected = await _expected_per_order(session, versions)
    orders: set[str] = set()
    customers: set[str] = set()
    given = beyond = 0
    for order_id, customer_id, rule_id, amount in rows.all():
        orders.add(order_id)
        customers.add(customer_id)
        given += amount
        beyond += max(0, amount - expected[rule_id]) if rule_id in expected else amount
    return Impact(
        customers_affected=len(customers),
        active_customers=active or 0,
        orders_affected=len(orders),
        discount_given=given,
        beyond_intent=beyond,
    )


async def _first_order_at(session: AsyncSession, versions: Sequence[Version]) -> datetime | None:
    if not versions:
        return None
    first: datetime | None = await session.scalar(
        select(func.min(Order.created_at))
        .join(OrderDiscountRow, OrderDiscountRow.order_id == Order.id)
        .where(tuple_(OrderDiscountRow.rule_id, OrderDiscountRow.rule_version).in_(list(versions)))
    )
    return first


# -- opening --------------------------------------------------------------------------------------


async def open_incident(
    session: AsyncSession,
    *,
    title: str,
    actor: str,
    now: datetime,
    policy: IncidentPolicy,
    versions: Iterable[Version] = (),
    window_start: datetime | None = None,
    floor: Severity = Severity.P3,
    reported: Impact | None = None,
    message: str = "",
    detail: dict[str, Any] | None = None,
) -> Incident:
    """Open an incident: measured, graded (never better than ``floor``), its clocks started."""
    linked = sorted(set(versions))
    start = window_start or await _first_order_at(session, linked) or now
    impact = await measure(session, linked, start, None)
    if reported is not None:
        impact = impact.combined(reported)
    computed = grade(impact, policy)
    severity = worse(computed, floor)
    ack_due, respond_due = deadlines(severity, now, policy)
    incident = Incident(
        title=title[:200],
        status=IncidentStatus.OPEN,
        severity=severity,
        computed_severity=computed,
        versions=[list(v) for v in linked],
        window_start=start,
        impact=impact.as_dict(),
        reported=(reported or Impact()).as_dict(),
        opened_by=actor,
        opened_at=now,
        ack_due_at=ack_due,
        respond_due_at=respond_due,
        escalation_level=0,
        summary=message,
    )
    session.add(incident)
    await session.flush()
    add_event(
        session,
        incident,
        actor=actor,
        kind="opened",
        message=message or title,
        now=now,
        detail={
            "severity": severity,
            "computed_severity": computed,
            "impact": impact.as_dict(),
            "ack_due_at": ack_due.isoformat(),
            "respond_due_at": respond_due.isoformat(),
            **(detail or {}),
        },
    )
    return incident


async def active_for_campaigns(session: AsyncSession, campaigns: set[str]) -> Incident | None:
    """The newest active incident about one of these campaigns (an alert joins it)."""
    rows = await session.scalars(
        select(Incident)
        .where(Incident.status.in_([s.value for s in ACTIVE]))
        .order_by(Incident.id.desc())
    )
    for incident in rows.all():
        if campaigns & {c for c, _ in versions_of(incident)}:
            return incident
    return None


# -- grading --------------------------------------------------------------------------------------


def _rearm(incident: Incident, policy: IncidentPolicy) -> None:
    ack_due, respond_due = deadlines(Severity(incident.severity), incident.opened_at, policy)
    incident.ack_due_at = min(incident.ack_due_at, ack_due)
    incident.respond_due_at = min(incident.respond_due_at, respond_due)


async def reassess(
    session: AsyncSession,
    incident: Incident,
    *,
    now: datetime,
    policy: IncidentPolicy,
    actor: str = "promoguard",
) -> bool:
    """Measure again; a worse grade raises the severity (recorded). True when it was raised."""
    linked = versions_of(incident)
    measured = await measure(session, linked, incident.window_start, incident.window_end)
    impact = measured.combined(Impact.from_dict(incident.reported))
    incident.impact = impact.as_dict()
    computed = grade(impact, policy)
    incident.computed_severity = computed
    current = Severity(incident.severity)
    if computed.rank >= current.rank:
        return False
    incident.severity = computed
    _rearm(incident, policy)
    add_event(
        session,
        incident,
        actor=actor,
        kind="severity",
        message=f"raised from {current} to {computed}: the impact grew",
        now=now,
        detail={"from": current, "to": computed, "impact": impact.as_dict(), "auto": True},
    )
    return True


async def set_severity(
    session: AsyncSession,
    incident: Incident,
    severity: Severity,
    *,
    actor: str,
    now: datetime,
    policy: IncidentPolicy,
    reason: str = "",
) -> None:
    """Set by hand: raising needs nothing, lowering needs a reason."""
    current = Severity(incident.severity)
    if severity == current:
        return
    lowering = severity.rank > current.rank
    if lowering and not reason.strip():
        raise InvalidError(
            "reason_required",
            f"lowering an incident from {current} to {severity} needs a reason",
            errors=[("reason", "required when lowering the severity")],
        )
    incident.severity = severity
    if lowering:
        incident.ack_due_at, incident.respond_due_at = deadlines(
            severity, incident.opened_at, policy
        )
    else:
        _rearm(incident, policy)
    add_event(
        session,
        incident,
        actor=actor,
        kind="severity",
        message=f"{'lowered' if lowering else 'raised'} from {current} to {severity}"
        + (f": {reason}" if reason else ""),
        now=now,
        detail={"from": current, "to": severity, "reason": reason, "auto": False},
    )


async def report_impact(
    session: AsyncSession,
    incident: Incident,
    reported: Impact,
    *,
    actor: str,
    now: datetime,
    policy: IncidentPolicy,
) -> None:
    """Record impact people see and the store cannot (an outage, outside figures), then
    reassess."""
    incident.reported = reported.as_dict()
    add_event(
        session,
        incident,
        actor=actor,
        kind="impact",
        message="impact reported",
        now=now,
        detail={"reported": reported.as_dict()},
    )
    await reassess(session, incident, now=now, policy=policy, actor=actor)


# -- states ---------------------------------------------------------------------------------------

_STAMPS = {
    IncidentStatus.ACKNOWLEDGED: "acknowledged_at",
    IncidentStatus.MITIGATED: "mitigated_at",
    IncidentStatus.RESOLVED: "resolved_at",
    IncidentStatus.REVIEWED: "reviewed_at",
}


async def move(
    session: AsyncSession,
    incident: Incident,
    status: IncidentStatus,
    *,
    actor: str,
    now: datetime,
    message: str = "",
) -> None:
    """Move forward (skipped states are stamped too: mitigating acknowledges)."""
    current = IncidentStatus(incident.status)
    if ORDER.index(status) <= ORDER.index(current):
        raise ConflictError(
            "incident_state",
            f"incident {incident.id} is {current}: it cannot move to {status} "
            f"(states only move forward: {' → '.join(ORDER)})",
        )
    if status == IncidentStatus.REVIEWED and not incident.root_cause.strip():
        raise ConflictError(
            "postmortem_incomplete",
            "an incident is reviewed once its post-mortem names the root cause",
        )
    for passed in ORDER[ORDER.index(current) + 1 : ORDER.index(status) + 1]:
        stamp = _STAMPS[IncidentStatus(passed)]
        if getattr(incident, stamp) is None:
            setattr(incident, stamp, now)
    if status == IncidentStatus.RESOLVED and incident.window_end is None:
        incident.window_end = now
    incident.status = status
    add_event(
        session,
        incident,
        actor=actor,
        kind="status",
        message=f"{current} → {status}" + (f": {message}" if message else ""),
        now=now,
        detail={"from": current, "to": status},
    )


async def acknowledge(
    session: AsyncSession, incident: Incident, *, actor: str, now: datetime, message: str = ""
) -> None:
    """Someone has it."""
    await move(
        session, incident, IncidentStatus.ACKNOWLEDGED, actor=actor, now=now, message=message
    )


async def update_postmortem(
    session: AsyncSession,
    incident: Incident,
    *,
    actor: str,
    now: datetime,
    fields: dict[str, Any],
) -> None:
    """Set summary, root cause, contributing factors, action items (only those given)."""
    allowed = {"summary", "root_cause", "contributing_factors", "action_items"}
    for name, value in fields.items():
        if name in allowed and value is not None:
            setattr(incident, name, value)
    add_event(
        session,
        incident,
        actor=actor,
        kind="postmortem",
        message="post-mortem updated: " + ", ".join(sorted(k for k in fields if k in allowed)),
        now=now,
    )


# -- clocks ---------------------------------------------------------------------------------------


def _period(due: datetime, opened: datetime) -> timedelta:
    return max(due - opened, timedelta(minutes=1))


async def check_deadlines(
    session: AsyncSession, *, now: datetime, policy: IncidentPolicy
) -> list[tuple[Incident, str]]:
    """Escalate every incident past a deadline; returns ``(incident, "acknowledge"|"respond")``
    for each escalation made."""
    rows = await session.scalars(
        select(Incident)
        .where(
            or_(
                and_(Incident.status == IncidentStatus.OPEN, Incident.ack_due_at <= now),
                and_(
                    Incident.status.in_([IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED]),
                    Incident.respond_due_at <= now,
                ),
            )
        )
        .order_by(Incident.id)
        .with_for_update(skip_locked=True)
    )
    escalated: list[tuple[Incident, str]] = []
    top = len(policy.oncall) - 1
    for incident in rows.all():
        missed = (
            "acknowledge"
            if incident.status == IncidentStatus.OPEN and incident.ack_due_at <= now
            else "respond"
        )
        due = incident.ack_due_at if missed == "acknowledge" else incident.respond_due_at
        level = min(incident.escalation_level + 1, top)
        incident.escalation_level = level
        if missed == "acknowledge":
            incident.ack_due_at = now + _period(incident.ack_due_at, incident.opened_at)
        else:
            incident.respond_due_at = now + _period(incident.respond_due_at, incident.opened_at)
        add_event(
            session,
            incident,
            actor="promoguard",
            kind="escalated",
            message=f"{missed} deadline {due.isoformat()} missed: escalated to on-call level "
            f"{level + 1} ({', '.join(policy.oncall[level])})",
            now=now,
            detail={
                "missed": missed,
                "due": due.isoformat(),
                "level": level,
                "contacts": policy.oncall[level],
            },
        )
        escalated.append((incident, missed))
    return escalated


# -- the story ------------------------------------------------------------------------------------


async def timeline(session: AsyncSession, incident: Incident) -> list[dict[str, Any]]:
    """The incident's own events, plus what happened to its campaigns from its window on (the
    audit log: alerts fired, pauses, rollbacks, approvals), in time order."""
    own = await session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id)
        .order_by(IncidentEvent.at, IncidentEvent.id)
    )
    story: list[dict[str, Any]] = [
        {
            "at": e.at,
            "actor": e.actor,
            "kind": e.kind,
            "message": e.message,
            "detail": e.detail,
            "source": "incident",
        }
        for e in own.all()
    ]
    campaigns = sorted({c for c, _ in versions_of(incident)})
    if campaigns:
        moves = await session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.subject_type == "campaign",
                AuditEntry.subject_id.in_(campaigns),
                AuditEntry.at >= incident.window_start,
            )
            .order_by(AuditEntry.at, AuditEntry.id)
        )
        story += [
            {
                "at": m.at,
                "actor": m.actor,
                "kind": m.action,
                "message": _describe(m),
                "detail": m.detail,
                "source": "audit",
            }
            for m in moves.all()
        ]
    story.sort(key=lambda e: e["at"])
    return story


def _describe(entry: AuditEntry) -> str:
    detail = entry.detail or {}
    what = f"{entry.subject_id}: {entry.action.removeprefix('campaign.').replace('_', ' ')}"
    if entry.action == "alert.fired":
        return f"alert {detail.get('rule')} fired: {detail.get('message', '')}"
    reason = detail.get("reason")
    version = detail.get("version")
    return what + (f" v{version}" if version else "") + (f" ({reason})" if reason else "")
