"""Campaign use cases: create, new version, activate / pause / end, and the live rule specs.

Service functions are keyword-only with the session first; they add to the caller's
transaction (audit entries included) and raise :mod:`promoguard.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignVersion,
    RulesStamp,
    VersionState,
)
from promoguard.coupons.models import CouponStock
from promoguard.errors import ConflictError, InvalidError, NotFoundError
from promoguard.promotions.rules import Rule, RuleSpecError, parse_rule
from promoguard.store.db import utcnow

__all__ = [
    "activate",
    "create_campaign",
    "default_version",
    "end",
    "end_closed",
    "get_campaign",
    "get_version",
    "list_campaigns",
    "list_versions",
    "live_rules",
    "live_specs",
    "new_version",
    "pause",
    "rollback",
    "rules_stamp",
    "schedule",
    "schedule_due",
    "set_rollout",
    "start_due",
]

ACTIVATABLE = {
    VersionState.APPROVED,
    VersionState.SCHEDULED,
    VersionState.PAUSED,
    VersionState.SUPERSEDED,
}
"""States a version can go live from: approved by review, or live before (paused, superseded —
resuming and rolling back need no second review). A draft must be submitted and approved."""

FULL_ROLLOUT = 10_000


def _validate(spec: dict[str, Any], *, campaign_id: str, version: int) -> Rule:
    """Check a spec; the server owns ``id`` and ``version`` (a mismatched id is refused)."""
    if spec.get("id", campaign_id) != campaign_id:
        raise InvalidError(
            "campaign_id_mismatch",
            f"the spec's id {spec.get('id')!r} is not the campaign's id {campaign_id!r}",
            errors=[("spec.id", "must equal the campaign id")],
        )
    try:
        return parse_rule({**spec, "id": campaign_id, "version": version})
    except RuleSpecError as exc:
        raise InvalidError(
            "invalid_rule",
            f"the rule spec is invalid: {exc}",
            errors=[(f"spec.{path}" if path else "spec", reason) for path, reason in exc.errors],
        ) from None


async def _bump_stamp(session: AsyncSession) -> None:
    await session.execute(
        update(RulesStamp)
        .where(RulesStamp.id == 1)
        .values(value=RulesStamp.value + 1, changed_at=utcnow())
    )


async def changed(
    session: AsyncSession, campaign: Campaign, *, action: str, actor: str, detail: dict[str, Any]
) -> Campaign:
    """Finish a lifecycle move: stamp it so every worker reloads the live rules, and audit it."""
    campaign.updated_at = utcnow()
    await _bump_stamp(session)
    audit.record(
        session,
        actor=actor,
        action=action,
        subject_type="campaign",
        subject_id=campaign.id,
        detail=detail,
    )
    return campaign


async def rules_stamp(session: AsyncSession) -> int:
    """The live rule set's version stamp: it goes up with every change to what is live."""
    value = await session.scalar(select(RulesStamp.value).where(RulesStamp.id == 1))
    return int(value or 0)


async def get_campaign(session: AsyncSession, *, campaign_id: str, lock: bool = False) -> Campaign:
    """The campaign, or ``campaign_not_found``.

    Every lifecycle move reads it with ``lock=True``: the row is locked for the rest of the
    transaction and read fresh, so two moves at once (two workers' monitors pausing, a rollback
    meeting an auto-pause) run one after the other on PostgreSQL and the second sees the first.
    SQLite serialises writing transactions anyway.
    """
    campaign = await session.get(
        Campaign,
        campaign_id,
        with_for_update=lock,
        populate_existing=lock,
    )
    if campaign is None:
        raise NotFoundError("campaign_not_found", f"no campaign {campaign_id!r}")
    return campaign


async def get_version(session: AsyncSession, *, campaign_id: str, version: int) -> CampaignVersion:
    """One version of a campaign, or ``version_not_found``."""
    row = await session.get(CampaignVersion, (campaign_id, version))
    if row is None:
        raise NotFoundError(
            "version_not_found", f"campaign {campaign_id!r} has no version {version}"
        )
    return row


async def create_campaign(
    session: AsyncSession, *, spec: dict[str, Any], author: str, name: str | None = None
) -> tuple[Campaign, CampaignVersion]:
    """Create a campaign in ``draft`` with its first version."""
    campaign_id = spec.get("id")
    if not isinstance(campaign_id, str):
        raise InvalidError(
            "invalid_rule", "the spec needs an id", errors=[("spec.id", "Field required")]
        )
    rule = _validate(spec, campaign_id=campaign_id, version=1)
    if await session.get(Campaign, rule.id) is not None:
        raise ConflictError("campaign_exists", f"campaign {rule.id!r} already exists")
    now = utcnow()
    campaign = Campaign(
        id=rule.id,
        name=name or rule.name or rule.id,
        kind=rule.kind,
        status=CampaignStatus.DRAFT,
        live_version=None,
        latest_version=1,
        created_by=author,
        created_at=now,
        updated_at=now,
    )
    version = CampaignVersion(
        campaign_id=rule.id,
        version=1,
        spec=rule.model_dump(mode="json"),
        state=VersionState.DRAFT,
        author=author,
        created_at=now,
    )
    session.add_all([campaign, version])
    await session.flush()
    audit.record(
        session,
        actor=author,
        action="campaign.created",
        subject_type="campaign",
        subject_id=rule.id,
        detail={"version": 1, "kind": rule.kind},
    )
    return campaign, version


async def new_version(
    session: AsyncSession, *, campaign_id: str, spec: dict[str, Any], author: str, note: str = ""
) -> CampaignVersion:
    """Add version n+1 as a draft. Earlier versions are never edited."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("campaign_ended", f"campaign {campaign_id!r} has ended")
    number = campaign.latest_version + 1
    rule = _validate(spec, campaign_id=campaign_id, version=number)
    if rule.kind != campaign.kind:
        raise InvalidError(
            "kind_changed",
            f"campaign {campaign_id!r} is a {campaign.kind}; a version cannot change the kind",
            errors=[("spec.kind", f"must be {campaign.kind}")],
        )
    # Conditional on the version we read, so two concurrent new versions cannot both be n+1.
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.latest_version == campaign.latest_version)
        .values(latest_version=number, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError("concurrent_change", "another version was added meanwhile; retry")
    version = CampaignVersion(
        campaign_id=campaign_id,
        version=number,
        spec=rule.model_dump(mode="json"),
        state=VersionState.DRAFT,
        author=author,
        note=note,
        created_at=utcnow(),
    )
    session.add(version)
    await session.flush()
    audit.record(
        session,
        actor=author,
        action="campaign.version_added",
        subject_type="campaign",
        subject_id=campaign_id,
        detail={"version": number, "note": note},
    )
    return version


def default_version(campaign: Campaign) -> int:
    """The version ``activate`` means when none is named: the paused one when the campaign is
    paused (resume), else the latest."""
    if campaign.status == CampaignStatus.PAUSED and campaign.live_version is not None:
        return campaign.live_version
    return campaign.latest_version


async def activate(
    session: AsyncSession,
    *,
    campaign_id: str,
    version: int | None,
    actor: str,
    rollout_bps: int | None = None,
    action: str = "campaign.activated",
    reason: str = "",
) -> Campaign:
    """Make a version live (the latest by default); the version live before is superseded.

    Activating an older version is a rollback; activating the paused live version resumes it
    (it is what ``version=None`` means while the campaign is paused).
    ``rollout_bps`` sets the share of customers it prices for (unchanged when None; a campaign
    starts at 100 %).
    """
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("campaign_ended", f"campaign {campaign_id!r} has ended")
    number = version or default_version(campaign)
    target = await get_version(session, campaign_id=campaign_id, version=number)
    if target.state == VersionState.LIVE:
        raise ConflictError("already_live", f"version {number} is already live")
    if target.state not in ACTIVATABLE:
        raise ConflictError(
            "invalid_transition", f"version {number} is {target.state}; it cannot go live"
        )
    previous = campaign.live_version
    before = {
        "status": campaign.status,
        "live_version": previous,
        "rollout_bps": campaign.rollout_bps,
    }
    if previous is not None and previous != number:
        old = await get_version(session, campaign_id=campaign_id, version=previous)
        old.state = VersionState.SUPERSEDED
        campaign.previous_version = previous
    target.state = VersionState.LIVE
    target.start_at = None
    campaign.status = CampaignStatus.LIVE
    campaign.live_version = number
    if rollout_bps is not None:
        campaign.rollout_bps = rollout_bps
    if campaign.kind == "coupon" and await session.get(CouponStock, campaign_id) is None:
        session.add(CouponStock(campaign_id=campaign_id, issued=0))
    return await changed(
        session,
        campaign,
        action=action,
        actor=actor,
        detail={
            "version": number,
            "reason": reason,
            "before": before,
            "after": {
                "status": campaign.status,
                "live_version": number,
                "rollout_bps": campaign.rollout_bps,
            },
        },
    )


async def rollback(session: AsyncSession, *, campaign_id: str, actor: str, reason: str) -> Campaign:
    """Make the version that was live before the current one live again, in one step."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    target = campaign.previous_version
    if target is None:
        raise ConflictError(
            "nothing_to_roll_back", f"campaign {campaign_id!r} has had no earlier live version"
        )
    return await activate(
        session,
        campaign_id=campaign_id,
        version=target,
        actor=actor,
        action="campaign.rolled_back",
        reason=reason,
    )


async def set_rollout(
    session: AsyncSession, *, campaign_id: str, rollout_bps: int, actor: str, reason: str = ""
) -> Campaign:
    """Change the share of customers a live (or paused) campaign prices for."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status not in (CampaignStatus.LIVE, CampaignStatus.PAUSED):
        raise ConflictError(
            "invalid_transition",
            f"campaign {campaign_id!r} is {campaign.status}; only a live campaign has a rollout",
        )
    before = campaign.rollout_bps
    campaign.rollout_bps = rollout_bps
    return await changed(
        session,
        campaign,
        action="campaign.rollout_changed",
        actor=actor,
        detail={
            "version": campaign.live_version,
            "reason": reason,
            "before": {"rollout_bps": before},
            "after": {"rollout_bps": rollout_bps},
        },
    )


async def schedule(
    session: AsyncSession,
    *,
    campaign_id: str,
    version: int,
    start_at: datetime,
    rollout_bps: int | None,
    actor: str,
) -> CampaignVersion:
    """Set an approved version to go live at ``start_at`` (the scheduler makes it live)."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("campaign_ended", f"campaign {campaign_id!r} has ended")
    target = await get_version(session, campaign_id=campaign_id, version=version)
    if target.state not in (VersionState.APPROVED, VersionState.SCHEDULED):
        raise ConflictError(
            "invalid_transition",
            f"version {version} is {target.state}; only an approved version is scheduled",
        )
    target.state = VersionState.SCHEDULED
    target.start_at = start_at
    target.start_rollout_bps = rollout_bps
    campaign.updated_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="campaign.scheduled",
        subject_type="campaign",
        subject_id=campaign_id,
        detail={"version": version, "start_at": start_at.isoformat(), "rollout_bps": rollout_bps},
    )
    return target


async def schedule_due(session: AsyncSession, *, now: datetime) -> bool:
    """Whether a scheduled version is due to start (a cheap read before a write)."""
    found = await session.scalar(
        select(CampaignVersion.version)
        .where(CampaignVersion.state == VersionState.SCHEDULED, CampaignVersion.start_at <= now)
        .limit(1)
    )
    return found is not None


async def start_due(session: AsyncSession, *, now: datetime) -> list[str]:
    """Make every scheduled version that is due live; returns what it did, one line each.

    Each version is claimed with a conditional update first, so when several workers run the
    scheduler at once only one of them starts it.
    """
    done = []
    due = await session.scalars(
        select(CampaignVersion)
        .where(CampaignVersion.state == VersionState.SCHEDULED, CampaignVersion.start_at <= now)
        .order_by(CampaignVersion.start_at, CampaignVersion.campaign_id)
    )
    for row in due.all():
        claimed = await session.execute(
            update(CampaignVersion)
            .where(
                CampaignVersion.campaign_id == row.campaign_id,
                CampaignVersion.version == row.version,
                CampaignVersion.state == VersionState.SCHEDULED,
            )
            .values(state=VersionState.APPROVED)
            .execution_options(synchronize_session="fetch")
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        await activate(
            session,
            campaign_id=row.campaign_id,
            version=row.version,
            actor="scheduler",
            rollout_bps=row.start_rollout_bps,
            reason="scheduled start",
        )
        done.append(f"{row.campaign_id} v{row.version} went live")
    return done


async def end_closed(session: AsyncSession, *, now: datetime) -> list[str]:
    """End every live campaign whose live version's window has closed (the engine already
    stopped pricing with it at that instant; this keeps the campaign's status true)."""
    done = []
    for campaign, spec in await _live_versions(session):
        until = parse_rule(spec).valid_until
        if until is not None and until <= now:
            await end(session, campaign_id=campaign.id, actor="scheduler", reason="window closed")
            done.append(f"{campaign.id} ended: its window closed at {until.isoformat()}")
    return done


async def _live_versions(session: AsyncSession) -> list[tuple[Campaign, dict[str, Any]]]:
    rows = await session.execute(
        select(Campaign, CampaignVersion.spec)
        .join(CampaignVersion, CampaignVersion.campaign_id == Campaign.id)
        .where(
            Campaign.status == CampaignStatus.LIVE,
            CampaignVersion.version == Campaign.live_version,
        )
        .order_by(Campaign.id)
    )
    return [(c, spec) for c, spec in rows.all()]


async def pause(session: AsyncSession, *, campaign_id: str, actor: str, reason: str) -> Campaign:
    """Take a live campaign out of pricing at once (the kill switch); activate resumes it."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status != CampaignStatus.LIVE or campaign.live_version is None:
        raise ConflictError(
            "invalid_transition", f"campaign {campaign_id!r} is {campaign.status}, not live"
        )
    live = await get_version(session, campaign_id=campaign_id, version=campaign.live_version)
    before = {"status": campaign.status, "version_state": live.state}
    live.state = VersionState.PAUSED
    campaign.status = CampaignStatus.PAUSED
    return await changed(
        session,
        campaign,
        action="campaign.paused",
        actor=actor,
        detail={
            "version": campaign.live_version,
            "reason": reason,
            "before": before,
            "after": {"status": campaign.status, "version_state": live.state},
        },
    )


async def end(session: AsyncSession, *, campaign_id: str, actor: str, reason: str) -> Campaign:
    """End a campaign for good: it never prices again and takes no new versions."""
    campaign = await get_campaign(session, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("invalid_transition", f"campaign {campaign_id!r} has already ended")
    before = {"status": campaign.status}
    if campaign.live_version is not None:
        live = await get_version(session, campaign_id=campaign_id, version=campaign.live_version)
        live.state = VersionState.ENDED
    campaign.status = CampaignStatus.ENDED
    return await changed(
        session,
        campaign,
        action="campaign.ended",
        actor=actor,
        detail={
            "version": campaign.live_version,
            "reason": reason,
            "before": before,
            "after": {"status": campaign.status},
        },
    )


async def list_campaigns(
    session: AsyncSession,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Campaign], int]:
    """Campaigns matching the filters, newest first, and how many match in all."""
    query = select(Campaign)
    if status is not None:
        query = query.where(Campaign.status == status)
    if kind is not None:
        query = query.where(Campaign.kind == kind)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Campaign.created_at.desc(), Campaign.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def list_versions(session: AsyncSession, *, campaign_id: str) -> Sequence[CampaignVersion]:
    """Every version of a campaign, oldest first."""
    await get_campaign(session, campaign_id=campaign_id)
    rows = await session.scalars(
        select(CampaignVersion)
        .where(CampaignVersion.campaign_id == campaign_id)
        .order_by(CampaignVersion.version)
    )
    return rows.all()


async def live_specs(session: AsyncSession) -> tuple[int, list[Rule], dict[str, int]]:
    """The stamp, the rule specs of every live campaign's live version, and the rollout of
    each campaign live for fewer than all customers (campaign id -> basis points)."""
    stamp = await rules_stamp(session)
    live = await _live_versions(session)
    rollout = {c.id: c.rollout_bps for c, _ in live if c.rollout_bps < FULL_ROLLOUT}
    return stamp, [parse_rule(spec) for _, spec in live], rollout


async def live_rules(session: AsyncSession) -> list[Rule]:
    """The rule specs live now."""
    return [parse_rule(spec) for _, spec in await _live_versions(session)]
