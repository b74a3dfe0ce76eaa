"""The shop's remediation policy, per incident severity: what undercharged orders get and what
compensation looks like.

Defaults (each severity can be overridden, field by field):

========  ===============  ==========================================  ==========  ===========
severity  undercharged     compensation coupon                         validity    extend the
                                                                                    campaign
========  ===============  ==========================================  ==========  ===========
P0        honour           10 % of the order, at least 10.00, at most  30 days     7 days
                           100.00, no threshold
P1        honour           5 % of the order, at least 5.00, at most    30 days     3 days
                           50.00, no threshold
P2        honour           10.00 fixed, no threshold                   30 days     none
P3        honour           5.00 fixed, no threshold                    30 days     none
========  ===============  ==========================================  ==========  ===========

Amounts are minor units of the order's currency (fen for CNY). *Honour* keeps the customer's
better price: the shop carries its own mistake. ``cancel_unshipped`` instead cancels an
undercharged order that has not shipped yet (refunding what was paid), with a notice and the
compensation coupon; a shipped one is honoured whatever the policy.

A percentage compensation is rounded up to the minor unit (in the customer's favour) and then
held between ``min_value`` and ``max_value``.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promoguard.money import BPS_WHOLE

__all__ = ["Compensation", "RemediationPolicy", "SeverityPolicy", "UnderchargedAction"]

UnderchargedAction = Literal["honour", "cancel_unshipped"]

_MAX_AMOUNT = 10**10
"""A sanity bound on any configured amount (100 million yuan in fen)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Compensation(_Frozen):
    """A compensation coupon: a fixed value, or basis points of the order's charged total
    held between two bounds; with a spending threshold or none."""

    kind: Literal["fixed", "percent"] = "fixed"
    value: int = Field(
        default=1000,
        ge=0,
        le=_MAX_AMOUNT,
        description="fixed: the coupon's value in minor units (ignored for percent)",
    )
    percent_bps: int = Field(
        default=0, ge=0, le=BPS_WHOLE, description="percent: basis points of the order total"
    )
    min_value: int = Field(default=0, ge=0, le=_MAX_AMOUNT, description="percent: lower bound")
    max_value: int = Field(
        default=_MAX_AMOUNT, ge=0, le=_MAX_AMOUNT, description="percent: upper bound"
    )
    min_spend: int = Field(
        default=0, ge=0, le=_MAX_AMOUNT, description="the coupon's threshold; 0 = no threshold"
    )
    valid_days: int = Field(default=30, ge=1, le=3650)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Self:
        if self.min_value > self.max_value:
            raise ValueError("min_value must not be above max_value")
        if self.kind == "percent" and not self.percent_bps:
            raise ValueError("a percent compensation needs percent_bps above zero")
        return self

    def value_for(self, order_total: int) -> int:
        """The coupon's value for an order that charged ``order_total`` minor units."""
        if self.kind == "fixed":
            return self.value
        # Ceiling division: the coupon is rounded up, never down, for the customer.
        raw = -(-order_total * self.percent_bps // BPS_WHOLE)
        return max(self.min_value, min(self.max_value, raw))


class SeverityPolicy(_Frozen):
    """What remediation does for one severity."""

    undercharged: UnderchargedAction = "honour"
    compensation: Compensation = Field(default_factory=Compensation)
    extend_campaign_days: int = Field(
        default=0,
        ge=0,
        le=365,
        description="days the faulty campaign stays open for the affected customers",
    )


def _percent(bps: int, low: int, high: int, extend: int) -> SeverityPolicy:
    return SeverityPolicy(
        compensation=Compensation(
            kind="percent", percent_bps=bps, min_value=low, max_value=high, value=0
        ),
        extend_campaign_days=extend,
    )


def _fixed(value: int) -> SeverityPolicy:
    return SeverityPolicy(compensation=Compensation(kind="fixed", value=value))


class RemediationPolicy(_Frozen):
    """The policy for each severity, P0 (worst) to P3; see the module docstring for defaults."""

    P0: SeverityPolicy = Field(default_factory=lambda: _percent(1000, 1000, 10000, 7))
    P1: SeverityPolicy = Field(default_factory=lambda: _percent(500, 500, 5000, 3))
    P2: SeverityPolicy = Field(default_factory=lambda: _fixed(1000))
    P3: SeverityPolicy = Field(default_factory=lambda: _fixed(500))

    def for_severity(self, severity: str) -> SeverityPolicy:
        """The policy of a severity (``"P0"`` … ``"P3"``)."""
        if severity not in ("P0", "P1", "P2", "P3"):
            raise ValueError(f"no severity {severity!r}: P0 to P3")
        found: SeverityPolicy = getattr(self, severity)
        return found
