"""``/v1/incidents``: open by hand, read, acknowledge, move, grade, note, post-mortem, report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from sqlalchemy import select

from promoguard.api import PROBLEMS, Actor, Svc, allow, not_bool, now
from promoguard.incidents import report, service
from promoguard.incidents.desk import IncidentDesk
from promoguard.incidents.grading import Impact
from promoguard.incidents.models import Incident, IncidentStatus, Severity
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/incidents", tags=["incidents"], responses=PROBLEMS)

_READERS = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)
IncidentId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_MONEY = 10**15


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Count = Annotated[int, Field(ge=0, le=10**9), BeforeValidator(not_bool)]
MinorUnits = Annotated[
    int, Field(ge=0, le=_MONEY, description="minor units"), BeforeValidator(not_bool)
]


def _date_time_text(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


When = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]


class VersionRef(_In):
    """One campaign version."""

    campaign_id: str = Field(min_length=1, max_length=64)
    version: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(not_bool)]


class ImpactIn(_In):
    """Impact people see that the store cannot (all optional)."""

    checkout_down: StrictBool = False
    payment_down: StrictBool = False
    customers_affected: Count = 0
    active_customers: Count = 0
    orders_affected: Count = 0
    beyond_intent: MinorUnits = 0
    refunds_owed: MinorUnits = 0

    def impact(self) -> Impact:
        return Impact(**self.model_dump())


class OpenIn(_In):
    """An incident opened by hand."""

    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(default="", max_length=4000)
    severity: Severity = Field(
        default=Severity.P3, description="at least this bad (the impact may grade it worse)"
    )
    versions: list[VersionRef] = Field(default_factory=list, max_length=50)
    window_start: When | None = None
    impact: ImpactIn | None = None


class MessageIn(_In):
    """A message for the timeline."""

    message: str = Field(default="", max_length=4000)


class StatusIn(MessageIn):
    """Move an incident forward."""

    status: IncidentStatus


class SeverityIn(_In):
    """Set the severity by hand (lowering needs a reason)."""

    severity: Severity
    reason: str = Field(default="", max_length=1000)


class CustomerIn(_In):
    """A customer to tell about a status update, in their language."""

    order_id: str = Field(min_length=1, max_length=64)
    locale: Literal["zh", "en"] = "zh"
    email: str | None = Field(
        default=None, max_length=254, pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+$"
    )
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 -]{5,31}$")
    device: str | None = Field(default=None, max_length=256, description="app-push token")


class NoteIn(_In):
    """A note, or a status update (``update``: the team, the webhooks and any ``customers``
    listed are told, each customer in their language)."""

    message: str = Field(min_length=1, max_length=4000)
    kind: Literal["note", "update"] = "note"
    customers: list[CustomerIn] = Field(
        default_factory=list, max_length=1000, description="only with kind=update"
    )


class ActionItem(_In):
    """Something to do so it does not happen again."""

    what: str = Field(min_length=1, max_length=500)
    owner: str = Field(min_length=1, max_length=128)
    due: str | None = Field(default=None, max_length=32)


class PostmortemIn(_In):
    """The people's part of the post-mortem (fields left out are kept)."""

    summary: str | None = Field(default=None, max_length=20_000)
    root_cause: str | None = Field(default=None, max_length=20_000)
    contributing_factors: list[Annotated[str, Field(max_length=2000)]] | None = Field(
        default=None, max_length=50
    )
    action_items: list[ActionItem] | None = Field(default=None, max_length=100)


class IncidentOut(BaseModel):
    """One incident."""

    id: int
    title: str
    status: str
    severity: str
    computed_severity: str
    versions: list[list[Any]]
    window_start: datetime
    window_end: datetime | None
    impact: dict[str, Any]
    reported: dict[str, Any]
    opened_by: str
    opened_at: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    reviewed_at: datetime | None
    ack_due_at: datetime
    respond_due_at: datetime
    escalation_level: int
    oncall: list[str] = Field(description="who the current escalation level tells")
    plan_id: str | None
    summary: str
    root_cause: str
    contributing_factors: list[str]
    action_items: list[dict[str, Any]]


class EventOut(BaseModel):
    """One timeline entry."""

    at: datetime
    actor: str
    kind: str
    message: str
    detail: dict[str, Any]
    source: Literal["incident", "audit"]


def _desk(request: Request) -> IncidentDesk:
    desk: IncidentDesk = request.app.state.incidents
    return desk


def _out(incident: Incident, desk: IncidentDesk) -> IncidentOut:
    oncall = desk.policy.oncall
    level = min(incident.escalation_level, len(oncall) - 1)
    return IncidentOut.model_validate(
        {
            **{c.key: getattr(incident, c.key) for c in Incident.__table__.columns},
            "oncall": oncall[level],
        }
    )


@router.post(
    "",
    status_code=201,
    summary="Open an incident by hand",
    dependencies=[allow(Role.OPERATOR, route="incident_open")],
)
async def open_incident(body: OpenIn, svc: Svc, actor: Actor, request: Request) -> IncidentOut:
    desk = _desk(request)
    async with svc.db.write() as session:
        incident = await service.open_incident(
            session,
            title=body.title,
            actor=actor,
            now=now(),
            policy=desk.policy,
            versions=[(v.campaign_id, v.version) for v in body.versions],
            window_start=body.window_start,
            floor=body.severity,
            reported=None if body.impact is None else body.impact.impact(),
            message=body.summary,
        )
        await desk.announce(session, incident, "opened", {})
        return _out(incident, desk)


@router.get(
    "",
    summary="Incidents, newest first",
    dependencies=[allow(*_READERS, route="incidents_read")],
)
async def incidents(
    svc: Svc,
    request: Request,
    status: Annotated[IncidentStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[IncidentOut]:
    query = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Incident.status == status)
    async with svc.db.read() as session:
        rows = await session.scalars(query)
        return [_out(i, _desk(request)) for i in rows.all()]


@router.get(
    "/{incident_id}",
    summary="One incident",
    dependencies=[allow(*_READERS, route="incidents_read")],
)
async def incident(incident_id: IncidentId, svc: Svc, request: Request) -> IncidentOut:
    async with svc.db.read() as session:
        return _out(await service.get(session, incident_id), _desk(request))


@router.get(
    "/{incident_id}/timeline",
    summary="Everything that happened, automatic and human, in time order",
    dependencies=[allow(*_READERS, route="incidents_read")],
)
async def timeline(incident_id: IncidentId, svc: Svc) -> list[EventOut]:
    async with svc.db.read() as session:
        story = await service.timeline(session, await service.get(session, incident_id))
        return [EventOut.model_validate(e) for e in story]


async def _change(
    svc: Svc, request: Request, incident_id: int, event: str, work: Any
) -> IncidentOut:
    desk = _desk(request)
    async with svc.db.write() as session:
        found = await service.get(session, incident_id, lock=True)
        await work(session, found, desk)
        if event:
            await desk.announce(session, found, event, {})
        return _out(found, desk)


@router.post(
    "/{incident_id}/acknowledge",
    summary="Take it: stops the acknowledge clock",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def acknowledge(
    incident_id: IncidentId, body: MessageIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    async def work(session: Any, found: Incident, _: IncidentDesk) -> None:
        await service.acknowledge(session, found, actor=actor, now=now(), message=body.message)

    return await _change(svc, request, incident_id, "status", work)


@router.post(
    "/{incident_id}/status",
    summary="Move forward: acknowledged, mitigated, resolved, reviewed",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def move(
    incident_id: IncidentId, body: StatusIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    async def work(session: Any, found: Incident, _: IncidentDesk) -> None:
        await service.move(
            session, found, body.status, actor=actor, now=now(), message=body.message
        )

    return await _change(svc, request, incident_id, "status", work)


@router.post(
    "/{incident_id}/severity",
    summary="Raise the severity (or lower it, with a reason)",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def severity(
    incident_id: IncidentId, body: SeverityIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    async def work(session: Any, found: Incident, desk: IncidentDesk) -> None:
        await service.set_severity(
            session,
            found,
            body.severity,
            actor=actor,
            now=now(),
            policy=desk.policy,
            reason=body.reason,
        )

    return await _change(svc, request, incident_id, "severity", work)


@router.post(
    "/{incident_id}/impact",
    summary="Report impact the store cannot see (an outage, outside figures); re-grades",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def impact(
    incident_id: IncidentId, body: ImpactIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    async def work(session: Any, found: Incident, desk: IncidentDesk) -> None:
        await service.report_impact(
            session, found, body.impact(), actor=actor, now=now(), policy=desk.policy
        )

    return await _change(svc, request, incident_id, "", work)


@router.post(
    "/{incident_id}/notes",
    summary="A note for the timeline, or a status update (kind=update) that people are told",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def note(
    incident_id: IncidentId, body: NoteIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    desk = _desk(request)
    async with svc.db.write() as session:
        found = await service.get(session, incident_id, lock=True)
        service.add_event(
            session, found, actor=actor, kind=body.kind, message=body.message, now=now()
        )
        if body.kind == "update":
            customers = [c.model_dump() for c in body.customers]
            await desk.announce(
                session, found, "update", {"message": body.message, "customers": customers}
            )
        return _out(found, desk)


@router.put(
    "/{incident_id}/postmortem",
    summary="Summary, root cause, contributing factors, action items",
    dependencies=[allow(Role.OPERATOR, route="incident_change")],
)
async def postmortem(
    incident_id: IncidentId, body: PostmortemIn, svc: Svc, actor: Actor, request: Request
) -> IncidentOut:
    async def work(session: Any, found: Incident, _: IncidentDesk) -> None:
        await service.update_postmortem(
            session, found, actor=actor, now=now(), fields=body.model_dump(exclude_none=True)
        )

    return await _change(svc, request, incident_id, "", work)


@router.get(
    "/{incident_id}/report",
    summary="The post-mortem report: Markdown (default), HTML or JSON",
    dependencies=[allow(*_READERS, route="incidents_read")],
    response_model=None,
    responses={200: {"content": {"text/markdown": {}, "text/html": {}, "application/json": {}}}},
)
async def incident_report(
    incident_id: IncidentId,
    svc: Svc,
    format: Annotated[Literal["markdown", "html", "json"], Query()] = "markdown",
) -> Response | dict[str, Any]:
    async with svc.db.read() as session:
        data = await report.gather(session, await service.get(session, incident_id))
    if format == "json":
        return data
    if format == "html":
        return HTMLResponse(report.render(data, "html"))
    return PlainTextResponse(report.render(data, "markdown"), media_type="text/markdown")
