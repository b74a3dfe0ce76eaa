"""Customers' own refund and compensation claims (see ``docs/claims.md``).

The public surface:

* :func:`~promoguard.claims.service.submit` — take a claim: verify, decide, pay what is owed;
* :func:`~promoguard.claims.service.decide` — a reviewer approves or rejects a claim in review;
* :func:`~promoguard.claims.service.pay_claim` / :func:`~promoguard.claims.service.settle` —
  pay an approved claim, mark it paid once its payout succeeded;
* :func:`~promoguard.claims.service.assess` — what the incidents owe one order;
* ``promoguard.claims.routes.router`` — ``/v1/claims``.
"""

from promoguard.claims.models import Claim, ClaimEvent, ClaimReason, ClaimStatus
from promoguard.claims.service import (
    Assessment,
    ClaimPolicy,
    ClaimRequest,
    Submitted,
    assess,
    decide,
    overdue,
    pay_claim,
    settle,
    submit,
)

__all__ = [
    "Assessment",
    "Claim",
    "ClaimEvent",
    "ClaimPolicy",
    "ClaimReason",
    "ClaimRequest",
    "ClaimStatus",
    "Submitted",
    "assess",
    "decide",
    "overdue",
    "pay_claim",
    "settle",
    "submit",
]
