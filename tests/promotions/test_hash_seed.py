"""Two worker processes price the same cart identically, whatever their hash seeds.

Python randomises the order in which a ``frozenset`` of strings (a line's tags, a customer's
coupons) is iterated, per process. Each seed here runs in its own interpreter, so a quote that
leaked that order into its discounts or its explanation would differ between the runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PRICE_MANY = r"""
import json, random
from datetime import datetime, timezone
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer
from promoguard.promotions.rules import parse_rule

rnd = random.Random(7)
tags = [f"t{i}" for i in range(12)]
now = datetime(2026, 11, 11, 12, tzinfo=timezone.utc)
specs = []
for i in range(60):
    kind = rnd.choice(["percent_off", "threshold", "coupon", "fixed_price"])
    scope = {"tags": rnd.sample(tags, rnd.randint(1, 3))}
    window = rnd.choice([{}, {"valid_from": "2027-01-01T00:00:00Z"},
                         {"valid_until": "2026-01-01T00:00:00Z"}])
    base = {"id": f"r{i}", "scope": scope, "priority": rnd.randint(0, 2), **window}
    if kind == "percent_off":
        specs.append({**base, "kind": kind, "percent": str(rnd.choice([5, 10, 15]))})
    elif kind == "threshold":
        specs.append({**base, "kind": kind,
                      "tiers": [{"min_spend": 10000, "discount": rnd.choice([500, 1000])}]})
    elif kind == "coupon":
        specs.append({**base, "kind": kind, "benefit": "no_threshold", "discount": 300,
                      "per_user_limit": 1, "quantity": 100})
    else:
        specs.append({**base, "kind": kind, "price": 5000})
rules = RuleSet([parse_rule(s) for s in specs])
coupons = frozenset(s["id"] for s in specs if s["kind"] == "coupon")
out = []
for c in range(40):
    lines = [
        CartLine(sku=f"s{c}-{n}", category=f"c{n % 3}", tags=rnd.sample(tags, rnd.randint(0, 6)),
                 unit_price=rnd.randint(1000, 30000), quantity=rnd.randint(1, 3))
        for n in range(rnd.randint(1, 5))
    ]
    q = rules.quote(Cart(lines=lines), Customer(id=f"u{c}", coupons=coupons), now)
    out.append(q.as_dict())
print(json.dumps(out, sort_keys=True, default=str))
"""


def _price_with_seed(seed: str) -> list[object]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", _PRICE_MANY], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_quotes_and_explanations_do_not_depend_on_the_hash_seed() -> None:
    first = _price_with_seed("1")
    assert len(first) == 40
    # The carts must exercise the tag index and its explanations, or the test proves nothing.
    notes = [e for q in first for e in q["explanation"] if not e["applied"]]
    assert any("not started" in e["message"] for e in notes)
    assert any(q["discount_total"] > 0 for q in first)
    for seed in ("2", "3", "4"):
        assert _price_with_seed(seed) == first, f"PYTHONHASHSEED={seed} priced differently"
