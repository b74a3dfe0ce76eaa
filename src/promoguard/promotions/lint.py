"""Semantic lint for promotion rules: what a spec may say but a shop should not mean.

The parser (:mod:`promoguard.promotions.rules`) refuses what is *impossible*; lint flags what is
possible but suspicious or dangerous, before a rule goes live. It is pure: no I/O, no database,
no clock (``now`` is passed in). Every check has a stable code, a short name, a severity and a
fix hint. An **error** blocks publishing; a **warning** needs an acknowledged reason in review.

==== ============================ ======= ====================================================
code name                         sev.    fires when
==== ============================ ======= ====================================================
L001 invalid_spec                 error   the spec does not parse (one finding per field path)
L002 currency_mismatch            error   (C) the rule's currency is not the catalogue's
L101 discount_exceeds_threshold   error   a discount is at least its minimum spend (满50减200)
L102 discount_share_high          warning a discount is above ``max_share_of_threshold`` of
                                          its minimum spend
L103 tier_discount_shrinks        error   a higher tier gives a smaller discount or percent
L104 percent_not_positive         error   a percent off at or below 0 (parser-refused)
L105 percent_above_cap            error   a percent off above ``max_percent`` (or 100); buy N
                                          get M counts its average percent over N + M units
L106 unit_mixup_tiers             warning an amount about ``unit_mixup_factor`` times or
                                          1/factor of the rule's other tiers (yuan vs fen)
L107 unit_mixup_catalogue         warning (C) a unit price that far from the median list price
                                          in scope, or a minimum spend that far below the
                                          cheapest SKU in scope
L201 below_floor_or_cost          error   (C) the rule alone sells an in-scope SKU under its
                                          floor price or cost
L202 stacked_ratio_exceeded       error   (C) the worst cart found with this rule and the live
                                          ones is discounted above ``max_discount_ratio``
L301 scope_matches_nothing        error   (C) no catalogue SKU is in scope
L302 scope_whole_catalogue        warning a store-wide scope where a category was meant (see
                                          below)
L303 unknown_member_tier          error   (C) a member price for a tier the shop does not have
L304 first_order_without_identity error   a first-order offer while the shop has no identity
                                          signals (``identity_signals=False``)
L305 first_order_no_identity_cap  warning a first-order offer without ``limits.per_identity``
L306 group_size_too_small         error   a group-buy for fewer than 2 (parser-refused)
L307 flash_sale_unbounded         error   a flash sale without stock or per-user cap
                                          (parser-refused), or whose per-user cap is the whole
                                          stock
L308 coupon_unbounded             error   a coupon without per-user limit or quantity
                                          (parser-refused), or a percent coupon with neither a
                                          cap nor ``limits.budget``: nothing bounds its total
L401 window_inverted              error   ``valid_until`` not after ``valid_from``
                                          (parser-refused)
L402 window_past                  error   ``valid_until`` is at or before ``now``
L403 window_unbounded             warning no ``valid_until``, or a window longer than
                                          ``max_window``
L501 audience_widened             warning against ``previous``: SKUs in scope (C), member
                                          tiers, stock, coupons, redemptions or budget grew
                                          more than ``widen_factor`` times, or a cap went
L502 depth_increased              warning against ``previous``: the deepest discount ratio
                                          one rule gives on its scope grew more than
                                          ``widen_factor`` times
==== ============================ ======= ====================================================

(C): needs a catalogue; skipped, without a finding, when ``catalogue`` is None. The checks that
read amounts (L002 aside) are also skipped for a rule in another currency than the catalogue.

Parser-refused values (L104, L306, L307, L308, L401 in part) never reach a parsed rule; when a
raw spec dict is linted, its :class:`~promoguard.promotions.rules.RuleSpecError` becomes one
finding per field path, under the specific code when one fits and L001 otherwise.

Choices the checks make:

* **L302**: a store-wide (``all_items``) scope on a kind that sets one unit price for every SKU
  (fixed price, flash sale, group-buy, a member *price*): such a price only fits one product
  line. With a catalogue, also a store-wide rule whose name mentions a catalogue category
  (one that its scope does not exclude).
* **L304 / L305**: the first-order spec has no identity setting of its own: the customer's
  ``first_order`` fact comes from the identity ledger. Without identity signals (the shop does
  not hash phone, device, payment and address) every new account is a "first order": an error.
  With them, ``limits.per_identity`` still makes the one-per-identity count atomic at checkout,
  so its absence is a warning.
* **L201**: each in-scope SKU with a floor or cost is priced alone by the engine under this rule
  only, without floor prices on the lines (the guard would hide the problem), for the
  best-placed customer, at 1 unit and at each spend or count tier boundary of the rule.
* **L202**: a search, not a per-rule check. The in-scope SKUs the live rules discount deepest
  and the cheapest ones seed single-SKU carts (1 unit, each count tier, each spend tier reached
  at list and at item-layer price) and small combinations that just reach each spend tier.
  Every cart is priced by the engine with the rules whose scope overlaps (found through a
  SKU / category / tag index), for a customer with every advantage (the member tier with the
  deepest offers, a first order, every group place and coupon in play), with the shop-wide
  guard off and no floor prices on the lines. Only carts this rule discounts count. Rules whose
  window cannot meet this rule's are left out; the others are assumed to overlap all at once.
  At most ``search_carts`` carts are priced per rule.
* **L501 / L502**: audience is the number of catalogue SKUs in scope, member tiers offered,
  flash stock, coupon quantity, ``limits.max_redemptions`` and ``limits.budget``; depth is the
  largest discount ratio a rule gives on one unit of any SKU in scope on its own (a threshold's
  ``discount / min_spend``; a set price against list prices), capped by the rule's own
  ``max_discount_ratio``. Rollout percentages are the campaign's, not the rule's: not compared.

Findings are sorted by rule id, severity (errors first), code and path.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, get_args

from promoguard.money import BPS_WHOLE, formatter, percent_to_bps
from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.promotions.model import Cart, CartLine, Customer, Quote
from promoguard.promotions.rules import (
    BxGy,
    Coupon,
    FirstOrder,
    FixedPrice,
    FlashSale,
    GroupBuy,
    Layer,
    MemberPrice,
    MemberTierOffer,
    PercentOff,
    Rule,
    RuleSpecError,
    Scope,
    Threshold,
    TieredPercent,
    parse_rule,
)

__all__ = [
    "CHECKS",
    "Check",
    "Finding",
    "LintConfig",
    "LintError",
    "Severity",
    "has_errors",
    "lint",
    "lint_rules",
]


class LintError(ValueError):
    """Lint was called with something it cannot work with (a naive ``now``)."""


class Severity(StrEnum):
    """How much a finding weighs: an error blocks, a warning needs a reason in review."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Check:
    """One entry of the catalogue of checks."""

    code: str
    name: str
    severity: Severity
    title: str
    hint: str


_E, _W = Severity.ERROR, Severity.WARNING

CHECKS: Mapping[str, Check] = MappingProxyType(
    {
        check.code: check
        for check in (
            Check(
                "L001",
                "invalid_spec",
                _E,
                "The spec cannot be parsed",
                "Fix the field at the path given; the rule cannot be used until it parses.",
            ),
            Check(
                "L002",
                "currency_mismatch",
                _E,
                "The rule is priced in another currency than the catalogue",
                "Write the rule in the catalogue's currency; its amounts are minor units of it.",
            ),
            Check(
                "L101",
                "discount_exceeds_threshold",
                _E,
                "A discount is at least its minimum spend",
                "Swap the amounts if they were typed the wrong way round (满200减50, not "
                "满50减200), or raise the minimum spend above the discount.",
            ),
            Check(
                "L102",
                "discount_share_high",
                _W,
                "A discount is a large share of its minimum spend",
                "Lower the discount or raise the minimum spend, or give the business reason in "
                "review.",
            ),
            Check(
                "L103",
                "tier_discount_shrinks",
                _E,
                "A higher tier gives less than a lower one",
                "Give each tier at least the discount of the tier below it, or drop the tier.",
            ),
            Check(
                "L104",
                "percent_not_positive",
                _E,
                "A percent off at or below zero",
                "Give the percent *off*, above 0: 20 means 20 % off (8折).",
            ),
            Check(
                "L105",
                "percent_above_cap",
                _E,
                "A percent off above the shop's cap",
                "Percent is what comes off, not what is paid (8折 is 20); lower it, or raise "
                "the shop's cap with a reason.",
            ),
            Check(
                "L106",
                "unit_mixup_tiers",
                _W,
                "An amount 50x or 1/50 of the rule's other amounts or more: yuan keyed as fen",
                "Amounts are minor units (fen): ¥200 is 20000. Retype the odd one out.",
            ),
            Check(
                "L107",
                "unit_mixup_catalogue",
                _W,
                "An amount 50x or 1/50 of the catalogue's prices in scope or more: yuan as fen",
                "Amounts are minor units (fen): ¥39.90 is 3990. Compare with the list prices "
                "of the SKUs in scope.",
            ),
            Check(
                "L201",
                "below_floor_or_cost",
                _E,
                "An in-scope SKU would sell under its floor price or cost",
                "Raise the price or lower the discount, exclude the SKUs named, or cap the rule "
                "with max_discount_ratio.",
            ),
            Check(
                "L202",
                "stacked_ratio_exceeded",
                _E,
                "Stacked with the live rules, a cart is discounted above the shop's limit",
                "Make the rule exclusive, cap it with max_discount_ratio, narrow its scope or "
                "lower its discount.",
            ),
            Check(
                "L301",
                "scope_matches_nothing",
                _E,
                "The scope matches no SKU in the catalogue",
                "Check the SKU, category and tag names against the catalogue (they are case- "
                "and spelling-sensitive).",
            ),
            Check(
                "L302",
                "scope_whole_catalogue",
                _W,
                "The whole catalogue is in scope where a category seems meant",
                "Name the categories, SKUs or tags instead of all_items, or confirm the "
                "store-wide scope in review.",
            ),
            Check(
                "L303",
                "unknown_member_tier",
                _E,
                "A member price for a tier the shop does not have",
                "Use one of the catalogue's member tiers (names are case-sensitive).",
            ),
            Check(
                "L304",
                "first_order_without_identity",
                _E,
                "A first-order offer while the shop has no identity signals",
                "Turn on identity signals (phone, device, payment, address hashes) before "
                "offering first-order discounts: without them every new account is new.",
            ),
            Check(
                "L305",
                "first_order_no_identity_cap",
                _W,
                "A first-order offer with no per-identity cap",
                "Set limits.per_identity (usually 1) so accounts sharing a phone, device, "
                "payment or address redeem once between them.",
            ),
            Check(
                "L306",
                "group_size_too_small",
                _E,
                "A group-buy for fewer than 2 people",
                "A group needs at least 2 members; for one buyer use a fixed price.",
            ),
            Check(
                "L307",
                "flash_sale_unbounded",
                _E,
                "A flash sale without stock or an effective per-user cap",
                "Give a stock and a per_user_limit below it (usually 1 or 2).",
            ),
            Check(
                "L308",
                "coupon_unbounded",
                _E,
                "A claimable coupon with no bound on what it gives in total",
                "Give per_user_limit and quantity, and a cap or limits.budget for a percent "
                "coupon.",
            ),
            Check(
                "L401",
                "window_inverted",
                _E,
                "The validity window ends before it starts",
                "Put valid_until after valid_from (both with a time zone).",
            ),
            Check(
                "L402",
                "window_past",
                _E,
                "The validity window has already ended",
                "Check the dates (the year especially); a rule that has ended never applies.",
            ),
            Check(
                "L403",
                "window_unbounded",
                _W,
                "The validity window has no end, or a very long one",
                "Set valid_until; promotions that never end are forgotten, not reviewed.",
            ),
            Check(
                "L501",
                "audience_widened",
                _W,
                "The change widens a live campaign's audience by more than the factor allowed",
                "Widen in steps (roll out), or give the reason in review.",
            ),
            Check(
                "L502",
                "depth_increased",
                _W,
                "The change deepens a live campaign's discount by more than the factor allowed",
                "Deepen in steps, or give the reason in review.",
            ),
        )
    }
)
"""The catalogue of checks, by code (see the module docstring for when each fires)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing lint found in one rule, at one field path ("" for the rule as a whole)."""

    code: str
    name: str
    severity: Severity
    rule_id: str
    path: str
    message: str
    hint: str

    def as_dict(self) -> dict[str, Any]:
        """The finding as plain JSON-ready data."""
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "rule_id": self.rule_id,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class LintConfig:
    """The shop's thresholds for the checks; every one has a default."""

    max_share_of_threshold: Decimal = Decimal("0.5")
    """L102: the largest discount, as a share of its minimum spend, that needs no reason."""
    max_percent: Decimal = Decimal("70")
    """L105: the deepest percent off allowed."""
    unit_mixup_factor: int = 50
    """L106 / L107: amounts this many times apart are taken for a yuan / fen mix-up."""
    max_discount_ratio: Decimal = Decimal("0.7")
    """L202: the largest share of a cart's list total the stacked rules may take off."""
    widen_factor: Decimal = Decimal("2")
    """L501 / L502: how many times wider or deeper a change may make a live campaign."""
    identity_signals: bool = True
    """L304: the service links accounts by phone, device, payment and address hashes."""
    max_window: timedelta = timedelta(days=92)
    """L403: the longest validity window that needs no reason."""
    search_items: int = 16
    """L202: how many in-scope SKUs seed the worst-cart search."""
    search_carts: int = 48
    """L202: the most carts priced per rule in the worst-cart search."""


_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1}
_MAX_UNITS = 10_000
"""The most units a cart line may have (as :class:`CartLine` allows)."""
_NO_GUARD = PricingPolicy(max_discount_ratio=Decimal(1))
_SHOPPER = "lint-worst-case"
_SHOWN = 5
"""How many SKUs a finding names before it says "and N more"."""


# -- public functions -----------------------------------------------------------------------


def lint(
    candidate: Rule | Mapping[str, Any],
    *,
    live: Sequence[Rule] = (),
    catalogue: Catalogue | None = None,
    previous: Rule | None = None,
    now: datetime,
    config: LintConfig = LintConfig(),
) -> list[Finding]:
    """Lint one rule (or raw spec) against the live rules and the catalogue; findings sorted.

    Args:
        candidate: the rule, or a raw spec dict (an unparseable one gives coded findings).
        live: the rules live now; one with the candidate's id is left out of the stacking.
        catalogue: the shop's SKUs; the checks that need it are skipped when it is None.
        previous: the live version of the candidate's campaign, for the widening checks.
        now: the instant to lint at (timezone-aware).
        config: the shop's thresholds.

    Returns:
        The findings, sorted by rule id, severity, code and path.
    """
    _require_aware(now)
    parsed = _parse(candidate, "<spec>")
    if isinstance(parsed, list):
        return _sorted(parsed)
    pool = [rule for rule in live if rule.id != parsed.id]
    session = _Session(catalogue, [*pool, parsed], now, config)
    return _sorted(session.lint(parsed, previous))


def lint_rules(
    rules: Sequence[Rule | Mapping[str, Any]],
    *,
    live: Sequence[Rule] = (),
    catalogue: Catalogue | None = None,
    now: datetime,
    config: LintConfig = LintConfig(),
) -> list[Finding]:
    """Lint every rule of a file; each stacks with ``live`` and the file's other rules.

    A live rule with the id of a rule in the file is that campaign's live version: it is left
    out of the stacking and is the ``previous`` the widening checks compare with. A second rule
    with an id already in the file is an L001 finding and is not linted further.
    """
    _require_aware(now)
    findings: list[Finding] = []
    parsed: dict[str, Rule] = {}
    for index, spec in enumerate(rules):
        result = _parse(spec, f"[{index}]")
        if isinstance(result, list):
            findings.extend(result)
        elif result.id in parsed:
            findings.append(
                _found("L001", result.id, "id", f"rule {result.id} is in the file twice")
            )
        else:
            parsed[result.id] = result
    live_by_id = {rule.id: rule for rule in live}
    pool = [rule for rule in live if rule.id not in parsed]
    session = _Session(catalogue, [*pool, *parsed.values()], now, config)
    for rule in parsed.values():
        findings.extend(session.lint(rule, live_by_id.get(rule.id)))
    return _sorted(findings)


def has_errors(findings: Iterable[Finding]) -> bool:
    """Tell whether any finding is an error (which blocks publishing)."""
    return any(f.severity is Severity.ERROR for f in findings)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise LintError("now must be timezone-aware")


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(
        findings, key=lambda f: (f.rule_id, _ORDER[f.severity], f.code, f.path, f.message)
    )


def _found(code: str, rule_id: str, path: str, message: str) -> Finding:
    check = CHECKS[code]
    return Finding(code, check.name, check.severity, rule_id, path, message, check.hint)


# -- specs that do not parse ----------------------------------------------------------------


_RULE_TYPES = tuple(get_args(get_args(Rule)[0]))
"""The classes a parsed rule can be (``Rule`` is an annotated union of them)."""


def _parse(spec: Rule | Mapping[str, Any], label: str) -> Rule | list[Finding]:
    """The parsed rule, or one finding per spec error (``label`` names a rule with no id)."""
    if isinstance(spec, _RULE_TYPES):
        rule: Rule = spec
        return rule
    if not isinstance(spec, Mapping):
        what = type(spec).__name__
        return [_found("L001", label, "", f"a rule spec is a JSON object, not a {what}")]
    try:
        return parse_rule(dict(spec))
    except RuleSpecError as exc:
        rule_id = spec.get("id")
        name = rule_id if isinstance(rule_id, str) and rule_id.strip() else label
        kind = spec.get("kind")
        return [
            _found(_spec_code(kind, path, reason), name, path, f"{path or 'the spec'}: {reason}")
            for path, reason in exc.errors
        ]


def _spec_code(kind: object, path: str, reason: str) -> str:
    """The check a parser error belongs to; L001 when no specific one does."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf == "percent" and "greater than" in reason:
        return "L104"
    if leaf == "percent" and "less than" in reason:
        return "L105"
    if leaf == "group_size":
        return "L306"
    if kind == "flash_sale" and leaf in ("stock", "per_user_limit"):
        return "L307"
    if kind == "coupon" and leaf in ("per_user_limit", "quantity"):
        return "L308"
    if leaf == "" and "valid_until must be after valid_from" in reason:
        return "L401"
    return "L001"


# -- one lint run ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Subject:
    """The rule being linted, with what every check reads."""

    rule: Rule
    config: LintConfig
    now: datetime
    fmt: Callable[[int], str]
    shelf: _Shelf | None
    items: tuple[CatalogueItem, ...] | None
    """The catalogue SKUs in scope; None without a catalogue or in another currency."""

    def found(self, code: str, path: str, message: str) -> Finding:
        return _found(code, self.rule.id, path, message)


_Check = Callable[[_Subject], Iterator[Finding]]


class _Session:
    """What a lint call shares between the rules it lints: the catalogue and the rule pool."""

    def __init__(
        self, catalogue: Catalogue | None, pool: Sequence[Rule], now: datetime, config: LintConfig
    ) -> None:
        self.shelf = None if catalogue is None else _Shelf(catalogue)
        self.now = now
        self.config = config
        self._pool_rules = pool
        self._pool: _Pool | None = None

    @property
    def pool(self) -> _Pool:
        """The rules each linted rule stacks with, indexed on first use."""
        if self._pool is None:
            self._pool = _Pool(self._pool_rules)
        return self._pool

    def subject(self, rule: Rule) -> _Subject:
        shelf = self.shelf
        same_currency = shelf is not None and shelf.currency == rule.currency
        items = shelf.in_scope(rule.scope) if shelf is not None and same_currency else None
        fmt = formatter(rule.currency)
        return _Subject(rule, self.config, self.now, fmt, shelf, items)

    def lint(self, rule: Rule, previous: Rule | None) -> list[Finding]:
        subject = self.subject(rule)
        found: list[Finding] = []
        for check in _CHECKS:
            found.extend(check(subject))
        if subject.items is not None:
            for check in _CATALOGUE_CHECKS:
                found.extend(check(subject))
            found.extend(_check_stacking(subject, self.pool))
        if previous is not None:
            found.extend(_check_change(subject, self.subject(previous)))
        return found


# -- amounts and percentages ----------------------------------------------------------------


def _spend_pairs(rule: Rule) -> list[tuple[str, int, int]]:
    """Each (path, minimum spend, discount) pair the rule has: 满 min_spend 减 discount."""
    if isinstance(rule, Threshold):
        return [(f"tiers[{n}].", t.min_spend, t.discount) for n, t in enumerate(rule.tiers)]
    if isinstance(rule, Coupon | FirstOrder) and rule.discount is not None and rule.min_spend:
        return [("", rule.min_spend, rule.discount)]
    return []


def _check_threshold_share(subject: _Subject) -> Iterator[Finding]:
    share, fmt = subject.config.max_share_of_threshold, subject.fmt
    for prefix, spend, discount in _spend_pairs(subject.rule):
        words = f"满{fmt(spend)}减{fmt(discount)}"
        if discount >= spend:
            yield subject.found(
                "L101",
                f"{prefix}discount",
                f"{words}: the discount ({fmt(discount)}) is not less than the minimum spend "
                f"({fmt(spend)}); were the two typed the wrong way round?",
            )
        elif discount > share * spend:
            yield subject.found(
                "L102",
                f"{prefix}discount",
                f"{words}: the discount is {_bps_text(discount * BPS_WHOLE // spend)} of the "
                f"minimum spend, above the {_ratio_text(share)} the shop allows without a reason",
            )


def _check_tier_order(subject: _Subject) -> Iterator[Finding]:
    rule, fmt = subject.rule, subject.fmt
    if isinstance(rule, Threshold):
        for n in range(1, len(rule.tiers)):
            low, high = rule.tiers[n - 1], rule.tiers[n]
            if high.discount < low.discount:
                yield subject.found(
                    "L103",
                    f"tiers[{n}].discount",
                    f"spending {fmt(high.min_spend)} saves {fmt(high.discount)}, less than the "
                    f"{fmt(low.discount)} that {fmt(low.min_spend)} saves",
                )
    elif isinstance(rule, TieredPercent):
        for n in range(1, len(rule.tiers)):
            few, more = rule.tiers[n - 1], rule.tiers[n]
            if more.percent < few.percent:
                yield subject.found(
                    "L103",
                    f"tiers[{n}].percent",
                    f"{more.min_quantity} units get {more.percent}% off, less than the "
                    f"{few.percent}% that {few.min_quantity} units get",
                )


def _percents(rule: Rule) -> list[tuple[str, Decimal]]:
    """Each (path, percent off) the rule gives, buy N get M aside."""
    if isinstance(rule, PercentOff):
        return [("percent", rule.percent)]
    if isinstance(rule, TieredPercent):
        return [(f"tiers[{n}].percent", t.percent) for n, t in enumerate(rule.tiers)]
    if isinstance(rule, MemberPrice):
        return [
            (f"offers[{n}].percent", o.percent)
            for n, o in enumerate(rule.offers)
            if o.percent is not None
        ]
    if isinstance(rule, FirstOrder | Coupon) and rule.percent is not None:
        return [("percent", rule.percent)]
    return []


def _check_percent_cap(subject: _Subject) -> Iterator[Finding]:
    rule, cap = subject.rule, subject.config.max_percent
    for path, percent in _percents(rule):
        if percent > cap:
            yield subject.found(
                "L105", path, f"{percent}% off is above the shop's cap of {cap.normalize():f}%"
            )
    # Buy N get M at p % off takes p * M / (N + M) off the N + M units on average.
    if isinstance(rule, BxGy) and rule.percent * rule.get > cap * (rule.buy + rule.get):
        average = rule.percent * rule.get * 100 // (rule.buy + rule.get) / 100
        yield subject.found(
            "L105",
            "percent",
            f"buy {rule.buy} get {rule.get} at {rule.percent}% off is {average}% off the "
            f"{rule.buy + rule.get} units, above the shop's cap of {cap.normalize():f}%",
        )


def _odd_amounts(named: list[tuple[str, int]], factor: int) -> Iterator[tuple[str, int, int]]:
    """Each (path, amount, median) whose amount is ``factor`` times off the median or more."""
    if len(named) < 2:
        return
    values = sorted(amount for _, amount in named)
    median = values[len(values) // 2]
    for path, amount in named:
        if amount * factor <= median or amount >= median * factor:
            yield path, amount, median


def _times(amount: int, reference: int) -> str:
    """How far apart two amounts are, in words: "about 1/100 of" or "about 100x"."""
    if amount < reference:
        return f"about 1/{reference // max(amount, 1)} of"
    return f"about {amount // max(reference, 1)}x"


def _tier_amounts(rule: Rule) -> list[list[tuple[str, int]]]:
    """Groups of amounts of one rule that should be of one order of magnitude."""
    if isinstance(rule, Threshold):
        return [
            [(f"tiers[{n}].min_spend", t.min_spend) for n, t in enumerate(rule.tiers)],
            [(f"tiers[{n}].discount", t.discount) for n, t in enumerate(rule.tiers)],
        ]
    if isinstance(rule, MemberPrice):
        return [
            [
                (f"offers[{n}].price", o.price)
                for n, o in enumerate(rule.offers)
                if o.price is not None
            ]
        ]
    return []


def _check_tier_units(subject: _Subject) -> Iterator[Finding]:
    factor, fmt = subject.config.unit_mixup_factor, subject.fmt
    for group in _tier_amounts(subject.rule):
        for path, amount, median in _odd_amounts(group, factor):
            yield subject.found(
                "L106",
                path,
                f"{fmt(amount)} is {_times(amount, median)} the rule's other amounts "
                f"(around {fmt(median)}): yuan typed as fen, or the reverse?",
            )


# -- kinds: first order, group-buy, flash sale, coupon; store-wide scope --------------------


def _check_first_order(subject: _Subject) -> Iterator[Finding]:
    rule = subject.rule
    if not isinstance(rule, FirstOrder):
        return
    if not subject.config.identity_signals:
        yield subject.found(
            "L304",
            "",
            "the shop does not link accounts by phone, device, payment or address: every new "
            "account would count as a first order",
        )
    if rule.limits.per_identity is None:
        yield subject.found(
            "L305",
            "limits.per_identity",
            "no per-identity cap: accounts sharing a phone, device, payment or address could "
            "each redeem before any order is paid",
        )


def _check_flash_cap(subject: _Subject) -> Iterator[Finding]:
    rule = subject.rule
    if isinstance(rule, FlashSale) and rule.stock > 1 and rule.per_user_limit >= rule.stock:
        yield subject.found(
            "L307",
            "per_user_limit",
            f"one customer may buy {rule.per_user_limit} units of a stock of {rule.stock}: "
            "the per-user cap does not cap anything",
        )


def _check_coupon_bound(subject: _Subject) -> Iterator[Finding]:
    rule = subject.rule
    if not isinstance(rule, Coupon) or rule.benefit != "percent":
        return
    if rule.cap is None and rule.limits.budget is None:
        yield subject.found(
            "L308",
            "cap",
            f"{rule.quantity} coupons at {rule.percent}% off with no cap and no budget: "
            "nothing bounds what they give in total",
        )


_ONE_PRICE_KINDS = (FixedPrice, FlashSale, GroupBuy)


def _sets_one_price(rule: Rule) -> bool:
    if isinstance(rule, _ONE_PRICE_KINDS):
        return True
    return isinstance(rule, MemberPrice) and any(o.price is not None for o in rule.offers)


def _check_store_wide(subject: _Subject) -> Iterator[Finding]:
    rule = subject.rule
    if not rule.scope.all_items:
        return
    if _sets_one_price(rule):
        yield subject.found(
            "L302",
            "scope.all_items",
            f"a {rule.kind} sets one unit price for every SKU in the store: it only fits one "
            "product line",
        )
    if subject.shelf is not None:
        named = sorted(subject.shelf.categories_named(rule.name) - rule.scope.exclude_categories)
        if named:
            yield subject.found(
                "L302",
                "scope.all_items",
                f"the name mentions the {', '.join(named)} category but the scope is the "
                "whole store",
            )


# -- validity window ------------------------------------------------------------------------


def _check_window(subject: _Subject) -> Iterator[Finding]:
    rule, now, longest = subject.rule, subject.now, subject.config.max_window
    until = rule.valid_until
    if until is None:
        yield subject.found("L403", "valid_until", "no valid_until: the rule never ends")
        return
    if until <= now:
        yield subject.found(
            "L402",
            "valid_until",
            f"ended {until.isoformat()}, before {now.isoformat()}: it can never apply",
        )
        return
    start = now if rule.valid_from is None or rule.valid_from < now else rule.valid_from
    if until - start > longest:
        yield subject.found(
            "L403",
            "valid_until",
            f"runs {(until - start).days} days from {start.isoformat()}, longer than the "
            f"{longest.days} days allowed without a reason",
        )


# -- the catalogue --------------------------------------------------------------------------


class _Shelf:
    """The catalogue indexed by SKU, category and tag, and the SKUs in each scope, memoised."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.currency = catalogue.currency
        self.member_tiers = catalogue.member_tiers
        self.items = tuple(sorted(catalogue.items, key=lambda i: i.sku))
        self._by_sku = {item.sku: item for item in self.items}
        self._by_category: dict[str, list[CatalogueItem]] = {}
        self._by_tag: dict[str, list[CatalogueItem]] = {}
        for item in self.items:
            self._by_category.setdefault(item.category, []).append(item)
            for tag in item.tags:
                self._by_tag.setdefault(tag, []).append(item)
        self._scopes: dict[Scope, tuple[CatalogueItem, ...]] = {}
        names = sorted(self._by_category, key=len, reverse=True)
        alternatives = "|".join(re.escape(name) for name in names)
        # Whole words by ASCII letters: a Chinese name runs words together ("服饰apparel周").
        self._names = re.compile(
            rf"(?<![A-Za-z0-9_-])(?:{alternatives})(?![A-Za-z0-9_-])", re.IGNORECASE
        )
        self._by_lower = {name.lower(): name for name in names}

    def in_scope(self, scope: Scope) -> tuple[CatalogueItem, ...]:
        """The SKUs a rule with this scope may discount, in SKU order."""
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = self._find(scope)
        return found

    def _find(self, scope: Scope) -> tuple[CatalogueItem, ...]:
        if scope.all_items:
            named: Iterable[CatalogueItem] = self.items
        else:
            picked = {sku: self._by_sku[sku] for sku in scope.skus if sku in self._by_sku}
            for category in scope.categories:
                picked.update((i.sku, i) for i in self._by_category.get(category, ()))
            for tag in scope.tags:
                picked.update((i.sku, i) for i in self._by_tag.get(tag, ()))
            named = sorted(picked.values(), key=lambda i: i.sku)
        return tuple(i for i in named if scope.covers(i.sku, i.category, i.tags))

    def categories_named(self, text: str) -> frozenset[str]:
        """The catalogue categories ``text`` mentions as whole words."""
        if not self._by_lower or not text:
            return frozenset()
        return frozenset(self._by_lower[m.group(0).lower()] for m in self._names.finditer(text))


def _check_currency(subject: _Subject) -> Iterator[Finding]:
    shelf = subject.shelf
    if shelf is not None and shelf.currency != subject.rule.currency:
        yield subject.found(
            "L002",
            "currency",
            f"the rule is in {subject.rule.currency}, the catalogue in {shelf.currency}: "
            "the checks on catalogue prices were skipped",
        )


def _check_member_tiers(subject: _Subject) -> Iterator[Finding]:
    rule, shelf = subject.rule, subject.shelf
    if shelf is None or not isinstance(rule, MemberPrice):
        return
    known = ", ".join(sorted(shelf.member_tiers)) or "none"
    for n, offer in enumerate(rule.offers):
        if offer.tier not in shelf.member_tiers:
            yield subject.found(
                "L303",
                f"offers[{n}].tier",
                f"there is no member tier {offer.tier!r} (the shop has: {known})",
            )


def _check_scope_matches(subject: _Subject) -> Iterator[Finding]:
    if not subject.items:
        yield subject.found(
            "L301", "scope", "no SKU in the catalogue is in scope: the rule can never apply"
        )


def _unit_prices(rule: Rule) -> list[tuple[str, int]]:
    """Each (path, unit price) the rule sets."""
    if isinstance(rule, _ONE_PRICE_KINDS):
        return [("price", rule.price)]
    if isinstance(rule, MemberPrice):
        return [
            (f"offers[{n}].price", o.price)
            for n, o in enumerate(rule.offers)
            if o.price is not None
        ]
    return []


def _min_spends(rule: Rule) -> list[tuple[str, int]]:
    """Each (path, minimum spend) the rule has, zero left out."""
    if isinstance(rule, Threshold):
        return [(f"tiers[{n}].min_spend", t.min_spend) for n, t in enumerate(rule.tiers)]
    if isinstance(rule, PercentOff | FirstOrder | Coupon) and rule.min_spend:
        return [("min_spend", rule.min_spend)]
    return []


def _check_catalogue_units(subject: _Subject) -> Iterator[Finding]:
    priced = sorted(i.unit_price for i in subject.items or () if i.unit_price > 0)
    if not priced:
        return
    factor, fmt = subject.config.unit_mixup_factor, subject.fmt
    median, cheapest = priced[len(priced) // 2], priced[0]
    for path, price in _unit_prices(subject.rule):
        if price * factor <= median or price >= median * factor:
            yield subject.found(
                "L107",
                path,
                f"a unit price of {fmt(price)} is {_times(price, median)} the list prices in "
                f"scope (median {fmt(median)}): yuan typed as fen, or the reverse?",
            )
    for path, spend in _min_spends(subject.rule):
        if spend * factor <= cheapest:
            yield subject.found(
                "L107",
                path,
                f"a minimum spend of {fmt(spend)} is {_times(spend, cheapest)} the cheapest SKU "
                f"in scope ({fmt(cheapest)}): every cart meets it; typed in yuan?",
            )


# -- depth: the discount ratio of one rule on one unit --------------------------------------


def _off_bps(list_price: int, price: int) -> int:
    """How much of ``list_price`` a unit price of ``price`` takes off, in basis points."""
    if list_price <= 0 or price >= list_price:
        return 0
    return (list_price - price) * BPS_WHOLE // list_price


def _share_bps(discount: int, base: int | None) -> int | None:
    """``discount`` as a share of ``base`` in basis points (all of it at most)."""
    if base is None or base <= 0:
        return None
    return min(BPS_WHOLE, discount * BPS_WHOLE // base)


def _offer_bps(offer: MemberTierOffer, price: int | None) -> int | None:
    if offer.percent is not None:
        return percent_to_bps(offer.percent)
    if price is None or offer.price is None:
        return None
    return _off_bps(price, offer.price)


def _fixed_or_percent(
    discount: int | None, percent: Decimal | None, min_spend: int, price: int | None
) -> int | None:
    if percent is not None:
        return percent_to_bps(percent)
    return _share_bps(discount or 0, min_spend or price)


def _raw_depth(rule: Rule, price: int | None, tier: str | None) -> int | None:
    """The deepest ratio the rule takes off one unit listed at ``price`` (None: not known
    without a price); ``tier`` picks one member tier's offer."""
    if isinstance(rule, Threshold):
        return max(t.discount * BPS_WHOLE // t.min_spend for t in rule.tiers)
    if isinstance(rule, PercentOff):
        return percent_to_bps(rule.percent)
    if isinstance(rule, TieredPercent):
        return max(percent_to_bps(t.percent) for t in rule.tiers)
    if isinstance(rule, BxGy):
        return percent_to_bps(rule.percent) * rule.get // (rule.buy + rule.get)
    if isinstance(rule, MemberPrice):
        offers = [o for o in rule.offers if tier is None or o.tier == tier]
        depths = [d for d in (_offer_bps(o, price) for o in offers) if d is not None]
        return max(depths, default=0 if tier is not None else None)
    if isinstance(rule, FirstOrder | Coupon):
        return _fixed_or_percent(rule.discount, rule.percent, rule.min_spend, price)
    return None if price is None else _off_bps(price, rule.price)


def _depth(rule: Rule, price: int | None, tier: str | None = None) -> int | None:
    """:func:`_raw_depth` capped by the rule's own ``max_discount_ratio``."""
    depth = _raw_depth(rule, price, tier)
    if depth is None or rule.max_discount_ratio is None:
        return depth
    return min(depth, int(rule.max_discount_ratio * BPS_WHOLE))


def _scope_depth(rule: Rule, items: Sequence[CatalogueItem] | None) -> int | None:
    """The deepest ratio the rule takes off one unit of any SKU in scope."""
    plain = _depth(rule, None)
    if plain is not None or items is None:
        return plain
    depths = [_depth(rule, price) for price in {i.unit_price for i in items}]
    return max((d for d in depths if d is not None), default=0)


# -- floors and costs: the rule alone -------------------------------------------------------


def _ceil_div(amount: int, by: int) -> int:
    return -(-amount // by)


def _spend_boundaries(rule: Rule) -> set[int]:
    """The spends at which the rule starts to give, or gives more."""
    found = {spend for _, spend in _min_spends(rule)}
    if isinstance(rule, Threshold) and rule.repeat and rule.repeat_cap is not None:
        tier = rule.tiers[0]
        found.add(tier.min_spend * _ceil_div(rule.repeat_cap, tier.discount))
    return found


def _count_boundaries(rule: Rule) -> set[int]:
    """The unit counts at which the rule starts to give, or gives more."""
    if isinstance(rule, TieredPercent):
        return {t.min_quantity for t in rule.tiers}
    if isinstance(rule, BxGy):
        return {rule.buy + rule.get}
    return set()


def _timeless(rule: Rule) -> Rule:
    """The rule without its window: lint asks what it does when live, whenever that is."""
    if rule.valid_from is None and rule.valid_until is None:
        return rule
    return rule.model_copy(update={"valid_from": None, "valid_until": None})


def _shopper(
    rules: Iterable[Rule], tier: str | None, unavailable: Mapping[str, str] | None = None
) -> Customer:
    """A customer with every advantage the rules offer: first order, every group place and
    coupon, and the member ``tier``."""
    rules = list(rules)
    return Customer(
        id=_SHOPPER,
        member_tier=tier,
        first_order=True,
        groups=frozenset(r.id for r in rules if isinstance(r, GroupBuy)),
        coupons=frozenset(r.id for r in rules if isinstance(r, Coupon)),
        unavailable=unavailable or {},
    )


def _cart(lines: Iterable[tuple[CatalogueItem, int]], currency: str) -> Cart:
    """A cart of catalogue SKUs at list price with no floor prices (the guard would hide what
    lint looks for). Built unvalidated: the catalogue was validated, SKUs are distinct."""
    return Cart.model_construct(
        currency=currency,
        lines=tuple(
            CartLine.model_construct(
                sku=item.sku,
                category=item.category,
                tags=item.tags,
                unit_price=item.unit_price,
                quantity=quantity,
                floor_price=None,
            )
            for item, quantity in lines
        ),
    )


def _alone_quantities(rule: Rule, unit_price: int) -> list[int]:
    counts = {1, *_count_boundaries(rule)}
    counts.update(_ceil_div(spend, unit_price) for spend in _spend_boundaries(rule))
    return sorted(q for q in counts if q <= _MAX_UNITS)


def _cheapest_unit(
    ruleset: RuleSet, shoppers: list[Customer], item: CatalogueItem, subject: _Subject
) -> tuple[int, int]:
    """The lowest (total, units) per unit one SKU reaches under the rule alone."""
    best = (item.unit_price, 1)
    for quantity in _alone_quantities(subject.rule, item.unit_price):
        cart = _cart([(item, quantity)], subject.rule.currency)
        for shopper in shoppers:
            total = ruleset.quote(cart, shopper, subject.now).total
            if total * best[1] < best[0] * quantity:
                best = (total, quantity)
    return best


def _check_floors(subject: _Subject) -> Iterator[Finding]:
    rule, fmt = subject.rule, subject.fmt
    guarded = [i for i in subject.items or () if i.unit_price and i.lowest_allowed() is not None]
    if not guarded:
        return
    ruleset = RuleSet([_timeless(rule)], _NO_GUARD)
    tiers = [o.tier for o in rule.offers] if isinstance(rule, MemberPrice) else [None]
    shoppers = [_shopper([rule], tier) for tier in tiers]
    # On a one-SKU cart the outcome depends on the list price only: price each once.
    by_price: dict[int, tuple[int, int]] = {}
    breaches: list[str] = []
    for item in guarded:
        if item.unit_price not in by_price:
            by_price[item.unit_price] = _cheapest_unit(ruleset, shoppers, item, subject)
        total, units = by_price[item.unit_price]
        lowest = item.lowest_allowed() or 0
        if total < lowest * units:
            each = f"{fmt(total // units)} a unit" + (f" ({units} units)" if units > 1 else "")
            breaches.append(f"{item.sku} at {each}, lowest allowed {fmt(lowest)}")
    if breaches:
        yield subject.found(
            "L201",
            _benefit_path(rule),
            f"{len(breaches)} SKU(s) would sell under their floor price or cost: "
            + _listed(breaches),
        )


def _listed(parts: list[str]) -> str:
    more = len(parts) - _SHOWN
    return "; ".join(parts[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _benefit_path(rule: Rule) -> str:
    """The field that says how much the rule gives."""
    if isinstance(rule, Threshold | TieredPercent):
        return "tiers"
    if isinstance(rule, MemberPrice):
        return "offers"
    if isinstance(rule, FirstOrder | Coupon):
        return "discount" if rule.discount is not None else "percent"
    if isinstance(rule, PercentOff | BxGy):
        return "percent"
    return "price"


# -- stacking: the worst cart ---------------------------------------------------------------


class _Pool:
    """The rules a linted rule may stack with: indexed by the SKUs, categories and tags their
    scopes name, and compiled once, without windows, for pricing."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self._everywhere: list[Rule] = []
        self._by_sku: dict[str, list[Rule]] = {}
        self._by_category: dict[str, list[Rule]] = {}
        self._by_tag: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            scope = rule.scope
            if scope.all_items:
                self._everywhere.append(rule)
            for sku in scope.skus:
                self._by_sku.setdefault(sku, []).append(rule)
            for category in scope.categories:
                self._by_category.setdefault(category, []).append(rule)
            for tag in scope.tags:
                self._by_tag.setdefault(tag, []).append(rule)
        self._ruleset: RuleSet | None = None
        self._scores: dict[str, int] = {}

    @property
    def ruleset(self) -> RuleSet:
        """Every rule of the pool, compiled on first use, the shop-wide guard off."""
        if self._ruleset is None:
            timeless = [_timeless(rule) for rule in self.rules.values()]
            self._ruleset = RuleSet(timeless, _NO_GUARD)
        return self._ruleset

    def targeting(self, item: CatalogueItem) -> dict[str, Rule]:
        """The rules that name this SKU, its category or one of its tags (exclusions heeded)."""
        named = self._by_sku.get(item.sku, []) + self._by_category.get(item.category, [])
        for tag in item.tags:
            named += self._by_tag.get(tag, [])
        return {r.id: r for r in named if r.scope.covers(item.sku, item.category, item.tags)}

    def covering(self, item: CatalogueItem) -> dict[str, Rule]:
        """Every rule whose scope takes in this SKU."""
        found = self.targeting(item)
        for rule in self._everywhere:
            if rule.scope.covers(item.sku, item.category, item.tags):
                found[rule.id] = rule
        return found

    def score(self, item: CatalogueItem) -> int:
        """How deep the rules that target this SKU go on it together (best item price plus the
        rest); store-wide rules are left out, as they add the same to every SKU."""
        score = self._scores.get(item.sku)
        if score is None:
            score = self._scores[item.sku] = _stack_depth(
                self.targeting(item).values(), item.unit_price, None
            )
        return score


def _stack_depth(rules: Iterable[Rule], price: int, tier: str | None) -> int:
    """A rough depth of several rules on one unit: the best item price plus everything else."""
    item_best = rest = 0
    for rule in rules:
        depth = _depth(rule, price, tier) or 0
        if rule.LAYER is Layer.ITEM:
            item_best = max(item_best, depth)
        else:
            rest += depth
    return item_best + rest


def _seeds(items: Sequence[CatalogueItem], pool: _Pool, limit: int) -> list[CatalogueItem]:
    """The SKUs the search starts from: those the pool discounts deepest, then the cheapest."""
    priced = [i for i in items if i.unit_price > 0]
    deep = heapq.nsmallest(limit, priced, key=lambda i: (-pool.score(i), i.unit_price, i.sku))
    cheap = heapq.nsmallest(max(2, limit // 4), priced, key=lambda i: (i.unit_price, i.sku))
    return list({i.sku: i for i in deep + cheap}.values())


def _live_window(rule: Rule, now: datetime) -> tuple[datetime, datetime | None] | None:
    """When the rule can apply from ``now`` on; None if never."""
    start = now if rule.valid_from is None or rule.valid_from < now else rule.valid_from
    if rule.valid_until is not None and rule.valid_until <= start:
        return None
    return start, rule.valid_until


def _meets(rule: Rule, window: tuple[datetime, datetime | None]) -> bool:
    """Whether the rule's window overlaps ``window``."""
    start, end = window
    if rule.valid_until is not None and rule.valid_until <= start:
        return False
    return end is None or rule.valid_from is None or rule.valid_from < end


def _best_tier(in_play: Mapping[str, Rule], seeds: Sequence[CatalogueItem]) -> str | None:
    """The member tier whose offers on the seed SKUs are deepest in sum."""
    scores: dict[str, int] = {}
    for rule in in_play.values():
        if not isinstance(rule, MemberPrice):
            continue
        covered = [s for s in seeds if rule.scope.covers(s.sku, s.category, s.tags)]
        for offer in rule.offers:
            depth = max((_offer_bps(offer, s.unit_price) or 0 for s in covered), default=0)
            scores[offer.tier] = scores.get(offer.tier, 0) + depth
    return min(scores, key=lambda tier: (-scores[tier], tier)) if scores else None


_Lines = tuple[tuple[CatalogueItem, int], ...]


class _Carts:
    """The carts the search prices, in the order they are built, each once, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.carts: dict[tuple[tuple[str, int], ...], _Lines] = {}

    def add(self, *lines: tuple[CatalogueItem, int]) -> None:
        if len(self.carts) >= self.limit or any(q < 1 or q > _MAX_UNITS for _, q in lines):
            return
        key = tuple(sorted((item.sku, q) for item, q in lines))
        if len({sku for sku, _ in key}) == len(key):
            self.carts.setdefault(key, lines)


def _search_carts(
    seeds: list[CatalogueItem],
    in_play: Mapping[str, Rule],
    after: Mapping[str, int],
    limit: int,
) -> list[_Lines]:
    """Carts likely to be discounted deepest, most promising first: see the module docstring
    (L202). Spend tiers are reached at the seed's price after the item layer (what order-level
    rules see), and only then, if the cap allows, at its list price."""
    spends = sorted({b for r in in_play.values() for b in _spend_boundaries(r)})[:12]
    counts = sorted({b for r in in_play.values() for b in _count_boundaries(r)})[:6]
    carts = _Carts(limit)
    top = seeds[:3]
    for seed in seeds:
        carts.add((seed, 1))
    for seed in top:
        for count in counts:
            carts.add((seed, count))
        for spend in spends:
            carts.add((seed, _ceil_div(spend, after[seed.sku])))
    filler = min(seeds, key=lambda s: (after[s.sku], s.sku))
    for seed in top:
        for spend in spends:
            short = spend - after[seed.sku]
            if seed is not filler and short > 0:
                carts.add((seed, 1), (filler, _ceil_div(short, after[filler.sku])))
    carts.add(*((seed, 1) for seed in top))
    for seed in top:
        for spend in spends:
            carts.add((seed, _ceil_div(spend, seed.unit_price)))
    return list(carts.carts.values())


def _after_item_layer(seed: CatalogueItem, rules: Iterable[Rule], tier: str | None) -> int:
    """A seed's unit price after the best item-layer offer on it (at least 1)."""
    depth = max(
        (_depth(r, seed.unit_price, tier) or 0 for r in rules if r.LAYER is Layer.ITEM),
        default=0,
    )
    return max(1, seed.unit_price - seed.unit_price * depth // BPS_WHOLE)


def _worse(quote: Quote, than: Quote | None) -> bool:
    if than is None:
        return True
    return quote.discount_total * than.list_total > than.discount_total * quote.list_total


def _check_stacking(subject: _Subject, pool: _Pool) -> Iterator[Finding]:
    rule, config = subject.rule, subject.config
    window = _live_window(rule, subject.now)
    seeds = _seeds(subject.items or (), pool, config.search_items)
    if window is None or not seeds:
        return
    covering = [pool.covering(seed) for seed in seeds]
    in_play: dict[str, Rule] = {rule.id: rule}
    for found in covering:
        in_play.update(found)
    unavailable = {
        rid: "not live at the same time"
        for rid, other in in_play.items()
        if rid != rule.id and not _meets(other, window)
    }
    tier = _best_tier(in_play, seeds)
    shopper = _shopper(in_play.values(), tier, unavailable)
    after = {
        seed.sku: _after_item_layer(seed, found.values(), tier)
        for seed, found in zip(seeds, covering, strict=True)
    }
    worst: tuple[Quote, _Lines] | None = None
    for lines in _search_carts(seeds, in_play, after, config.search_carts):
        quote = pool.ruleset.quote(_cart(lines, rule.currency), shopper, subject.now)
        gave = any(d.rule_id == rule.id and d.amount > 0 for d in quote.discounts)
        if gave and _worse(quote, None if worst is None else worst[0]):
            worst = (quote, lines)
    if (
        worst is not None
        and worst[0].discount_total > config.max_discount_ratio * worst[0].list_total
    ):
        yield subject.found("L202", "", _worst_words(subject, *worst))


def _worst_words(subject: _Subject, quote: Quote, lines: _Lines) -> str:
    fmt = subject.fmt
    cart = ", ".join(f"{q} × {item.sku}" for item, q in lines)
    rules = ", ".join(sorted({d.rule_id for d in quote.discounts if d.amount > 0}))
    share = _bps_text(quote.discount_total * BPS_WHOLE // quote.list_total)
    limit = _ratio_text(subject.config.max_discount_ratio)
    return (
        f"the cart {cart} (list {fmt(quote.list_total)}) gets {fmt(quote.discount_total)} off "
        f"({share}) from {rules}, above the {limit} the shop allows"
    )


def _bps_text(bps: int) -> str:
    """Basis points as a percent: 6371 -> "63.71%"."""
    whole, part = divmod(bps, 100)
    return f"{whole}.{part:02d}%" if part else f"{whole}%"


def _ratio_text(ratio: Decimal) -> str:
    """A ratio as a percent: Decimal("0.5") -> "50%"."""
    return f"{(ratio * 100).normalize():f}%"


_CHECKS: tuple[_Check, ...] = (
    _check_threshold_share,
    _check_tier_order,
    _check_percent_cap,
    _check_tier_units,
    _check_first_order,
    _check_flash_cap,
    _check_coupon_bound,
    _check_store_wide,
    _check_window,
    _check_currency,
    _check_member_tiers,
)
"""Checks every rule gets (those reading the catalogue skip themselves without one)."""

_CATALOGUE_CHECKS: tuple[_Check, ...] = (
    _check_scope_matches,
    _check_catalogue_units,
    _check_floors,
)
"""Checks that need the SKUs in scope (a catalogue in the rule's currency)."""


# -- a change to a live campaign ------------------------------------------------------------


def _audience(subject: _Subject) -> dict[str, tuple[str, int | None]]:
    """What the rule reaches, by field path: (what, how many; None for no cap)."""
    rule = subject.rule
    found: dict[str, tuple[str, int | None]] = {
        "limits.max_redemptions": ("redemptions", rule.limits.max_redemptions),
        "limits.budget": ("budget", rule.limits.budget),
    }
    if subject.items is not None:
        found["scope"] = ("SKUs in scope", len(subject.items))
    if isinstance(rule, MemberPrice):
        found["offers"] = ("member tiers", len(rule.offers))
    if isinstance(rule, FlashSale):
        found["stock"] = ("units of stock", rule.stock)
    if isinstance(rule, Coupon):
        found["quantity"] = ("coupons", rule.quantity)
    return found


def _widened(old: int | None, new: int | None, factor: Decimal) -> bool:
    if old is None:
        return False  # there was no cap, or nothing to compare
    if new is None:
        return True  # a cap went
    return new > 0 if old == 0 else new > factor * old


def _check_change(subject: _Subject, before: _Subject) -> Iterator[Finding]:
    factor, fmt = subject.config.widen_factor, subject.fmt
    was = _audience(before)
    for path, (what, new) in _audience(subject).items():
        old = was.get(path, (what, None))[1]
        if _widened(old, new, factor):
            money = path == "limits.budget"
            yield subject.found(
                "L501",
                path,
                f"{what}: {_count_text(old, money, fmt)} live, {_count_text(new, money, fmt)} "
                f"in this version, more than {factor.normalize():f}x",
            )
    old_depth = _scope_depth(before.rule, before.items)
    new_depth = _scope_depth(subject.rule, subject.items)
    if old_depth is not None and new_depth is not None and _widened(old_depth, new_depth, factor):
        yield subject.found(
            "L502",
            _benefit_path(subject.rule),
            f"the deepest discount goes from {_bps_text(old_depth)} live to "
            f"{_bps_text(new_depth)} in this version, more than {factor.normalize():f}x",
        )


def _count_text(count: int | None, money: bool, fmt: Callable[[int], str]) -> str:
    if count is None:
        return "no cap"
    return fmt(count) if money else f"{count:,}"
