"""Alerts, incidents (opened by hand, deadlines, severity, timeline, status updates),
remediation plans (totals, decision, execution and its progress) and post-mortems (the report
and the people's part of it: summary, root cause, contributing factors, action items)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import PromoguardError
from promoguard.incidents import report
from promoguard.incidents import service as incidents
from promoguard.incidents.desk import IncidentDesk
from promoguard.incidents.models import Incident, IncidentStatus, Severity
from promoguard.incidents.routes import OpenIn, PostmortemIn, SeverityIn
from promoguard.monitoring.models import AlertRecord
from promoguard.plans import service as plans
from promoguard.plans.jobs import PlanQueue
from promoguard.plans.models import RemediationItem, RemediationPlan
from promoguard.remediation.policy import RemediationPolicy
from promoguard.security.keys import Role
from promoguard.ui.common import (
    Operator,
    act,
    form_body,
    html_route,
    page,
    refusal,
    render,
    secure_headers,
    services,
)

router = APIRouter()

ORDER = [s.value for s in IncidentStatus]


def next_deadline(incident: Incident) -> tuple[str, datetime] | None:
    """What the team must do next and by when: acknowledge while open, mitigate until then."""
    if incident.status == IncidentStatus.OPEN:
        return "acknowledge", incident.ack_due_at
    if incident.status == IncidentStatus.ACKNOWLEDGED:
        return "mitigate", incident.respond_due_at
    return None


def _desk(request: Request) -> IncidentDesk:
    desk: IncidentDesk = request.app.state.incidents
    return desk


@html_route(router, "/ui/alerts")
async def alerts(request: Request) -> Response:
    """What the detectors raised, newest first."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    async with services(request).db.read() as session:
        rows = await session.scalars(select(AlertRecord).order_by(AlertRecord.id.desc()).limit(200))
        found = list(rows.all())
    return render(request, "alerts.html.j2", alerts=found)


@html_route(router, "/ui/incidents")
async def incident_list(request: Request) -> Response:
    """Incidents, newest first, with what is due next."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    async with services(request).db.read() as session:
        rows = await session.scalars(select(Incident).order_by(Incident.id.desc()).limit(200))
        found = [(i, next_deadline(i)) for i in rows.all()]
    return render(
        request, "incidents.html.j2", incidents=found, severities=[s.value for s in Severity]
    )


def _versions(text: str) -> list[dict[str, Any]]:
    """``"mj:1, cp:2"`` as the API's list of campaign versions (checked by its model)."""
    found = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            campaign_id, _, version = part.strip().rpartition(":")
            found.append({"campaign_id": campaign_id.strip(), "version": version.strip()})
    return found


@html_route(router, "/ui/incidents", "POST")
async def open_incident(request: Request) -> Response:
    """Open an incident by hand (its impact measured and graded, never better than the floor)."""
    desk = _desk(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        body = form_body(
            OpenIn,
            {
                "title": fields.get("title", ""),
                "summary": fields.get("summary", ""),
                "severity": fields.get("severity") or Severity.P3,
                "versions": _versions(fields.get("versions", "")),
            },
        )
        async with services(request).db.write() as session:
            found = await incidents.open_incident(
                session,
                title=body.title,
                actor=op.key_id,
                now=datetime.now(UTC),
                policy=desk.policy,
                versions=[(v.campaign_id, v.version) for v in body.versions],
                floor=body.severity,
                message=body.summary,
            )
            await desk.announce(session, found, "opened", {})
            opened, severity = found.id, found.severity
        request.state.next_page = f"/ui/incidents/{opened}"
        return f"Incident #{opened} opened as {severity}."

    return await act(request, (Role.OPERATOR,), "/ui/incidents", work)


async def _plans_of(session: AsyncSession, incident_id: int) -> list[RemediationPlan]:
    rows = await session.scalars(
        select(RemediationPlan)
        .where(RemediationPlan.incident_id == incident_id)
        .order_by(RemediationPlan.id.desc())
    )
    return list(rows.all())


@html_route(router, "/ui/incidents/{incident_id:int}")
async def incident_page(request: Request, incident_id: int) -> Response:
    """One incident: severity, the next deadline, the timeline, the forms that move it."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        async with services(request).db.read() as session:
            found = await incidents.get(session, incident_id)
            story = await incidents.timeline(session, found)
            its_plans = await _plans_of(session, incident_id)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    later = ORDER[ORDER.index(found.status) + 1 :] if found.status in ORDER else []
    return render(
        request,
        "incident.html.j2",
        incident=found,
        deadline=next_deadline(found),
        timeline=story,
        plans=its_plans,
        next_states=later,
        severities=[s.value for s in Severity],
    )


async def _change(request: Request, incident_id: int, event: str, change: Any) -> None:
    """Change an incident in one transaction and announce it, as the API does."""
    desk = _desk(request)
    async with services(request).db.write() as session:
        found = await incidents.get(session, incident_id, lock=True)
        await change(session, found)
        if event:
            await desk.announce(session, found, event, {})


@html_route(router, "/ui/incidents/{incident_id:int}/acknowledge", "POST")
async def acknowledge(request: Request, incident_id: int) -> Response:
    """Take the incident: stops the acknowledge clock."""

    async def work(op: Operator, fields: dict[str, str]) -> str:
        async def change(session: AsyncSession, found: Incident) -> None:
            await incidents.acknowledge(
                session,
                found,
                actor=op.key_id,
                now=datetime.now(UTC),
                message=fields.get("message", "")[:4000],
            )

        await _change(request, incident_id, "status", change)
        return f"Incident {incident_id} acknowledged."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}", work)


@html_route(router, "/ui/incidents/{incident_id:int}/status", "POST")
async def move(request: Request, incident_id: int) -> Response:
    """Move the incident forward (mitigated, resolved, reviewed)."""

    async def work(op: Operator, fields: dict[str, str]) -> str:
        try:
            status = IncidentStatus(fields.get("status", ""))
        except ValueError:
            return f"{fields.get('status')!r} is not an incident state."

        async def change(session: AsyncSession, found: Incident) -> None:
            await incidents.move(
                session,
                found,
                status,
                actor=op.key_id,
                now=datetime.now(UTC),
                message=fields.get("message", "")[:4000],
            )

        await _change(request, incident_id, "status", change)
        return f"Incident {incident_id} is {status} now."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}", work)


@html_route(router, "/ui/incidents/{incident_id:int}/severity", "POST")
async def severity(request: Request, incident_id: int) -> Response:
    """Raise the severity, or lower it with a reason (the deadlines follow)."""
    desk = _desk(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        body = form_body(
            SeverityIn, {"severity": fields.get("severity", ""), "reason": fields.get("reason", "")}
        )

        async def change(session: AsyncSession, found: Incident) -> None:
            await incidents.set_severity(
                session,
                found,
                body.severity,
                actor=op.key_id,
                now=datetime.now(UTC),
                policy=desk.policy,
                reason=body.reason,
            )

        await _change(request, incident_id, "severity", change)
        return f"Incident {incident_id} is {body.severity} now."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}", work)


@html_route(router, "/ui/incidents/{incident_id:int}/notes", "POST")
async def note(request: Request, incident_id: int) -> Response:
    """A note on the timeline, or a status update the team and the webhooks are told."""
    desk = _desk(request)

    async def work(op: Operator, fields: dict[str, str]) -> str:
        message = fields.get("message", "")[:4000]
        kind = "update" if fields.get("kind") == "update" else "note"
        if not message:
            return "Nothing to add: the message was empty."
        async with services(request).db.write() as session:
            found = await incidents.get(session, incident_id, lock=True)
            incidents.add_event(
                session, found, actor=op.key_id, kind=kind, message=message, now=datetime.now(UTC)
            )
            if kind == "update":
                await desk.announce(session, found, "update", {"message": message, "customers": []})
        return "Status update sent." if kind == "update" else "Note added."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}", work)


@html_route(router, "/ui/incidents/{incident_id:int}/plans", "POST")
async def draft_plan(request: Request, incident_id: int) -> Response:
    """Draft the incident's remediation plan (find, re-price, classify)."""
    svc = services(request)

    async def work(op: Operator, _: dict[str, str]) -> str:
        policy = RemediationPolicy.model_validate(svc.settings.remediation_policy)
        async with svc.db.read() as session:
            found = await incidents.get(session, incident_id)
            built = await plans.draft_plan(
                session, found, policy, max_discount_ratio=svc.settings.max_discount_ratio
            )
        async with svc.db.write() as session:
            plan = await plans.save_draft(session, built, actor=op.key_id, now=datetime.now(UTC))
            return f"Plan {plan.id} drafted: {plan.items_total} items."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}", work)


@html_route(router, "/ui/postmortems")
async def postmortems(request: Request) -> Response:
    """Every incident's post-mortem."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    async with services(request).db.read() as session:
        rows = await session.scalars(select(Incident).order_by(Incident.id.desc()).limit(200))
        found = list(rows.all())
    return render(request, "postmortems.html.j2", incidents=found)


@html_route(router, "/ui/incidents/{incident_id:int}/postmortem")
async def postmortem(request: Request, incident_id: int) -> Response:
    """The post-mortem report of an incident, in the dashboard."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        async with services(request).db.read() as session:
            found = await incidents.get(session, incident_id)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    return render(
        request,
        "postmortem.html.j2",
        incident=found,
        factors="\n".join(found.contributing_factors or []),
        actions="\n".join(_action_line(a) for a in found.action_items or []),
    )


def _action_line(item: dict[str, Any]) -> str:
    parts = [str(item.get("what", "")), str(item.get("owner", ""))]
    return " | ".join([*parts, str(item["due"])] if item.get("due") else parts)


def _action_items(text: str) -> list[dict[str, Any]]:
    """One action item a line: ``what | owner | due`` (due optional)."""
    found = []
    for line in text.splitlines():
        if line.strip():
            parts = [p.strip() for p in line.split("|")]
            item: dict[str, Any] = {"what": parts[0], "owner": parts[1] if len(parts) > 1 else ""}
            if len(parts) > 2 and parts[2]:
                item["due"] = parts[2]
            found.append(item)
    return found


@html_route(router, "/ui/incidents/{incident_id:int}/postmortem", "POST")
async def edit_postmortem(request: Request, incident_id: int) -> Response:
    """Write the people's part of the post-mortem: summary, root cause, contributing factors,
    action items (as ``PUT /v1/incidents/{id}/postmortem``)."""

    async def work(op: Operator, fields: dict[str, str]) -> str:
        body = form_body(
            PostmortemIn,
            {
                "summary": fields.get("summary", ""),
                "root_cause": fields.get("root_cause", ""),
                "contributing_factors": [
                    f.strip() for f in fields.get("factors", "").splitlines() if f.strip()
                ],
                "action_items": _action_items(fields.get("actions", "")),
            },
        )

        async def change(session: AsyncSession, found: Incident) -> None:
            await incidents.update_postmortem(
                session,
                found,
                actor=op.key_id,
                now=datetime.now(UTC),
                fields=body.model_dump(exclude_none=True),
            )

        await _change(request, incident_id, "", change)
        return f"Post-mortem of incident {incident_id} saved."

    return await act(request, (Role.OPERATOR,), f"/ui/incidents/{incident_id}/postmortem", work)


@html_route(router, "/ui/incidents/{incident_id:int}/report")
async def report_html(request: Request, incident_id: int) -> Response:
    """The report as the incident package renders it (HTML), shown in the post-mortem page."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        async with services(request).db.read() as session:
            data = await report.gather(session, await incidents.get(session, incident_id))
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    response = HTMLResponse(report.render(data, "html"))
    # The report carries its own inline style: a policy of its own, framed by this site only.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@html_route(router, "/ui/plans")
async def plan_list(request: Request) -> Response:
    """Remediation plans, newest first."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    async with services(request).db.read() as session:
        rows = await session.scalars(
            select(RemediationPlan).order_by(RemediationPlan.id.desc()).limit(200)
        )
        found = list(rows.all())
    return render(request, "plans.html.j2", plans=found)


async def _plan_data(request: Request, plan_id: int) -> dict[str, Any]:
    async with services(request).db.read() as session:
        plan = await plans.get_plan(session, plan_id)
        progress = await plans.progress(session, plan)
        rows = await session.scalars(
            select(RemediationItem)
            .where(RemediationItem.plan_id == plan_id)
            .order_by(RemediationItem.id)
            .limit(50)
        )
        return {"plan": plan, "progress": progress, "items": list(rows.all())}


@html_route(router, "/ui/plans/{plan_id:int}")
async def plan_page(request: Request, plan_id: int) -> Response:
    """A plan: totals by class and action, the decision, the execution's progress."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        data = await _plan_data(request, plan_id)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    return render(request, "plan.html.j2", **data)


@html_route(router, "/ui/plans/{plan_id:int}/progress")
async def plan_progress(request: Request, plan_id: int) -> Response:
    """The progress part of a plan's page (the page polls it while the plan runs)."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        data = await _plan_data(request, plan_id)
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    response = render(request, "progress.html.j2", **data)
    secure_headers(response)
    return response


@html_route(router, "/ui/plans/{plan_id:int}/decision", "POST")
async def decide_plan(request: Request, plan_id: int) -> Response:
    """Approve or reject a draft plan (someone other than its author)."""

    async def work(op: Operator, fields: dict[str, str]) -> str:
        approve = fields.get("decision") == "approve"
        async with services(request).db.write() as session:
            plan = await plans.get_plan(session, plan_id, lock=True)
            await plans.decide(
                session,
                plan,
                approve=approve,
                actor=op.key_id,
                owner=op.owner,
                reason=fields.get("reason", "")[:1000],
                now=datetime.now(UTC),
            )
        return f"Plan {plan_id} {'approved' if approve else 'rejected'}."

    return await act(request, (Role.APPROVER, Role.OPERATOR), f"/ui/plans/{plan_id}", work)


@html_route(router, "/ui/plans/{plan_id:int}/execute", "POST")
async def execute_plan(request: Request, plan_id: int) -> Response:
    """Queue an approved plan's execution (the worker runs it; the page shows its progress)."""

    async def work(_: Operator, __: dict[str, str]) -> str:
        async with services(request).db.read() as session:
            plan = await plans.get_plan(session, plan_id)
        if plan.status not in ("approved", "executing"):
            return f"Plan {plan_id} is {plan.status}: only an approved plan runs."
        queue: PlanQueue | None = getattr(request.app.state, "plan_queue", None)
        if queue is None:
            queue = request.app.state.plan_queue = PlanQueue(services(request).settings)
        queue.enqueue(plan_id)
        return f"Plan {plan_id} queued: the worker executes it."

    return await act(request, (Role.OPERATOR,), f"/ui/plans/{plan_id}", work)
