"""Remediation planning: find an incident's affected orders, price them again under the
corrected rules, classify them and apply the shop's policy (see ``docs/remediation.md``).

The public surface:

* :func:`build_plan` / :func:`stream_plan` — the plan draft of an incident;
* :class:`RemediationPolicy` — the policy per severity;
* :func:`load_corrected` — the corrected rules (to pass an operator's explicit mapping);
* :func:`classify` — the pure classification of one order.
"""

from promoguard.remediation.affected import Affected, FailedClaim, find_affected
from promoguard.remediation.classify import (
    ACTIONS,
    CLASSES,
    LineFacts,
    LineOutcome,
    OrderFacts,
    Outcome,
    classify,
    classify_failed_claim,
)
from promoguard.remediation.corrected import CorrectedRules, LiveHistory, load_corrected
from promoguard.remediation.plan import (
    CouponGrant,
    PlanDraft,
    PlanItem,
    Total,
    build_plan,
    cause_of,
    item_for,
    stream_plan,
)
from promoguard.remediation.policy import Compensation, RemediationPolicy, SeverityPolicy
from promoguard.remediation.snapshot import PricingSnapshot, load_snapshot, load_snapshots

__all__ = [
    "ACTIONS",
    "CLASSES",
    "Affected",
    "Compensation",
    "CorrectedRules",
    "CouponGrant",
    "FailedClaim",
    "LineFacts",
    "LineOutcome",
    "LiveHistory",
    "OrderFacts",
    "Outcome",
    "PlanDraft",
    "PlanItem",
    "PricingSnapshot",
    "RemediationPolicy",
    "SeverityPolicy",
    "Total",
    "build_plan",
    "cause_of",
    "classify",
    "classify_failed_claim",
    "find_affected",
    "item_for",
    "load_corrected",
    "load_snapshot",
    "load_snapshots",
    "stream_plan",
]
