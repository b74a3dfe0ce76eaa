"""The post-mortem: an incident's story and numbers as Markdown or HTML.

:func:`gather` collects everything from the store — the incident, its timeline, impact in numbers
(customers, orders, discount given away and how much of it beyond intent, refunds paid for the
incident by remediation plans and customers' claims, compensation coupons given), the people's
part (summary, root cause, contributing factors, action items with owners) — and works out what
would have caught it earlier:

* **lint**: every warning the faulty versions had at review, with the acknowledgement that let
  them through (a warning made blocking would have stopped the version before it went live);
* **alert rules**: each alert that fired on the incident's campaigns, how long after the window
  opened and after how many affected orders.

:func:`render` fills ``templates/report.md.j2`` or ``report.html.j2`` (Jinja2, HTML
autoescaped).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.campaigns.models import CampaignVersion
from promoguard.incidents import service
from promoguard.incidents.grading import Impact
from promoguard.incidents.models import Incident
from promoguard.money import format_minor
from promoguard.monitoring.models import AlertRecord
from promoguard.orders.models import Order, OrderDiscountRow

__all__ = ["FORMATS", "gather", "render"]

FORMATS = ("markdown", "html")
Format = Literal["markdown", "html"]


def _yuan(amount: int) -> str:
    return f"¥{format_minor(amount)}"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _since(start: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else (moment - start).total_seconds()


async def _lint_catches(session: AsyncSession, incident: Incident) -> list[dict[str, Any]]:
    catches: list[dict[str, Any]] = []
    for campaign_id, version in service.versions_of(incident):
        row = await session.get(CampaignVersion, (campaign_id, version))
        if row is None:
            continue
        acknowledged = row.acknowledgements or {}
        for finding in row.findings or []:
            if finding.get("severity") != "warning":
                continue
            catches.append(
                {
                    "campaign_id": campaign_id,
                    "version": version,
                    "code": finding.get("code"),
                    "name": finding.get("name"),
                    "message": finding.get("message"),
                    "acknowledged": acknowledged.get(str(finding.get("code"))),
                }
            )
    return catches


async def _alert_catches(session: AsyncSession, incident: Incident) -> list[dict[str, Any]]:
    versions = service.versions_of(incident)
    campaigns = sorted({c for c, _ in versions})
    if not campaigns:
        return []
    alerts = await session.scalars(
        select(AlertRecord)
        .where(
            AlertRecord.campaign_id.in_(campaigns),
            AlertRecord.fired_at >= incident.window_start,
        )
        .order_by(AlertRecord.fired_at)
    )
    catches = []
    for alert in alerts.all():
        before = await session.scalar(
            select(func.count(func.distinct(Order.id)))
            .join(OrderDiscountRow, OrderDiscountRow.order_id == Order.id)
            .where(
                Order.created_at >= incident.window_start,
                Order.created_at <= alert.fired_at,
                tuple_(OrderDiscountRow.rule_id, OrderDiscountRow.rule_version).in_(versions),
            )
        )
        catches.append(
            {
                "rule": alert.rule,
                "severity": alert.severity,
                "subject": alert.subject,
                "message": alert.message,
                "after": _span(_since(incident.window_start, alert.fired_at)),
                "orders_before": before or 0,
                "outcome": alert.outcome,
            }
        )
    return catches


async def _paid(session: AsyncSession, incident: Incident) -> tuple[int, int]:
    """Refunds paid for this incident (succeeded payouts whose cause names it: plans and
    customers' claims alike) and the value of the compensation coupons its plans gave."""
    from promoguard.payments.models import Payout, PayoutStatus  # noqa: PLC0415
    from promoguard.plans.models import RemediationItem, RemediationPlan  # noqa: PLC0415

    refunds = await session.scalar(
        select(func.coalesce(func.sum(Payout.amount), 0)).where(
            Payout.status == PayoutStatus.SUCCEEDED.value,
            Payout.cause.startswith(f"incident:{incident.id}:", autoescape=True),
        )
    )
    coupons = await session.execute(
        select(RemediationItem.coupon)
        .join(RemediationPlan, RemediationPlan.id == RemediationItem.plan_id)
        .where(
            RemediationPlan.incident_id == incident.id,
            RemediationItem.coupon_id.is_not(None),
        )
    )
    given = sum(int((c or {}).get("value", 0)) for (c,) in coupons.all())
    return int(refunds or 0), given


async def gather(session: AsyncSession, incident: Incident) -> dict[str, Any]:
    """Everything the report shows, as plain data (the API's JSON report is this)."""
    impact = Impact.from_dict(incident.impact)
    start = incident.window_start
    story = await service.timeline(session, incident)
    refunds, compensation = await _paid(session, incident)
    return {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "severity": incident.severity,
        "computed_severity": incident.computed_severity,
        "versions": [f"{c} v{v}" for c, v in service.versions_of(incident)],
        "opened_at": incident.opened_at.isoformat(),
        "window_start": start.isoformat(),
        "window_end": incident.window_end.isoformat() if incident.window_end else None,
        "durations": {
            "to_open": _span(_since(start, incident.opened_at)),
            "to_acknowledge": _span(_since(incident.opened_at, incident.acknowledged_at)),
            "to_mitigate": _span(_since(incident.opened_at, incident.mitigated_at)),
            "to_resolve": _span(_since(incident.opened_at, incident.resolved_at)),
        },
        "escalation_level": incident.escalation_level,
        "impact": {
            "customers_affected": impact.customers_affected,
            "active_customers": impact.active_customers,
            "share_percent": f"{impact.share_bps // 100}.{impact.share_bps % 100:02d}",
            "orders_affected": impact.orders_affected,
            "discount_given": _yuan(impact.discount_given),
            "beyond_intent": _yuan(impact.beyond_intent),
            "refunds_paid": _yuan(refunds),
            "compensation_paid": _yuan(compensation),
            "checkout_down": impact.checkout_down,
            "payment_down": impact.payment_down,
        },
        "summary": incident.summary,
        "root_cause": incident.root_cause,
        "contributing_factors": list(incident.contributing_factors),
        "action_items": list(incident.action_items),
        "lint_catches": await _lint_catches(session, incident),
        "alert_catches": await _alert_catches(session, incident),
        "timeline": [
            {
                "at": e["at"].isoformat(timespec="seconds"),
                "actor": e["actor"],
                "kind": e["kind"],
                "message": e["message"],
            }
            for e in story
        ],
    }


_ENV = Environment(
    loader=PackageLoader("promoguard.incidents", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(data: dict[str, Any], fmt: Format = "markdown") -> str:
    """The report in ``fmt`` (``markdown`` or ``html``)."""
    name = "report.md.j2" if fmt == "markdown" else "report.html.j2"
    return _ENV.get_template(name).render(r=data)
