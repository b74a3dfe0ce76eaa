"""Alert rules: which detector watches what, how far is too far, and what to do about it.

Rules live in a TOML file, one ``[[rule]]`` table each (the bundled defaults are
``default_rules.toml`` next to this module, read by :func:`default_rules`)::

    [[rule]]
    name = "discount-above-profile"      # unique; alerts and cooldowns are keyed by it
    detector = "discount_profile"        # see DETECTORS
    threshold = 1.5                      # its meaning depends on the detector (below)
    window_seconds = 60                  # the sliding window the detector looks at
    severity = "P1"                      # P0 (worst) .. P3
    actions = ["notify", "incident", "pause"]
    min_events = 5                       # optional, default 5
    cooldown_seconds = 300               # optional, default 300: one alert per subject per cooldown
    [rule.params]                        # optional, detector-specific (below)
    tail_share_bps = 1000

TOML floats are read as exact decimals. What ``threshold`` means, and each detector's params (every
detector also takes ``max_keys`` and ``max_events_per_key``, default 100,000 each: the memory
bound of one rule, see :mod:`promoguard.monitoring.detectors`):

``discount_profile``
    a factor (≥ 1) on the expected profile's p95 discount rate and p95 discount per order.
    ``tail_share_bps`` (default 1,000): the share of a version's orders that may lie above those
    limits by chance; ``min_evidence`` (default 16): how surprising, in nats, the excess must be.
``redemption_velocity``
    a factor (> 1) on the baseline redemptions per window. ``baseline_windows`` (default 10): how
    many past windows make the baseline.
``identity_cluster``
    distinct accounts (an integer ≥ 2) on one identity signal within the window.
    ``ignore_kinds`` (default ``["account"]``): identity kinds not to watch.
``tier_mix``
    basis points (1-9,999) a tier's share may exceed its expected share by (also the gap that
    makes a version one that prices by tier). ``scope`` (``"campaign"``, default: per version that
    prices by tier, its discounted orders against the profile's ``discounted_tier_mix_bps``;
    ``"all"``: every order against ``expected_mix_bps`` or, without it, the profiles'
    ``member_tier_mix_bps``); ``expected_mix_bps`` (tier -> basis points);
    ``min_evidence`` (default 16, as above); ``shop_evidence`` (default 24): the evidence the
    test over every order needs (it runs on every order, so it is tested far more often);
    ``assist_evidence`` (default 4): the evidence enough for a version while the same tier is
    over-represented in every order.
``route_slo``
    ``metric = "error_rate"`` (default): a ratio in (0, 1) of answers with status ≥ 500;
    ``metric = "p99_seconds"``: seconds the nearest-rank p99 latency may reach (judged over 100
    requests at least, whatever ``min_events`` says). ``routes``
    (default: every route): the route names to watch.
``claim_failures``
    a ratio in (0, 1) of coupon claims that failed unexpectedly. ``ignore_codes`` (default
    ``rate_limited``, ``coupon_sold_out``, ``coupon_limit_reached``, ``coupon_not_claimable``): the
    refusals that are the shop's rules working, not failures.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from importlib import resources
from types import MappingProxyType
from typing import Any

from promoguard.money import BPS_WHOLE

__all__ = [
    "DETECTORS",
    "EXPECTED_REFUSALS",
    "SEVERITIES",
    "Action",
    "AlertRule",
    "AlertRulesError",
    "default_rules",
    "load_rules",
    "rule_errors",
]

SEVERITIES = ("P0", "P1", "P2", "P3")
"""Incident grades, worst first."""

EXPECTED_REFUSALS = (
    "rate_limited",
    "coupon_sold_out",
    "coupon_limit_reached",
    "coupon_not_claimable",
)
"""Claim refusals that are the shop's rules working (a rush, a per-user limit, a paused or
expired coupon), so ``claim_failures`` does not count them unless a rule says otherwise."""

_MAX_NAME = 100


class Action(StrEnum):
    """What an alert does once raised."""

    NOTIFY = "notify"
    INCIDENT = "incident"
    PAUSE = "pause"


class AlertRulesError(ValueError):
    """Alert rules that cannot be used; ``errors`` lists every ``(path, reason)``."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in self.errors))


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One detector with its threshold, window, severity and actions."""

    name: str
    detector: str
    threshold: Decimal
    window_seconds: int
    severity: str
    actions: tuple[Action, ...]
    min_events: int = 5
    cooldown_seconds: int = 300
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def param(self, key: str) -> Any:
        """The rule's value of a detector param, or the param's documented default."""
        if key in self.params:
            return self.params[key]
        return _PARAMS[self.detector][key].default


# -- params -----------------------------------------------------------------------------------

_Check = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class _Param:
    default: Any
    check: _Check


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: int) -> _Check:
    def check(value: Any) -> str | None:
        if _is_int(value) and low <= value <= high:
            return None
        return f"must be an integer from {low} to {high}"

    return check


def _positive_number(value: Any) -> str | None:
    number = _number(value)
    return None if number is not None and number > 0 else "must be a number above 0"


def _one_of(*options: str) -> _Check:
    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return check


def _names(value: Any) -> str | None:
    if isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value):
        return None
    return "must be a list of names"


def _mix(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return "must be a table of tier = basis points"
    bad = [k for k, v in value.items() if not (_is_int(v) and 0 <= v <= BPS_WHOLE)]
    return f"shares must be integers from 0 to {BPS_WHOLE} (not {bad[0]})" if bad else None


_COMMON = {
    "max_keys": _Param(100_000, _int_in(1, 10_000_000)),
    "max_events_per_key": _Param(100_000, _int_in(1, 10_000_000)),
}
_EVIDENCE = _Param(Decimal(16), _positive_number)

_PARAMS: dict[str, dict[str, _Param]] = {
    "discount_profile": {
        **_COMMON,
        "tail_share_bps": _Param(1_000, _int_in(1, BPS_WHOLE - 1)),
        "min_evidence": _EVIDENCE,
    },
    "redemption_velocity": {**_COMMON, "baseline_windows": _Param(10, _int_in(1, 100))},
    "identity_cluster": {**_COMMON, "ignore_kinds": _Param(("account",), _names)},
    "tier_mix": {
        **_COMMON,
        "scope": _Param("campaign", _one_of("campaign", "all")),
        "expected_mix_bps": _Param(None, _mix),
        "min_evidence": _EVIDENCE,
        "shop_evidence": _Param(Decimal(24), _positive_number),
        "assist_evidence": _Param(Decimal(4), _positive_number),
    },
    "route_slo": {
        **_COMMON,
        "metric": _Param("error_rate", _one_of("error_rate", "p99_seconds")),
        "routes": _Param((), _names),
    },
    "claim_failures": {**_COMMON, "ignore_codes": _Param(EXPECTED_REFUSALS, _names)},
}

DETECTORS = tuple(_PARAMS)
"""Every detector a rule can name."""


# -- thresholds -------------------------------------------------------------------------------


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _factor_at_least_one(rule: AlertRule) -> str | None:
    return None if rule.threshold >= 1 else "must be a factor of at least 1"


def _factor_above_one(rule: AlertRule) -> str | None:
    return None if rule.threshold > 1 else "must be a factor above 1"


def _accounts(rule: AlertRule) -> str | None:
    whole = rule.threshold == rule.threshold.to_integral_value()
    return None if whole and rule.threshold >= 2 else "must be a whole number of accounts, ≥ 2"


def _bps(rule: AlertRule) -> str | None:
    whole = rule.threshold == rule.threshold.to_integral_value()
    return None if whole and 0 < rule.threshold < BPS_WHOLE else "must be basis points, 1-9999"


def _ratio(rule: AlertRule) -> str | None:
    return None if 0 < rule.threshold < 1 else "must be a ratio between 0 and 1"


def _slo(rule: AlertRule) -> str | None:
    if rule.params.get("metric") == "p99_seconds":
        return None if rule.threshold > 0 else "must be seconds above 0"
    return _ratio(rule)


_THRESHOLDS: dict[str, Callable[[AlertRule], str | None]] = {
    "discount_profile": _factor_at_least_one,
    "redemption_velocity": _factor_above_one,
    "identity_cluster": _accounts,
    "tier_mix": _bps,
    "route_slo": _slo,
    "claim_failures": _ratio,
}


# -- checking a rule --------------------------------------------------------------------------


def _name_error(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        return "must be a non-blank name without surrounding spaces"
    return None if len(name) <= _MAX_NAME else f"must be at most {_MAX_NAME} characters"


def _actions_error(actions: Sequence[Any]) -> str | None:
    if not actions:
        return "must name at least one action"
    if not all(isinstance(a, Action) for a in actions):
        return f"must be among {', '.join(Action)}"
    return "each action once" if len(set(actions)) != len(actions) else None


def _params_errors(detector: str, params: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    known = _PARAMS.get(detector)
    if known is None:
        return []
    errors = [(f"{path}.params.{k}", "unknown param") for k in params if k not in known]
    for key, value in params.items():
        reason = known[key].check(value) if key in known else None
        if reason:
            errors.append((f"{path}.params.{key}", reason))
    return errors


def rule_errors(rule: AlertRule, path: str = "rule") -> list[tuple[str, str]]:
    """Every ``(path, reason)`` that makes a rule unusable; empty when it is fine."""
    if rule.detector not in _PARAMS:
        return [(f"{path}.detector", f"unknown detector; one of {', '.join(DETECTORS)}")]
    checks = {
        "name": _name_error(rule.name),
        "severity": None if rule.severity in SEVERITIES else f"one of {', '.join(SEVERITIES)}",
        "actions": _actions_error(rule.actions),
        "window_seconds": None if rule.window_seconds >= 1 else "must be at least 1 second",
        "min_events": None if rule.min_events >= 1 else "must be at least 1",
        "cooldown_seconds": None if rule.cooldown_seconds >= 0 else "cannot be negative",
        "threshold": _THRESHOLDS[rule.detector](rule),
    }
    errors = [(f"{path}.{key}", reason) for key, reason in checks.items() if reason]
    return errors + _params_errors(rule.detector, rule.params, path)


# -- reading TOML -----------------------------------------------------------------------------


class _BadFieldError(Exception):
    """A field of the wrong type (the reason is the message)."""


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _BadFieldError("must be a string")
    return value


def _int(value: Any) -> int:
    if not _is_int(value):
        raise _BadFieldError("must be an integer")
    return int(value)


def _threshold(value: Any) -> Decimal:
    number = _number(value)
    if number is None:
        raise _BadFieldError("must be a number")
    return number


def _actions(value: Any) -> tuple[Action, ...]:
    if not isinstance(value, list):
        raise _BadFieldError("must be a list of actions")
    try:
        return tuple(Action(_str(a)) for a in value)
    except (ValueError, _BadFieldError):
        raise _BadFieldError(f"each must be one of {', '.join(Action)}") from None


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _params(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _BadFieldError("must be a table")
    frozen: Mapping[str, Any] = _frozen(value)
    return frozen


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": _str,
    "detector": _str,
    "threshold": _threshold,
    "window_seconds": _int,
    "severity": _str,
    "actions": _actions,
    "min_events": _int,
    "cooldown_seconds": _int,
    "params": _params,
}
_REQUIRED = ("name", "detector", "threshold", "window_seconds", "severity", "actions")


def _parse_rule(raw: Any, path: str) -> tuple[AlertRule | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [(path, "must be a table")]
    errors = [(f"{path}.{key}", "unknown key") for key in raw if key not in _FIELDS]
    errors += [(f"{path}.{key}", "missing") for key in _REQUIRED if key not in raw]
    values: dict[str, Any] = {}
    for key, parse in _FIELDS.items():
        if key not in raw:
            continue
        try:
            values[key] = parse(raw[key])
        except _BadFieldError as exc:
            errors.append((f"{path}.{key}", str(exc)))
    if errors:
        params = values.get("params", {})
        return None, errors + _params_errors(values.get("detector", ""), params, path)
    rule = AlertRule(**values)
    return rule, rule_errors(rule, path)


def _duplicates(rules: Sequence[tuple[int, AlertRule]]) -> list[tuple[str, str]]:
    first: dict[str, int] = {}
    errors = []
    for index, rule in rules:
        if rule.name in first:
            errors.append((f"rule[{index}].name", f"duplicate of rule[{first[rule.name]}]"))
        first.setdefault(rule.name, index)
    return errors


def load_rules(text: str) -> list[AlertRule]:
    """Read alert rules from TOML; raise :class:`AlertRulesError` listing every problem."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise AlertRulesError([("(file)", f"not valid TOML: {exc}")]) from None
    errors = [(key, "unknown key; rules are [[rule]] tables") for key in data if key != "rule"]
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise AlertRulesError([*errors, ("rule", "must be [[rule]] tables")])
    parsed: list[tuple[int, AlertRule]] = []
    for index, raw in enumerate(raw_rules):
        rule, problems = _parse_rule(raw, f"rule[{index}]")
        errors += problems
        if rule is not None:
            parsed.append((index, rule))
    errors += _duplicates(parsed)
    if errors:
        raise AlertRulesError(errors)
    return [rule for _, rule in parsed]


def default_rules() -> list[AlertRule]:
    """The bundled default alert rules (``default_rules.toml``)."""
    text = (
        resources.files("promoguard.monitoring").joinpath("default_rules.toml").read_text("utf-8")
    )
    return load_rules(text)
