"""What an order takes from the run-time limits, and the counter keys they live under.

One function turns a priced quote into :class:`~promoguard.store.counters.Take` s, so the quote
path (reading whether they would fit), the checkout (taking them) and the sweeper (giving them
back) agree on the keys:

==========================  ===========================  ==============================
key                         amount                       limit
==========================  ===========================  ==============================
``stock:<rule>``            flash-sale units             the flash sale's ``stock``
``units:<rule>:<customer>`` flash-sale units             its ``per_user_limit``
``first:<signal>``          1 per identity signal        1 (one first order per signal)
``budget:<rule>``           the discount                 ``limits.budget``
``uses:<rule>``             1                            ``limits.max_redemptions``
``customer:<rule>:<id>``    1                            ``limits.per_customer``
``identity:<rule>:<sig>``   1 per identity signal        ``limits.per_identity``
==========================  ===========================  ==============================

Keys name the rule, not its version: a new version of a campaign keeps spending the same budget
and stock (with the new version's limit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from promoguard.orders.identity import Identity
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Customer, Quote
from promoguard.promotions.rules import FlashSale, Rule
from promoguard.store.counters import Take

__all__ = [
    "REFUSALS",
    "Need",
    "customer_key",
    "flash_units_key",
    "limited_rules",
    "refusal_detail",
    "takes",
    "unfit",
]

REFUSALS = {
    "flash_sale_sold_out": "flash sale {rule!r} is sold out",
    "flash_sale_limit_reached": "the customer has bought the most units flash sale {rule!r} allows",
    "first_order_used": "this identity has already had its first-order discount",
    "budget_exhausted": "the budget of {rule!r} cannot cover this discount",
    "redemption_cap_reached": "{rule!r} has been used the most times it may be",
    "customer_limit_reached": "the customer has used {rule!r} the most times allowed",
    "identity_limit_reached": "this identity has used {rule!r} the most times allowed",
}
"""Problem code -> message of a take that does not fit."""


def _who(customer_id: str) -> str:
    # Keys must fit 200 characters with a 64-character rule id: a long customer id is hashed.
    if len(customer_id) <= 96:
        return customer_id
    return "sha256-" + hashlib.sha256(customer_id.encode()).hexdigest()[:40]


def customer_key(rule_id: str, customer_id: str) -> str:
    """The counter of orders one customer placed with a rule (``limits.per_customer``)."""
    return f"customer:{rule_id}:{_who(customer_id)}"


def flash_units_key(rule_id: str, customer_id: str) -> str:
    """The counter of flash-sale units one customer bought."""
    return f"units:{rule_id}:{_who(customer_id)}"


def limited_rules(ruleset: RuleSet) -> list[Rule]:
    """The live rules whose use is limited at run time (so a quote must read counters)."""
    # A limit counts when it has a value: a spec read back from the database names every limit
    # (None when unset), so which fields were given says nothing.
    return [
        c.spec
        for c in ruleset.rules
        if c.kind in ("flash_sale", "first_order")
        or any(value is not None for _, value in c.spec.limits)
    ]


Need = tuple[str, Take]
"""(rule id, take): what one discount needs from one counter."""


def takes(quote: Quote, ruleset: RuleSet, identity: Identity, customer: Customer) -> list[Need]:
    """What committing ``quote`` takes from every counter, for the discounts it grants."""
    needs: list[Need] = []
    lines = quote.lines
    customer_id = identity.customer_id
    for discount in quote.discounts:
        spec = ruleset.spec(discount.rule_id)
        if spec is None:
            continue
        rule = spec.id
        found: list[Take] = []
        if isinstance(spec, FlashSale):
            units = sum(lines[i].quantity for i, part in enumerate(discount.allocations) if part)
            # The engine gives the flash price to no more units than the customer has left.
            units = min(units, spec.per_user_limit - customer.flash_sale_used.get(rule, 0))
            found.append(
                Take(f"stock:{rule}", units, spec.stock, "flash_sale_sold_out", shared=True)
            )
            found.append(
                Take(
                    flash_units_key(rule, customer_id),
                    units,
                    spec.per_user_limit,
                    "flash_sale_limit_reached",
                )
            )
        if spec.kind == "first_order":
            found += (Take(f"first:{s}", 1, 1, "first_order_used") for s in identity.signals)
        limits = spec.limits
        if limits.budget is not None:
            found.append(
                Take(
                    f"budget:{rule}",
                    discount.amount,
                    limits.budget,
                    "budget_exhausted",
                    shared=True,
                )
            )
        if limits.max_redemptions is not None:
            found.append(
                Take(
                    f"uses:{rule}", 1, limits.max_redemptions, "redemption_cap_reached", shared=True
                )
            )
        if limits.per_customer is not None:
            found.append(
                Take(
                    customer_key(rule, customer_id),
                    1,
                    limits.per_customer,
                    "customer_limit_reached",
                )
            )
        if limits.per_identity is not None:
            found += (
                Take(f"identity:{rule}:{s}", 1, limits.per_identity, "identity_limit_reached")
                for s in identity.signals
            )
        needs += ((rule, take) for take in found)
    return needs


def refusal_detail(rule: str, take: Take, used: int) -> tuple[str, dict[str, object]]:
    """A human message and the problem's extra fields for a take of ``rule`` that did not
    fit."""
    remaining = max(0, take.limit - used)
    detail = REFUSALS[take.refusal].format(rule=rule)
    return (
        f"{detail} (needs {take.amount}, {remaining} of {take.limit} left): ask for a new quote",
        {"rule_id": rule, "needed": take.amount, "remaining": remaining, "limit": take.limit},
    )


_SHORT = {
    "flash_sale_sold_out": "sold out",
    "flash_sale_limit_reached": "the customer's unit limit is reached",
    "first_order_used": "this identity has had its first order",
    "budget_exhausted": "its budget cannot cover this discount",
    "redemption_cap_reached": "used the most times it may be",
    "customer_limit_reached": "the customer's limit is reached",
    "identity_limit_reached": "this identity's limit is reached",
}


def unfit(needs: Iterable[Need], levels: dict[str, int]) -> dict[str, str]:
    """Rule id -> why, for every need that would not fit at these levels."""
    return {
        rule: _SHORT[t.refusal] for rule, t in needs if levels.get(t.key, 0) + t.amount > t.limit
    }
