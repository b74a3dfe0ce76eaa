"""What a customer is told when their claim changes: one notice per change, in their language.

The notice goes to the customer's contact (email, SMS) with the ``customer_claim_update``
template, and to the shop's webhooks (the shop may tell the customer its own way). Its key is
``claim:<id>:<change>``, so a change is told once however often it is queued.
"""

from __future__ import annotations

from promoguard.claims.models import Claim
from promoguard.notify.service import Notice, Recipient

__all__ = ["TEMPLATE", "notice_for"]

TEMPLATE = "customer_claim_update"


def notice_for(claim: Claim, change: str) -> Notice:
    """The notice of ``change`` (the status reached, or ``merged:<duplicate id>``)."""
    data = {
        "claim_id": claim.id,
        "order_id": claim.order_id,
        "status": claim.status,
        "reason": claim.reason,
        "decision_code": claim.decision_code or "",
        "message": claim.decision_reason,
        "amount": claim.amount,
        "currency": claim.currency,
        "coupon_value": (claim.coupon or {}).get("value", 0),
        "due_at": claim.due_at,
        "merged": change.startswith("merged"),
    }
    customers = (
        [Recipient(locale=claim.locale, email=claim.email, phone=claim.phone)]
        if claim.email or claim.phone
        else []
    )
    return Notice(
        key=f"claim:{claim.id}:{change}",
        event="claim.merged" if change.startswith("merged") else f"claim.{claim.status}",
        data=data,
        customer_template=TEMPLATE if customers else None,
        customers=customers,
    )
