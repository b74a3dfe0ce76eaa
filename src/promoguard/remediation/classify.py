"""Classify one affected order from what it was charged and what it should have cost, and pick
the action the policy gives it. Pure: no I/O, integers only.

Per line, ``difference = charged - intended`` (positive: the customer paid too much). The order's
difference is their sum, and decides the class:

* ``oversold`` (the shop could not deliver what it sold) and ``cancelled`` (the order was
  cancelled) come first, whatever the prices: a full refund of what is still paid, and a
  compensation coupon (``full_refund_with_coupon``);
* ``overcharged`` (difference > 0): ``refund_difference``, per line;
* ``undercharged`` (difference < 0): the policy's ``honour`` (keep the better price), or
  ``cancel_with_coupon`` when the policy cancels unshipped orders and this one has not shipped;
* ``unchanged`` (difference 0, even if a discount moved between lines): ``none``.

A failed coupon claim (no order) is ``failed_claim`` → ``reissue_coupon``.

Money rules: the per-line refunds of an overcharged order are its order difference spread over
the overcharged lines by largest remainder (:func:`~promoguard.money.allocate`), so they sum to
it exactly and no line gets more than its own overcharge. When units of a line were refunded
already, only the still-paid units' share is owed, rounded *up* (the customer's favour) and never
above what is left of the line. Nothing is refunded on an order nobody has paid for (``created``
or ``expired``): its action is ``none`` with the reason.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from promoguard.money import allocate
from promoguard.remediation.policy import SeverityPolicy

__all__ = [
    "ACTIONS",
    "CLASSES",
    "Action",
    "Class",
    "LineFacts",
    "LineOutcome",
    "OrderFacts",
    "Outcome",
    "classify",
    "classify_failed_claim",
]

Class = Literal["overcharged", "undercharged", "unchanged", "oversold", "cancelled", "failed_claim"]
Action = Literal[
    "refund_difference",
    "honour",
    "cancel_with_coupon",
    "full_refund_with_coupon",
    "reissue_coupon",
    "none",
]
CLASSES: tuple[Class, ...] = (
    "overcharged",
    "undercharged",
    "unchanged",
    "oversold",
    "cancelled",
    "failed_claim",
)
ACTIONS: tuple[Action, ...] = (
    "refund_difference",
    "honour",
    "cancel_with_coupon",
    "full_refund_with_coupon",
    "reissue_coupon",
    "none",
)

_PAID = frozenset({"paid", "shipped", "partially_refunded", "refunded"})
"""Statuses of an order the customer has paid for."""
_UNSHIPPED = frozenset({"created", "paid"})
"""Statuses an order can still be cancelled from."""


class LineFacts(NamedTuple):
    """One order line: what it charged, what re-pricing says it should have, what went back."""

    sku: str
    quantity: int
    charged: int
    """The line's recorded final amount."""
    intended: int
    """The line's final amount under the corrected rules."""
    refunded_quantity: int = 0
    refunded_amount: int = 0


class OrderFacts(NamedTuple):
    """What classification reads of an order."""

    status: str
    total: int
    refunded_total: int
    lines: tuple[LineFacts, ...]
    oversold: bool = False


class LineOutcome(NamedTuple):
    """One line of an outcome; ``refund`` is what this line pays back."""

    sku: str
    charged: int
    intended: int
    difference: int
    refund: int


class Outcome(NamedTuple):
    """An order's class, its action and the amounts."""

    klass: Class
    action: Action
    lines: tuple[LineOutcome, ...]
    difference: int
    """Charged minus intended, over the whole order."""
    refund: int
    """Money back to the customer: the sum of the lines' refunds."""
    coupon_value: int
    """The compensation or re-issued coupon's value, 0 for none."""
    reason: str


def _lines(order: OrderFacts, refunds: list[int] | None = None) -> tuple[LineOutcome, ...]:
    parts = refunds or [0] * len(order.lines)
    return tuple(
        LineOutcome(ln.sku, ln.charged, ln.intended, ln.charged - ln.intended, part)
        for ln, part in zip(order.lines, parts, strict=True)
    )


def _still_paid(order: OrderFacts) -> list[int]:
    """What of each line the customer has paid and not had back (0 for an unpaid order)."""
    if order.status not in _PAID:
        return [0] * len(order.lines)
    outstanding = max(0, order.total - order.refunded_total)
    left = [max(0, ln.charged - ln.refunded_amount) for ln in order.lines]
    if sum(left) < outstanding:  # refunds recorded on the order but not per line
        left = [ln.charged for ln in order.lines]
    outstanding = min(outstanding, sum(left))
    return allocate(outstanding, left)


def _owed(order: OrderFacts, difference: int) -> list[int]:
    """The overcharge each line pays back (see the module docstring)."""
    shares = allocate(difference, [max(0, ln.charged - ln.intended) for ln in order.lines])
    owed = []
    for share, ln in zip(shares, order.lines, strict=True):
        kept = ln.quantity - ln.refunded_quantity
        # Rounded up: the customer's favour.
        part = share if kept == ln.quantity else -(-share * kept // ln.quantity)
        owed.append(max(0, min(part, ln.charged - ln.refunded_amount)))
    return owed


def _full_refund(order: OrderFacts, klass: Class, policy: SeverityPolicy) -> Outcome:
    difference = sum(ln.charged - ln.intended for ln in order.lines)
    # A cancellation already gave back what was paid: only the coupon is owed then.
    refunds = [0] * len(order.lines) if klass == "cancelled" else _still_paid(order)
    coupon = policy.compensation.value_for(order.total)
    reason = (
        "cancelled: what was paid went back with the cancellation"
        if klass == "cancelled"
        else "oversold: the shop cannot deliver it"
    )
    lines = _lines(order, refunds)
    return Outcome(
        klass, "full_refund_with_coupon", lines, difference, sum(refunds), coupon, reason
    )


def _undercharged(order: OrderFacts, difference: int, policy: SeverityPolicy) -> Outcome:
    if policy.undercharged == "cancel_unshipped" and order.status in _UNSHIPPED:
        refunds = _still_paid(order)
        coupon = policy.compensation.value_for(order.total)
        return Outcome(
            "undercharged",
            "cancel_with_coupon",
            _lines(order, refunds),
            difference,
            sum(refunds),
            coupon,
            "undercharged and not shipped: the policy cancels it",
        )
    why = (
        "undercharged: the policy honours the price"
        if policy.undercharged == "honour"
        else f"undercharged but {order.status}: honoured"
    )
    return Outcome("undercharged", "honour", _lines(order), difference, 0, 0, why)


def classify(order: OrderFacts, policy: SeverityPolicy) -> Outcome:
    """Classify an affected order and choose its action under ``policy``.

    Args:
        order: the order's status, totals and lines (charged and intended per line).
        policy: the remediation policy of the incident's severity.

    Returns:
        The outcome: class, action, per-line amounts, refund and coupon value.
    """
    if order.oversold:
        return _full_refund(order, "oversold", policy)
    if order.status == "cancelled":
        return _full_refund(order, "cancelled", policy)
    difference = sum(ln.charged - ln.intended for ln in order.lines)
    if difference < 0:
        return _undercharged(order, difference, policy)
    if difference == 0:
        return Outcome("unchanged", "none", _lines(order), 0, 0, 0, "priced as intended")
    if order.status not in _PAID:
        return Outcome(
            "overcharged",
            "none",
            _lines(order),
            difference,
            0,
            0,
            f"overcharged but {order.status}: nothing was paid (plan again once it is)",
        )
    owed = _owed(order, difference)
    refund = sum(owed)
    if not refund:
        return Outcome(
            "overcharged", "none", _lines(order, owed), difference, 0, 0, "already refunded"
        )
    return Outcome(
        "overcharged",
        "refund_difference",
        _lines(order, owed),
        difference,
        refund,
        0,
        "overcharged: the difference goes back, per line",
    )


def classify_failed_claim(coupon_value: int) -> Outcome:
    """A coupon claim that failed because of the incident: the coupon is issued again."""
    return Outcome(
        "failed_claim",
        "reissue_coupon",
        (),
        0,
        0,
        coupon_value,
        "the claim failed during the incident: the coupon is re-issued",
    )
