"""Campaign use cases: create, new version, activate / pause / end, and the live rule specs.

Service functions are keyword-only with the session first; they add to the caller's
transaction (audit entries included) and raise :mod:`promoguard.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "end",
    "get_campaign",
    "get_version",
    "list_campaigns",
    "list_versions",
    "live_specs",
    "new_version",
    "pause",
    "rules_stamp",
]

ACTIVATABLE = {
    VersionState.DRAFT,
    VersionState.APPROVED,
    VersionState.SCHEDULED,
    VersionState.PAUSED,
    VersionState.SUPERSEDED,
}
"""States a version can go live from. When review lands (a later issue), DRAFT leaves this set
unless the shop's configuration allows going live without approval."""


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


async def _changed(
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


async def get_campaign(session: AsyncSession, *, campaign_id: str) -> Campaign:
    """The campaign, or ``campaign_not_found``."""
    campaign = await session.get(Campaign, campaign_id)
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
    campaign = await get_campaign(session, campaign_id=campaign_id)
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


async def activate(
    session: AsyncSession, *, campaign_id: str, version: int | None, actor: str
) -> Campaign:
    """Make a version live (the latest by default); the version live before is superseded.

    Activating an older version is a rollback; activating the paused live version resumes it.
    """
    campaign = await get_campaign(session, campaign_id=campaign_id)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("campaign_ended", f"campaign {campaign_id!r} has ended")
    number = version or campaign.latest_version
    target = await get_version(session, campaign_id=campaign_id, version=number)
    if target.state == VersionState.LIVE:
        raise ConflictError("already_live", f"version {number} is already live")
    if target.state not in ACTIVATABLE:
        raise ConflictError(
            "invalid_transition", f"version {number} is {target.state}; it cannot go live"
        )
    previous = campaign.live_version
    before = {"status": campaign.status, "live_version": previous}
    if previous is not None and previous != number:
        old = await get_version(session, campaign_id=campaign_id, version=previous)
        old.state = VersionState.SUPERSEDED
    target.state = VersionState.LIVE
    campaign.status = CampaignStatus.LIVE
    campaign.live_version = number
    if campaign.kind == "coupon" and await session.get(CouponStock, campaign_id) is None:
        session.add(CouponStock(campaign_id=campaign_id, issued=0))
    return await _changed(
        session,
        campaign,
        action="campaign.activated",
        actor=actor,
        detail={
            "version": number,
            "before": before,
            "after": {"status": campaign.status, "live_version": number},
        },
    )


async def pause(session: AsyncSession, *, campaign_id: str, actor: str, reason: str) -> Campaign:
    """Take a live campaign out of pricing at once (the kill switch); activate resumes it."""
    campaign = await get_campaign(session, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.LIVE or campaign.live_version is None:
        raise ConflictError(
            "invalid_transition", f"campaign {campaign_id!r} is {campaign.status}, not live"
        )
    live = await get_version(session, campaign_id=campaign_id, version=campaign.live_version)
    before = {"status": campaign.status, "version_state": live.state}
    live.state = VersionState.PAUSED
    campaign.status = CampaignStatus.PAUSED
    return await _changed(
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
    campaign = await get_campaign(session, campaign_id=campaign_id)
    if campaign.status == CampaignStatus.ENDED:
        raise ConflictError("invalid_transition", f"campaign {campaign_id!r} has already ended")
    before = {"status": campaign.status}
    if campaign.live_version is not None:
        live = await get_version(session, campaign_id=campaign_id, version=campaign.live_version)
        live.state = VersionState.ENDED
    campaign.status = CampaignStatus.ENDED
    return await _changed(
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


async def live_specs(session: AsyncSession) -> tuple[int, list[Rule]]:
    """The stamp and the rule specs of every live campaign's live version."""
    stamp = await rules_stamp(session)
    rows = await session.scalars(
        select(CampaignVersion)
        .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
        .where(
            Campaign.status == CampaignStatus.LIVE,
            CampaignVersion.version == Campaign.live_version,
        )
        .order_by(CampaignVersion.campaign_id)
    )
    return stamp, [parse_rule(row.spec) for row in rows]
