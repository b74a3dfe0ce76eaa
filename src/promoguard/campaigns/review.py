"""Review: lint on submission, one approval per required department, and readable diffs.

A version goes ``draft → in_review`` when its author submits it: lint runs against the live rule
set and the stored catalogue; an error blocks the submission and every warning needs a written
acknowledgement. Then one approver from each required department (``PROMOGUARD_REVIEW_DEPARTMENTS``,
default marketing, engineering and product) approves it; the author may not approve their own
version, and one rejection ends it (``rejected``: the author writes a new version). When the last
required department approves, the version is ``approved`` and may be scheduled or go live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.campaigns.catalogue import get_catalogue
from promoguard.campaigns.models import Approval, CampaignVersion, VersionState
from promoguard.campaigns.service import get_campaign, get_version, live_rules
from promoguard.errors import ConflictError, ForbiddenError, InvalidError
from promoguard.promotions.lint import Finding, LintConfig, Severity, lint
from promoguard.promotions.rules import parse_rule
from promoguard.security.models import ApiKey
from promoguard.settings import Settings
from promoguard.store.db import utcnow

__all__ = [
    "Change",
    "approvals",
    "decide",
    "diff_specs",
    "lint_config",
    "lint_version",
    "submit",
]


def lint_config(settings: Settings) -> LintConfig:
    """The lint thresholds the shop configured."""
    return LintConfig(
        max_share_of_threshold=Decimal(settings.lint_max_share_of_threshold),
        max_percent=Decimal(settings.lint_max_percent),
        max_discount_ratio=Decimal(settings.lint_max_discount_ratio),
        widen_factor=Decimal(settings.lint_widen_factor),
    )


async def lint_version(
    session: AsyncSession, *, campaign_id: str, version: int, config: LintConfig, now: datetime
) -> list[Finding]:
    """Lint one version against what is live now (its own campaign's live version aside, which
    is the ``previous`` a widening is measured against) and the stored catalogue."""
    campaign = await get_campaign(session, campaign_id=campaign_id)
    row = await get_version(session, campaign_id=campaign_id, version=version)
    live = await live_rules(session)
    previous = next((r for r in live if r.id == campaign_id), None)
    if previous is not None and campaign.live_version == version:
        previous = None  # linting the live version itself: nothing to compare it with
    others = [r for r in live if r.id != campaign_id]
    return lint(
        parse_rule(row.spec),
        live=others,
        catalogue=await get_catalogue(session),
        previous=previous,
        now=now,
        config=config,
    )


async def submit(
    session: AsyncSession,
    *,
    campaign_id: str,
    version: int,
    actor: str,
    acknowledgements: Mapping[str, str],
    config: LintConfig,
    now: datetime,
) -> tuple[CampaignVersion, list[Finding]]:
    """Send a draft to review; refused with ``lint_errors`` or ``warnings_unacknowledged``."""
    row = await get_version(session, campaign_id=campaign_id, version=version)
    if row.state != VersionState.DRAFT:
        raise ConflictError(
            "invalid_transition", f"version {version} is {row.state}; only a draft is submitted"
        )
    findings = await lint_version(
        session, campaign_id=campaign_id, version=version, config=config, now=now
    )
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        raise InvalidError(
            "lint_errors",
            f"lint found {len(errors)} error(s); fix them in a new version",
            errors=[(f.path or "spec", f"{f.code} {f.message} Fix: {f.hint}") for f in errors],
            extra={"findings": [f.as_dict() for f in findings]},
        )
    warnings = {f.code for f in findings}
    missing = sorted(warnings - {c for c, why in acknowledgements.items() if why.strip()})
    if missing:
        raise InvalidError(
            "warnings_unacknowledged",
            f"acknowledge each lint warning with a reason: {', '.join(missing)}",
            errors=[(f"acknowledgements.{code}", "a reason is required") for code in missing],
            extra={"findings": [f.as_dict() for f in findings]},
        )
    row.state = VersionState.IN_REVIEW
    row.submitted_at = now
    row.findings = [f.as_dict() for f in findings]
    row.acknowledgements = {code: acknowledgements[code].strip() for code in sorted(warnings)}
    audit.record(
        session,
        actor=actor,
        action="campaign.submitted",
        subject_type="campaign",
        subject_id=campaign_id,
        detail={"version": version, "warnings": sorted(warnings)},
    )
    return row, findings


async def approvals(session: AsyncSession, *, campaign_id: str, version: int) -> list[Approval]:
    """Every department's decision on a version, in the order they came."""
    rows = await session.scalars(
        select(Approval)
        .where(Approval.campaign_id == campaign_id, Approval.version == version)
        .order_by(Approval.id)
    )
    return list(rows.all())


async def _author_owner(session: AsyncSession, author: str) -> str:
    key = await session.get(ApiKey, author)
    return "" if key is None else key.owner


def _check_reviewer(
    row: CampaignVersion,
    *,
    approver: str,
    owners: tuple[str, str],
    department: str | None,
    required: Sequence[str],
) -> str:
    if row.state != VersionState.IN_REVIEW:
        raise ConflictError(
            "invalid_transition", f"version {row.version} is {row.state}, not in review"
        )
    author_owner, approver_owner = owners
    if approver == row.author or (author_owner and author_owner == approver_owner):
        raise ForbiddenError("own_version", "the author of a version cannot review it")
    if department is None:
        raise ForbiddenError(
            "department_required", "only an approver key with a department can review"
        )
    if department not in required:
        raise ConflictError(
            "department_not_required",
            f"{department} is not a reviewing department ({', '.join(required)})",
        )
    return department


async def decide(
    session: AsyncSession,
    *,
    campaign_id: str,
    version: int,
    approver: str,
    department: str | None,
    approve: bool,
    reason: str,
    required: Sequence[str],
    owner: str = "",
) -> tuple[CampaignVersion, list[Approval]]:
    """Record one department's approval or rejection; the version moves when it is decided.

    The version's author may not decide on it: neither the key that wrote it nor another key
    of the same ``owner``.
    """
    row = await get_version(session, campaign_id=campaign_id, version=version)
    owners = (await _author_owner(session, row.author), owner)
    dept = _check_reviewer(
        row, approver=approver, owners=owners, department=department, required=required
    )
    decided = await approvals(session, campaign_id=campaign_id, version=version)
    if any(a.department == dept for a in decided):
        raise ConflictError("already_decided", f"{dept} has already decided on version {version}")
    decision = Approval(
        campaign_id=campaign_id,
        version=version,
        department=dept,
        approver=approver,
        decision="approved" if approve else "rejected",
        reason=reason,
        at=utcnow(),
    )
    session.add(decision)
    await session.flush()
    decided.append(decision)
    approved = {a.department for a in decided if a.decision == "approved"}
    if not approve:
        row.state = VersionState.REJECTED
    elif approved >= set(required):
        row.state = VersionState.APPROVED
    audit.record(
        session,
        actor=approver,
        action="campaign.approved" if approve else "campaign.rejected",
        subject_type="campaign",
        subject_id=campaign_id,
        detail={
            "version": version,
            "department": dept,
            "reason": reason,
            "state": row.state,
            "missing": sorted(set(required) - approved),
        },
    )
    return row, decided


# -- diff -------------------------------------------------------------------------------------

_ASPECTS = {
    "tiers": "amounts",
    "percent": "amounts",
    "cap": "amounts",
    "price": "amounts",
    "discount": "amounts",
    "min_spend": "thresholds",
    "buy": "amounts",
    "get": "amounts",
    "repeat": "amounts",
    "repeat_cap": "amounts",
    "max_discount_ratio": "amounts",
    "scope": "scope",
    "offers": "audience",
    "size": "audience",
    "limits": "limits",
    "stock": "limits",
    "per_user_limit": "limits",
    "quantity": "limits",
    "valid_from": "window",
    "valid_until": "window",
}
_QUIET = {"version", "schema_version"}


@dataclass(frozen=True, slots=True)
class Change:
    """One field a customer would see differently between two versions."""

    aspect: str
    path: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        """The change as JSON."""
        return {
            "aspect": self.aspect,
            "path": self.path,
            "before": self.before,
            "after": self.after,
        }

    def sentence(self) -> str:
        """The change in words."""
        if self.before is None:
            return f"{self.aspect}: {self.path} set to {self.after!r}"
        if self.after is None:
            return f"{self.aspect}: {self.path} removed (was {self.before!r})"
        return f"{self.aspect}: {self.path} {self.before!r} → {self.after!r}"


def _walk(path: str, before: Any, after: Any, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            _walk(f"{path}.{key}" if path else key, before.get(key), after.get(key), out)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for n, (b, a) in enumerate(zip(before, after, strict=True)):
            _walk(f"{path}[{n}]", b, a, out)
    elif isinstance(before, list) and isinstance(after, list) and _flat(before, after):
        if sorted(map(str, before)) != sorted(map(str, after)):
            out.append((path, before, after))
    elif before != after:
        out.append((path, before, after))


def _flat(*lists: list[Any]) -> bool:
    return all(not isinstance(v, dict | list) for values in lists for v in values)


def diff_specs(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """What changed between two stored specs, field by field, grouped by what a customer sees:
    thresholds, amounts, scope, audience, limits, window (and ``other`` for the rest)."""
    found: list[tuple[str, Any, Any]] = []
    _walk("", dict(before), dict(after), found)
    changes = []
    for path, old, new in found:
        top = path.split(".", 1)[0].split("[", 1)[0]
        if top in _QUIET:
            continue
        leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
        aspect = _ASPECTS.get(leaf) if leaf == "min_spend" else None
        changes.append(Change(aspect or _ASPECTS.get(top, "other"), path, old, new))
    return changes
