"""The rules an order was priced under, and the rules it should have been priced under.

**What was live when.** Every change to what is live (a version activated, rolled back,
paused, ended; a rollout changed; a profile adopted) raises the rules stamp by one and writes
one campaign audit entry in the same transaction, and every quote records the stamp it was
priced under. Replaying those audit entries in order therefore gives the live versions at each
stamp (:class:`LiveHistory`). When the count of entries does not match the stamp (a database
whose history predates the audit log, say), the history falls back to time: what was live at
the order's pricing instant. Either way the versions an order's discount rows name win over the
history for their campaign: they are what actually priced it (a worker's cached rules can lag a
change by the refresh interval).

**The corrected rule set** is that live set with each faulty version replaced by its intended
version, chosen in this order:

1. the operator's explicit mapping (a version number, or None to remove the campaign);
2. the version live for the campaign just before the faulty one first went live;
3. the campaign's ``previous_version`` (where a rollback goes);
4. the version whose simulated profile the campaign holds (``profile_version``);
5. none: the campaign is removed (it had no good version).

A candidate that is itself one of the incident's faulty versions is skipped. Rule sets are
compiled once per distinct set of versions and cached, so pricing a hundred thousand orders
compiles a handful.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.audit import AuditEntry
from promoguard.campaigns.models import Campaign, CampaignVersion
from promoguard.campaigns.service import rules_stamp
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.promotions.rules import Rule, parse_rule
from promoguard.remediation.snapshot import PricingSnapshot

__all__ = [
    "STAMP_ACTIONS",
    "CorrectedRules",
    "LiveHistory",
    "Version",
    "intended_versions",
    "load_corrected",
    "load_history",
]

Version = tuple[str, int]
LiveSet = frozenset[Version]

STAMP_ACTIONS = (
    "campaign.activated",
    "campaign.rolled_back",
    "campaign.paused",
    "campaign.ended",
    "campaign.rollout_changed",
    "campaign.profile_adopted",
)
"""The audit actions written by every change that raises the rules stamp (one each)."""

_GOES_LIVE = frozenset({"campaign.activated", "campaign.rolled_back"})
_GOES_OFF = frozenset({"campaign.paused", "campaign.ended"})


@dataclass(frozen=True, slots=True)
class LiveHistory:
    """The live versions after each stamp-raising change, oldest first."""

    states: tuple[LiveSet, ...]
    """``states[k]``: what was live at stamp ``k`` (``states[0]`` is before any change)."""
    times: tuple[datetime, ...]
    """``times[k]``: when change ``k`` was recorded (``times[0]`` is unused)."""
    exact: bool
    """Whether the changes counted match the stamp, so a quote's stamp can be trusted."""

    def live_at(self, stamp: int | None, at: datetime) -> LiveSet:
        """The versions live when an order was priced under ``stamp`` at ``at``."""
        if self.exact and stamp is not None and 0 <= stamp < len(self.states):
            return self.states[stamp]
        # By time: the last change recorded at or before the instant.
        return self.states[max(0, bisect_right(self.times, at, lo=1) - 1)]

    def stamps_with(self, versions: Iterable[Version]) -> list[int]:
        """The stamps at which one of ``versions`` was live."""
        wanted = set(versions)
        return [k for k, state in enumerate(self.states) if state & wanted]

    def live_before(self, version: Version) -> int | None:
        """The campaign's version live just before ``version`` first went live, if any."""
        campaign = version[0]
        for k, state in enumerate(self.states):
            if version in state:
                if k == 0:
                    return None
                before = [v for c, v in self.states[k - 1] if c == campaign]
                return before[0] if before else None
        return None


async def load_history(session: AsyncSession) -> LiveHistory:
    """Replay the campaign audit entries into the live versions at each stamp."""
    rows = await session.execute(
        select(AuditEntry.action, AuditEntry.subject_id, AuditEntry.detail, AuditEntry.at)
        .where(AuditEntry.subject_type == "campaign", AuditEntry.action.in_(STAMP_ACTIONS))
        .order_by(AuditEntry.id)
    )
    live: dict[str, int] = {}
    states: list[LiveSet] = [frozenset()]
    times: list[datetime] = [datetime.min.replace(tzinfo=UTC)]
    for action, campaign_id, detail, at in rows.all():
        version = (detail or {}).get("version")
        if action in _GOES_LIVE and isinstance(version, int):
            live[campaign_id] = version
        elif action in _GOES_OFF:
            live.pop(campaign_id, None)
        states.append(frozenset(live.items()))
        times.append(at)
    stamp = await rules_stamp(session)
    return LiveHistory(tuple(states), tuple(times), exact=stamp == len(states) - 1)


async def intended_versions(
    session: AsyncSession,
    faulty: Iterable[Version],
    history: LiveHistory,
    explicit: Mapping[Version, int | None] | None = None,
) -> dict[Version, int | None]:
    """Each faulty version's intended version (None: remove), by the order in the module
    docstring."""
    bad = set(faulty)
    chosen: dict[Version, int | None] = {}
    campaigns = {c for c, _ in bad}
    rows = await session.execute(
        select(Campaign.id, Campaign.previous_version, Campaign.profile_version).where(
            Campaign.id.in_(campaigns)
        )
    )
    known = {cid: (previous, profile) for cid, previous, profile in rows.all()}
    for version in sorted(bad):
        if explicit is not None and version in explicit:
            chosen[version] = explicit[version]
            continue
        campaign = version[0]
        previous, profile = known.get(campaign, (None, None))
        candidates = (history.live_before(version), previous, profile)
        chosen[version] = next(
            (v for v in candidates if v is not None and (campaign, v) not in bad), None
        )
    return chosen


@dataclass(slots=True)
class CorrectedRules:
    """The rules live for an order, as priced and as intended; compiled once per live set."""

    history: LiveHistory
    replacements: Mapping[Version, int | None]
    specs: Mapping[Version, dict[str, Any]]
    """Every stored version's spec (parsed on first use)."""
    pricing: PricingPolicy = field(default_factory=PricingPolicy)
    _parsed: dict[Version, Rule] = field(default_factory=dict)
    _compiled: dict[LiveSet, RuleSet] = field(default_factory=dict)

    def live_for(self, snapshot: PricingSnapshot) -> LiveSet:
        """The versions that priced the order: the history's, its own discounts winning."""
        order = snapshot.order
        live = dict(self.history.live_at(order.stamp, order.priced_at))
        for rule_id, version, _ in snapshot.discounts:
            live[rule_id] = version
        return frozenset(live.items())

    def corrected_set(self, live: LiveSet) -> LiveSet:
        """``live`` with each faulty version replaced by its intended one (or removed)."""
        out = []
        for version in live:
            if version in self.replacements:
                intended = self.replacements[version]
                if intended is not None:
                    out.append((version[0], intended))
            else:
                out.append(version)
        return frozenset(out)

    def ruleset(self, live: LiveSet) -> RuleSet:
        """The compiled rule set of these versions (cached)."""
        found = self._compiled.get(live)
        if found is None:
            found = RuleSet([self._spec(v) for v in sorted(live)], self.pricing)
            self._compiled[live] = found
        return found

    def original(self, snapshot: PricingSnapshot) -> RuleSet:
        """The rules the order was priced under."""
        return self.ruleset(self.live_for(snapshot))

    def corrected(self, snapshot: PricingSnapshot) -> RuleSet:
        """The rules the order should have been priced under."""
        return self.ruleset(self.corrected_set(self.live_for(snapshot)))

    def _spec(self, version: Version) -> Rule:
        rule = self._parsed.get(version)
        if rule is None:
            data = self.specs.get(version)
            if data is None:
                raise LookupError(f"campaign {version[0]!r} has no stored version {version[1]}")
            rule = parse_rule(data)
            self._parsed[version] = rule
        return rule


async def load_corrected(
    session: AsyncSession,
    faulty: Iterable[Version],
    *,
    explicit: Mapping[Version, int | None] | None = None,
    pricing: PricingPolicy | None = None,
) -> CorrectedRules:
    """Read the history, the stored versions and the intended versions from the store.

    Args:
        session: a read session.
        faulty: the incident's faulty campaign versions.
        explicit: the operator's choice of intended version per faulty version (None: remove).
        pricing: the shop-wide guard (``max_discount_ratio``) the service prices with.
    """
    history = await load_history(session)
    replacements = await intended_versions(session, faulty, history, explicit)
    rows = await session.execute(
        select(CampaignVersion.campaign_id, CampaignVersion.version, CampaignVersion.spec)
    )
    specs = {(cid, v): spec for cid, v, spec in rows.all()}
    return CorrectedRules(history, replacements, specs, pricing or PricingPolicy())
