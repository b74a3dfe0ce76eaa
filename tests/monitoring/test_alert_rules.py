"""Alert rules from TOML: the bundled defaults load, and a bad file is refused with every problem
named by its path."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources

import pytest

from promoguard.monitoring.alert_rules import (
    DETECTORS,
    EXPECTED_REFUSALS,
    Action,
    AlertRule,
    AlertRulesError,
    default_rules,
    load_rules,
    rule_errors,
)
from promoguard.monitoring.detectors import Monitor

GOOD = """
[[rule]]
name = "discount-above-profile"
detector = "discount_profile"
threshold = 1.5
window_seconds = 60
severity = "P1"
actions = ["notify", "incident", "pause"]
"""


def errors_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(AlertRulesError) as caught:
        load_rules(text)
    return caught.value.errors


def paths_of(text: str) -> list[str]:
    return [path for path, _ in errors_of(text)]


def with_rule(**fields: object) -> str:
    """A one-rule file: the good rule with some fields replaced (None removes one)."""
    base: dict[str, object] = {
        "name": '"r"',
        "detector": '"discount_profile"',
        "threshold": "1.5",
        "window_seconds": "60",
        "severity": '"P1"',
        "actions": '["notify"]',
    }
    base.update(fields)
    lines = [f"{key} = {value}" for key, value in base.items() if value is not None]
    return "[[rule]]\n" + "\n".join(lines) + "\n"


# -- the bundled defaults ---------------------------------------------------------------------


def test_the_default_rules_load_and_cover_every_detector() -> None:
    rules = default_rules()
    assert {r.detector for r in rules} == set(DETECTORS)
    assert len({r.name for r in rules}) == len(rules)
    by_name = {r.name: r for r in rules}
    profile = by_name["discount-above-profile"]
    assert (profile.threshold, profile.window_seconds, profile.min_events) == (
        Decimal("1.5"),
        60,
        5,
    )
    assert profile.actions == (Action.NOTIFY, Action.INCIDENT, Action.PAUSE)
    tiers = by_name["tier-mix-shift"]
    assert (tiers.threshold, tiers.min_events, tiers.severity) == (Decimal(3000), 10, "P1")
    assert Action.PAUSE in tiers.actions
    assert by_name["tier-mix-shop"].param("scope") == "all"
    assert by_name["route-error-rate"].param("metric") == "error_rate"
    assert by_name["route-p99-latency"].param("metric") == "p99_seconds"
    assert by_name["route-p99-latency"].threshold == Decimal("0.25")
    assert by_name["identity-cluster"].window_seconds == 600
    assert by_name["claim-failures"].param("ignore_codes") == EXPECTED_REFUSALS
    Monitor(rules)  # and the monitor takes them


def test_the_default_rules_ship_inside_the_package() -> None:
    bundled = resources.files("promoguard.monitoring").joinpath("default_rules.toml")
    assert load_rules(bundled.read_text("utf-8")) == default_rules()


def test_only_the_pause_capable_rules_pause() -> None:
    pausing = {r.name for r in default_rules() if Action.PAUSE in r.actions}
    assert pausing == {"discount-above-profile", "tier-mix-shift"}


# -- reading ----------------------------------------------------------------------------------


def test_a_good_rule_is_read_with_defaults_and_exact_decimals() -> None:
    (r,) = load_rules(GOOD + "[rule.params]\ntail_share_bps = 500\nmin_evidence = 12.5\n")
    assert r == AlertRule(
        name="discount-above-profile",
        detector="discount_profile",
        threshold=Decimal("1.5"),
        window_seconds=60,
        severity="P1",
        actions=(Action.NOTIFY, Action.INCIDENT, Action.PAUSE),
        min_events=5,
        cooldown_seconds=300,
        params={"tail_share_bps": 500, "min_evidence": Decimal("12.5")},
    )
    assert r.param("tail_share_bps") == 500
    assert r.param("max_keys") == 100_000  # a documented default


def test_thresholds_may_be_written_as_strings_or_integers() -> None:
    (r,) = load_rules(with_rule(detector='"claim_failures"', threshold='"0.1"'))
    assert r.threshold == Decimal("0.1")
    (r,) = load_rules(with_rule(detector='"identity_cluster"', threshold="5"))
    assert r.threshold == Decimal(5)


def test_params_are_read_only_and_lists_become_tuples() -> None:
    (r,) = load_rules(
        with_rule(detector='"route_slo"', threshold="0.05")
        + '[rule.params]\nroutes = ["quote", "order"]\n'
    )
    assert r.params["routes"] == ("quote", "order")
    with pytest.raises(TypeError):
        r.params["routes"] = ()  # type: ignore[index]


def test_an_empty_file_has_no_rules() -> None:
    assert load_rules("") == []


# -- refusals ---------------------------------------------------------------------------------


def test_unknown_detector_action_and_severity_are_refused() -> None:
    assert paths_of(with_rule(detector='"sixth_sense"')) == ["rule[0].detector"]
    assert paths_of(with_rule(actions='["notify", "page_the_ceo"]')) == ["rule[0].actions"]
    assert paths_of(with_rule(severity='"P9"')) == ["rule[0].severity"]


@pytest.mark.parametrize("window", ["0", "-60"])
def test_a_window_that_is_not_positive_is_refused(window: str) -> None:
    assert errors_of(with_rule(window_seconds=window)) == [
        ("rule[0].window_seconds", "must be at least 1 second")
    ]


def test_duplicate_names_are_refused() -> None:
    assert errors_of(GOOD + GOOD) == [("rule[1].name", "duplicate of rule[0]")]


def test_unknown_keys_are_refused_at_every_level() -> None:
    text = "version = 2\n" + with_rule(windw_seconds="60") + "[rule.params]\ntail = 1\n"
    assert sorted(paths_of(text)) == ["rule[0].params.tail", "rule[0].windw_seconds", "version"]


def test_missing_fields_and_wrong_types_are_refused() -> None:
    assert errors_of(with_rule(threshold=None)) == [("rule[0].threshold", "missing")]
    assert sorted(
        paths_of(with_rule(window_seconds='"60"', threshold='"lots"', actions='"notify"'))
    ) == [
        "rule[0].actions",
        "rule[0].threshold",
        "rule[0].window_seconds",
    ]
    assert paths_of(with_rule(min_events="true")) == ["rule[0].min_events"]


@pytest.mark.parametrize(
    ("detector", "threshold"),
    [
        ("discount_profile", "0.9"),  # a factor below 1 flags normal orders
        ("redemption_velocity", "1"),
        ("identity_cluster", "1"),
        ("identity_cluster", "4.5"),
        ("tier_mix", "0.3"),  # basis points, not a ratio
        ("tier_mix", "10000"),
        ("route_slo", "5"),  # error rate is a ratio
        ("claim_failures", "0"),
        ("claim_failures", "1"),
    ],
)
def test_thresholds_out_of_range_for_their_detector_are_refused(
    detector: str, threshold: str
) -> None:
    assert paths_of(with_rule(detector=f'"{detector}"', threshold=threshold)) == [
        "rule[0].threshold"
    ]


def test_a_p99_threshold_is_seconds() -> None:
    text = (
        with_rule(detector='"route_slo"', threshold="2") + '[rule.params]\nmetric = "p99_seconds"\n'
    )
    assert load_rules(text)[0].threshold == Decimal(2)


@pytest.mark.parametrize(
    ("detector", "params"),
    [
        ("route_slo", 'metric = "p50"'),
        ("route_slo", "routes = [1, 2]"),
        ("tier_mix", 'scope = "region"'),
        ("tier_mix", "expected_mix_bps = { none = 20000 }"),
        ("discount_profile", "tail_share_bps = 0"),
        ("discount_profile", "min_evidence = -1"),
        ("redemption_velocity", "baseline_windows = 0"),
        ("claim_failures", 'ignore_codes = "rate_limited"'),
        ("identity_cluster", "max_keys = 0"),
    ],
)
def test_bad_param_values_are_refused(detector: str, params: str) -> None:
    threshold = {"route_slo": "0.05", "tier_mix": "3000", "claim_failures": "0.2"}.get(
        detector, "5"
    )
    text = with_rule(detector=f'"{detector}"', threshold=threshold) + f"[rule.params]\n{params}\n"
    (path,) = paths_of(text)
    assert path == f"rule[0].params.{params.split(' ', maxsplit=1)[0]}"


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD + with_rule(severity='"urgent"', cooldown_seconds="-1") + with_rule(name='"r"')
    assert sorted(paths_of(text)) == [
        "rule[1].cooldown_seconds",
        "rule[1].severity",
        "rule[2].name",
    ]


def test_text_that_is_not_toml_is_refused() -> None:
    ((path, reason),) = errors_of("[[rule]\nname = ")
    assert path == "(file)"
    assert reason.startswith("not valid TOML")


def test_rules_must_be_tables() -> None:
    assert paths_of("rule = 3\n") == ["rule"]
    assert paths_of("rule = [1]\n") == ["rule[0]"]


def test_a_rule_built_in_code_is_checked_too() -> None:
    r = AlertRule(
        name="x",
        detector="route_slo",
        threshold=Decimal("0.05"),
        window_seconds=60,
        severity="P2",
        actions=(),
        params={"metric": "error_rate", "colour": "red"},
    )
    assert rule_errors(r, "rules[3]") == [
        ("rules[3].actions", "must name at least one action"),
        ("rules[3].params.colour", "unknown param"),
    ]
