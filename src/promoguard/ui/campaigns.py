"""Campaign pages: the list, one campaign (versions, lint findings, diffs, approvals, the live
chart, the timeline) and its actions (approve or reject a version, take an approved one live,
pause, resume, change the rollout, roll back to the previous version, end it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.audit import AuditEntry
from promoguard.campaigns import flows, review, service
from promoguard.campaigns.models import Campaign, CampaignVersion, VersionState
from promoguard.campaigns.routes import ActivateIn, ReasonIn, RolloutIn
from promoguard.errors import PromoguardError
from promoguard.monitoring.traffic import series, window
from promoguard.security.keys import Role
from promoguard.ui import charts
from promoguard.ui.common import (
    Operator,
    act,
    form_body,
    html_route,
    page,
    refusal,
    render,
    services,
)

router = APIRouter()

CHART_MINUTES = 60


@html_route(router, "/ui/campaigns")
async def campaigns(request: Request) -> Response:
    """Every campaign, newest first."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    async with services(request).db.read() as session:
        rows, total = await service.list_campaigns(
            session, status=None, kind=None, limit=500, offset=0
        )
        waiting = await session.scalars(
            select(CampaignVersion).where(CampaignVersion.state == VersionState.IN_REVIEW)
        )
        in_review: dict[str, list[int]] = {}
        for v in waiting.all():
            in_review.setdefault(v.campaign_id, []).append(v.version)
    return render(request, "campaigns.html.j2", campaigns=rows, total=total, in_review=in_review)


def _previous(version: CampaignVersion, campaign: Campaign) -> int | None:
    """The version a version is compared with: the live one, else the one before."""
    if campaign.live_version and campaign.live_version != version.version:
        return campaign.live_version
    return version.version - 1 if version.version > 1 else None


async def _version_view(
    session: AsyncSession, campaign: Campaign, version: CampaignVersion, specs: dict[int, Any]
) -> dict[str, Any]:
    against = _previous(version, campaign)
    changes = (
        [c.sentence() for c in review.diff_specs(specs[against], version.spec)]
        if against in specs
        else []
    )
    decided = await review.approvals(session, campaign_id=campaign.id, version=version.version)
    return {"row": version, "against": against, "changes": changes, "approvals": decided}


def _may_decide(op: Operator, view: dict[str, Any], required: list[str]) -> bool:
    row: CampaignVersion = view["row"]
    if row.state != VersionState.IN_REVIEW or op.role != Role.APPROVER:
        return False
    done = {a.department for a in view["approvals"]}
    return op.department in required and op.department not in done


@html_route(router, "/ui/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: str) -> Response:
    """One campaign: where it stands, its versions under review, its chart and timeline."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    svc = services(request)
    required: list[str] = list(svc.settings.review_departments)
    try:
        async with svc.db.read() as session:
            found = await service.get_campaign(session, campaign_id=campaign_id)
            versions = list(await service.list_versions(session, campaign_id=campaign_id))
            specs = {v.version: v.spec for v in versions}
            views = [await _version_view(session, found, v, specs) for v in reversed(versions)]
            timeline = await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.subject_type == "campaign", AuditEntry.subject_id == campaign_id)
                .order_by(AuditEntry.id.desc())
                .limit(30)
            )
            moves = list(timeline.all())
            traffic = await _traffic(session, found)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    for view in views:
        view["may_decide"] = _may_decide(op, view, required)
    return render(
        request,
        "campaign.html.j2",
        campaign=found,
        versions=views,
        required=required,
        timeline=moves,
        **traffic,
    )


async def _traffic(session: AsyncSession, found: Campaign) -> dict[str, Any]:
    since = window(CHART_MINUTES)
    rows = await series(session, found.id, since=since)
    minutes = charts.per_minute(rows, since, CHART_MINUTES)
    refs = charts.profile_references(found.expected_profile)
    orders = sum(m.orders for m in minutes)
    discount = sum(m.discount for m in minutes)
    listed = sum(m.list_total for m in minutes)
    return {
        "chart_minutes": CHART_MINUTES,
        "minutes": [m for m in minutes if m.orders or m.guard_trips],
        "orders_total": orders,
        "trips_total": sum(m.guard_trips for m in minutes),
        "discount_total": discount,
        "rate_bps": discount * 10_000 // listed if listed else 0,
        "refs": refs,
        "orders_chart": charts.line_chart(
            f"orders-{found.id}",
            "Orders per minute",
            minutes,
            [m.orders for m in minutes],
            unit="orders",
        ),
        "spend_chart": charts.line_chart(
            f"spend-{found.id}",
            "Discount spend per minute",
            minutes,
            [m.discount for m in minutes],
            unit="fen",
        ),
        "rate_chart": charts.line_chart(
            f"rate-{found.id}",
            "Realised discount rate per minute, against the expected profile",
            minutes,
            [m.rate_bps for m in minutes],
            unit="bps",
            refs=refs,
        ),
        "trips_chart": charts.line_chart(
            f"trips-{found.id}",
            "Guard trips per minute (quotes whose discount the guard cut)",
            minutes,
            [m.guard_trips for m in minutes],
            unit="trips",
        ),
    }


@html_route(router, "/ui/campaigns/{campaign_id}/traffic")
async def traffic(request: Request, campaign_id: str) -> Response:
    """The chart part of a campaign's page (the page polls it)."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        async with services(request).db.read() as session:
            found = await service.get_campaign(session, campaign_id=campaign_id)
            data = await _traffic(session, found)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    return render(request, "traffic.html.j2", campaign=found, **data)


@html_route(router, "/ui/campaigns/{campaign_id}/versions/{version:int}/decision", "POST")
async def decide(request: Request, campaign_id: str, version: int) -> Response:
    """An approver approves or rejects a version for their department."""
    svc = services(request)
    back = f"/ui/campaigns/{campaign_id}"

    async def work(op: Operator, fields: dict[str, str]) -> str:
        approve = fields.get("decision") == "approve"
        async with svc.db.write() as session:
            row, _ = await review.decide(
                session,
                campaign_id=campaign_id,
                version=version,
                approver=op.key_id,
                department=op.department,
                owner=op.owner,
                approve=approve,
                reason=fields.get("reason", "")[:500],
                required=list(svc.settings.review_departments),
            )
            state = row.state
        verb = "approved" if approve else "rejected"
        return f"Version {version} {verb} for {op.department}; it is {state} now."

    return await act(request, (Role.APPROVER,), back, work)


@html_route(router, "/ui/campaigns/{campaign_id}/pause", "POST")
async def pause(request: Request, campaign_id: str) -> Response:
    """The kill switch: stop pricing with the campaign now."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        reason = fields.get("reason", "")[:500] or "paused from the dashboard"
        async with svc.db.write() as session:
            await service.pause(session, campaign_id=campaign_id, actor=op.key_id, reason=reason)
        await svc.live.announce()
        return f"Campaign {campaign_id} paused: no quote discounts with it from now on."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)


@html_route(router, "/ui/campaigns/{campaign_id}/resume", "POST")
async def resume(request: Request, campaign_id: str) -> Response:
    """Take a paused campaign live again (its version, at its rollout)."""
    svc = services(request)

    async def work(op: Operator, _: dict[str, str]) -> str:
        async with svc.db.write() as session:
            await flows.go_live(
                session,
                settings=svc.settings,
                campaign_id=campaign_id,
                version=None,
                actor=op.key_id,
                now=datetime.now(UTC),
            )
        await svc.live.announce()
        return f"Campaign {campaign_id} is live again."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)


def _reason(fields: dict[str, str]) -> str:
    """The form's reason, as the API's body requires it (not empty, at most 500 characters)."""
    return form_body(ReasonIn, {"reason": fields.get("reason", "")}).reason


@html_route(router, "/ui/campaigns/{campaign_id}/rollout", "POST")
async def rollout(request: Request, campaign_id: str) -> Response:
    """Change the share of customers the live version prices for."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        body = form_body(
            RolloutIn, {"percent": fields.get("percent", ""), "reason": fields.get("reason", "")}
        )
        async with svc.db.write() as session:
            await service.set_rollout(
                session,
                campaign_id=campaign_id,
                rollout_bps=int(body.percent * 100),
                actor=op.key_id,
                reason=body.reason,
            )
        await svc.live.announce()
        return f"Campaign {campaign_id} now prices for {body.percent} % of customers."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)


@html_route(router, "/ui/campaigns/{campaign_id}/rollback", "POST")
async def rollback(request: Request, campaign_id: str) -> Response:
    """Make the version live before the current one live again."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        reason = _reason(fields)
        async with svc.db.write() as session:
            found = await service.rollback(
                session, campaign_id=campaign_id, actor=op.key_id, reason=reason
            )
            version = found.live_version
        await svc.live.announce()
        return f"Campaign {campaign_id} rolled back: version {version} is live again."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)


@html_route(router, "/ui/campaigns/{campaign_id}/end", "POST")
async def end(request: Request, campaign_id: str) -> Response:
    """End the campaign for good: it never prices again and takes no new versions."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        reason = _reason(fields)
        async with svc.db.write() as session:
            await service.end(session, campaign_id=campaign_id, actor=op.key_id, reason=reason)
        await svc.live.announce()
        return f"Campaign {campaign_id} ended: it prices no more."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)


@html_route(router, "/ui/campaigns/{campaign_id}/versions/{version:int}/activate", "POST")
async def activate(request: Request, campaign_id: str, version: int) -> Response:
    """Take an approved version live now, for a share of customers (as ``POST …/activate``)."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        body = form_body(
            ActivateIn, {"version": version, "rollout_percent": fields.get("percent") or None}
        )
        percent = body.rollout_percent
        async with svc.db.write() as session:
            found = await flows.go_live(
                session,
                settings=svc.settings,
                campaign_id=campaign_id,
                version=version,
                actor=op.key_id,
                now=datetime.now(UTC),
                rollout_bps=None if percent is None else int(percent * 100),
            )
            share = found.rollout_bps
        await svc.live.announce()
        return f"Version {version} of {campaign_id} is live for {share / 100:g} % of customers."

    return await act(request, (Role.OPERATOR,), f"/ui/campaigns/{campaign_id}", work)
