"""Which live rules make a quote read the run-time counters."""

from __future__ import annotations

from typing import Any

from promoguard.orders.guards import limited_rules
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.rules import parse_rule


def special(rule_id: str, **limits: Any) -> dict[str, Any]:
    return {
        "kind": "fixed_price",
        "id": rule_id,
        "scope": {"skus": ["sku-1"]},
        "price": 100,
        "limits": limits,
    }


def test_a_rule_read_back_with_every_limit_unset_is_not_limited():
    # The database keeps a spec with every field named, unset limits as null.
    stored = parse_rule(parse_rule(special("plain")).model_dump(mode="json"))
    assert stored.limits.model_fields_set  # named, yet none has a value
    assert limited_rules(RuleSet([stored])) == []


def test_a_rule_with_any_limit_set_is_limited():
    budget = parse_rule(special("budgeted", budget=10_000))
    per_customer = parse_rule(parse_rule(special("once", per_customer=1)).model_dump(mode="json"))
    assert [r.id for r in limited_rules(RuleSet([budget, per_customer]))] == ["budgeted", "once"]
