"""ServiceMetrics as /metrics shows it, in one process and summed over several (multiprocess
mode), and the deploy/ dashboard and alert rules that query it."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, values
from prometheus_client.parser import text_string_to_metric_families

from promoguard.members.clients import MEMBER_TIERS, Breakers
from promoguard.metrics import (
    MULTIPROC_DIR_ENV,
    ServiceMetrics,
    metrics_response,
    multiprocess_dir,
    new_registry,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "promoguard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposed(registry: CollectorRegistry) -> Samples:
    """Every sample /metrics would show: (name, labels) -> value."""
    response = metrics_response(registry)
    assert response.media_type is not None
    assert response.media_type.startswith("text/plain; version=0.0.4")
    text = bytes(response.body).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def registry() -> CollectorRegistry:
    return new_registry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ServiceMetrics:
    return ServiceMetrics(registry)


# -- each method ----------------------------------------------------------------------------


def test_request_counts_by_route_method_and_status_and_times_by_route_and_method(registry, metrics):
    metrics.request("/v1/quotes", "post", 200, 0.004)
    metrics.request("/v1/quotes", "POST", 200, 0.3)
    metrics.request("/v1/quotes", "POST", 500, 0.0005)
    metrics.request("/v1/orders/{order_id}", "GET", 404, 0.002)

    samples = exposed(registry)
    requests = "promoguard_http_requests_total"
    assert value(samples, requests, route="/v1/quotes", method="POST", status="200") == 2
    assert value(samples, requests, route="/v1/quotes", method="POST", status="500") == 1
    assert value(samples, requests, route="/v1/orders/{order_id}", method="GET", status="404") == 1
    latency = "promoguard_http_request_duration_seconds"
    quotes = {"route": "/v1/quotes", "method": "POST"}
    assert value(samples, f"{latency}_count", **quotes) == 3
    assert value(samples, f"{latency}_sum", **quotes) == pytest.approx(0.3045)
    assert value(samples, f"{latency}_bucket", le="0.001", **quotes) == 1
    assert value(samples, f"{latency}_bucket", le="0.005", **quotes) == 2
    assert value(samples, f"{latency}_bucket", le="0.25", **quotes) == 2
    assert value(samples, f"{latency}_bucket", le="0.5", **quotes) == 3
    assert value(samples, f"{latency}_bucket", le="+Inf", **quotes) == 3


def test_latency_buckets_span_one_millisecond_to_two_seconds(registry, metrics):
    metrics.request("/healthz", "GET", 200, 0.0001)

    bounds = {
        dict(labels)["le"]
        for name, labels in exposed(registry)
        if name == "promoguard_http_request_duration_seconds_bucket"
    }
    finite = sorted(float(b) for b in bounds if b != "+Inf")
    assert finite[0] == 0.001
    assert finite[-1] == 2.0
    assert 0.25 in finite  # the latency SLO of the alert rules is a bucket bound


def test_an_unknown_http_method_is_counted_as_other_so_labels_stay_bounded(registry, metrics):
    metrics.request("unmatched", "PROPFIND", 405, 0.001)
    metrics.request("unmatched", "x-anything", 405, 0.001)

    samples = exposed(registry)
    assert (
        value(
            samples,
            "promoguard_http_requests_total",
            route="unmatched",
            method="OTHER",
            status="405",
        )
        == 2
    )


def test_a_quote_counts_once_per_campaign_version_with_the_discount_it_offers(registry, metrics):
    metrics.quote([("mj", 1, 500), ("mj", 1, 300), ("flash", 2, 0)], degraded=False)
    metrics.quote([], degraded=True)

    samples = exposed(registry)
    assert value(samples, "promoguard_quotes_total") == 2
    assert value(samples, "promoguard_degraded_quotes_total") == 1
    assert value(samples, "promoguard_quote_discounts_total", campaign="mj", version="1") == 1
    assert value(samples, "promoguard_quote_discounts_total", campaign="flash", version="2") == 1
    assert (
        value(samples, "promoguard_quote_discount_minor_total", campaign="mj", version="1") == 800
    )
    assert (
        value(samples, "promoguard_quote_discount_minor_total", campaign="flash", version="2") == 0
    )


def test_an_order_adds_its_list_total_to_each_campaign_version_it_discounted(registry, metrics):
    metrics.order([("mj", 1, 5000), ("mj", 1, 1000), ("cp", 3, 1000)], list_total=20000)
    metrics.order([("mj", 2, 2000)], list_total=10000)
    metrics.order([], list_total=5000)

    samples = exposed(registry)
    assert value(samples, "promoguard_orders_total") == 3
    assert value(samples, "promoguard_order_list_minor_total") == 35000

    def campaign(name: str, version: str) -> tuple[float | None, ...]:
        return tuple(
            value(samples, f"promoguard_campaign_{what}_total", campaign=name, version=version)
            for what in ("orders", "discount_minor", "list_minor")
        )

    assert campaign("mj", "1") == (1, 6000, 20000)  # realised rate 30 %
    assert campaign("cp", "3") == (1, 1000, 20000)
    assert campaign("mj", "2") == (1, 2000, 10000)


def test_a_negative_discount_counts_as_zero_rather_than_failing_the_order(registry, metrics):
    metrics.order([("mj", 1, -300)], list_total=1000)

    samples = exposed(registry)
    assert (
        value(samples, "promoguard_campaign_discount_minor_total", campaign="mj", version="1") == 0
    )
    assert (
        value(samples, "promoguard_campaign_list_minor_total", campaign="mj", version="1") == 1000
    )


def test_guard_trips_are_counted_by_rule_or_the_whole_order_and_limit(registry, metrics):
    metrics.guard_trip("mj", "budget")
    metrics.guard_trip("mj", "budget")
    metrics.guard_trip("flash", "rule_max_ratio")
    metrics.guard_trip(None, "order_max_ratio")

    samples = exposed(registry)
    assert value(samples, "promoguard_guard_trips_total", rule="mj", limit="budget") == 2
    trips = "promoguard_guard_trips_total"
    assert value(samples, trips, rule="flash", limit="rule_max_ratio") == 1
    assert value(samples, trips, rule="(order)", limit="order_max_ratio") == 1


def test_security_rejections_are_counted_by_code(registry, metrics):
    for code in ("rate_limited", "rate_limited", "signature_invalid", "nonce_replayed"):
        metrics.rejection(code)

    samples = exposed(registry)
    rejections = "promoguard_security_rejections_total"
    assert value(samples, rejections, code="rate_limited") == 2
    assert value(samples, rejections, code="signature_invalid") == 1
    assert value(samples, rejections, code="nonce_replayed") == 1
    assert value(samples, rejections, code="timestamp_out_of_window") is None


def test_coupon_claims_are_counted_by_campaign_and_outcome_ok_or_the_code(registry, metrics):
    metrics.claim("cp", ok=True, code=None)
    metrics.claim("cp", ok=False, code="coupon_sold_out")
    metrics.claim("cp", ok=False, code="coupon_sold_out")
    metrics.claim("cp", ok=False, code=None)

    samples = exposed(registry)
    claims = "promoguard_coupon_claims_total"
    assert value(samples, claims, campaign="cp", outcome="ok") == 1
    assert value(samples, claims, campaign="cp", outcome="coupon_sold_out") == 2
    assert value(samples, claims, campaign="cp", outcome="error") == 1


def test_alerts_and_auto_pauses_are_counted(registry, metrics):
    metrics.alert("discount_rate", "critical")
    metrics.alert("discount_rate", "critical")
    metrics.alert("error_rate", "warning")
    metrics.auto_pause("mj")

    samples = exposed(registry)
    alerts = "promoguard_alerts_total"
    assert value(samples, alerts, rule="discount_rate", severity="critical") == 2
    assert value(samples, alerts, rule="error_rate", severity="warning") == 1
    assert value(samples, "promoguard_auto_pauses_total", campaign="mj") == 1


def test_metrics_live_in_the_given_registry_so_two_apps_in_one_process_do_not_collide():
    one, two = new_registry(), new_registry()
    ServiceMetrics(one).quote([], degraded=False)
    ServiceMetrics(two)

    assert value(exposed(one), "promoguard_quotes_total") == 1
    assert value(exposed(two), "promoguard_quotes_total") == 0
    assert REGISTRY.get_sample_value("promoguard_quotes_total") is None


# -- multiprocess mode ----------------------------------------------------------------------

N = 25


def _count_requests(count: int) -> None:
    """In a spawned process: count ``count`` requests (multiprocess mode from the environment)."""
    metrics = ServiceMetrics(new_registry())
    for _ in range(count):
        metrics.request("/v1/quotes", "POST", 200, 0.003)
    metrics.order([("mj", 1, 500)], list_total=2000)


def _breaker(fail: bool) -> None:
    """In a spawned process: track the member-tier breaker; with ``fail``, open it."""
    breakers = Breakers(new_registry(), threshold=1, reset_seconds=3600)
    breakers.track(MEMBER_TIERS)

    async def failing_call() -> None:
        async with breakers.guard(MEMBER_TIERS):
            raise ConnectionError("member-tier service down")

    if fail:
        with pytest.raises(ConnectionError):
            asyncio.run(failing_call())
        assert breakers.state(MEMBER_TIERS) == "opened"


def _in_processes(*calls: tuple[Any, tuple[Any, ...]]) -> None:
    """Run each (function, args) in its own spawned process (a fresh interpreter, as uvicorn's
    workers are) and wait for all of them to succeed."""
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=target, args=args) for target, args in calls]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PROMETHEUS_MULTIPROC_DIR set for this test and the processes it spawns."""
    path = tmp_path / "prometheus"
    path.mkdir()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(path))
    return path


def test_in_multiprocess_mode_metrics_sum_every_process_and_count_this_one_once(
    multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    _in_processes((_count_requests, (N,)), (_count_requests, (N,)))
    # prometheus-client chose in-memory values when this process imported it (before the
    # variable was set); file-backed ones now, as a worker started with it set would have.
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    try:
        registry = new_registry()
        ServiceMetrics(registry).request("/v1/quotes", "POST", 200, 0.003)
        samples = exposed(registry)
    finally:
        values.close_all_multiprocess_files()

    route = {"route": "/v1/quotes", "method": "POST"}
    assert value(samples, "promoguard_http_requests_total", status="200", **route) == 2 * N + 1
    latency = "promoguard_http_request_duration_seconds"
    assert value(samples, f"{latency}_count", **route) == 2 * N + 1
    assert value(samples, f"{latency}_bucket", le="0.0025", **route) == 0
    assert value(samples, f"{latency}_bucket", le="0.005", **route) == 2 * N + 1
    assert value(samples, "promoguard_orders_total") == 2
    assert (
        value(samples, "promoguard_campaign_list_minor_total", campaign="mj", version="1") == 4000
    )
    assert len(list(multiproc_dir.glob("counter_*.db"))) == 3  # one file per process


def test_in_multiprocess_mode_a_breaker_shows_the_worst_state_of_any_worker_without_a_pid(
    multiproc_dir: Path,
):
    _in_processes((_breaker, (True,)), (_breaker, (False,)))

    samples = exposed(new_registry())

    states = {labels: v for (name, labels), v in samples.items() if name.endswith("breaker_state")}
    assert states == {frozenset({("dependency", MEMBER_TIERS)}): 2}  # opened, no pid label
    assert value(samples, "promoguard_dependency_failures_total", dependency=MEMBER_TIERS) == 1


def test_metrics_response_without_a_multiprocess_dir_shows_the_registry_itself(
    monkeypatch: pytest.MonkeyPatch, registry, metrics
):
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    metrics.auto_pause("mj")

    assert value(exposed(registry), "promoguard_auto_pauses_total", campaign="mj") == 1


# -- the directory `promoguard serve` prepares ----------------------------------------------


def test_a_configured_multiprocess_dir_loses_its_stale_files_and_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_4242.db").write_bytes(b"stale")
    (configured / "gauge_livemax_4242.db").write_bytes(b"stale")
    (configured / "README").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(configured))

    with multiprocess_dir(workers=4) as path:
        assert path == configured
        assert sorted(p.name for p in configured.iterdir()) == ["README"]

    assert configured.is_dir()
    assert os.environ[MULTIPROC_DIR_ENV] == str(configured)


def test_a_configured_multiprocess_dir_that_does_not_exist_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    configured = tmp_path / "run" / "metrics"
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(configured))

    with multiprocess_dir(workers=1) as path:
        assert path == configured
        assert configured.is_dir()


def test_several_workers_without_a_configured_dir_get_a_temporary_one_removed_on_exit(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)

    with multiprocess_dir(workers=2) as path:
        assert path is not None
        assert path.is_dir()
        assert os.environ[MULTIPROC_DIR_ENV] == str(path)
        (path / "counter_1.db").write_bytes(b"written by a worker")

    assert not path.exists()
    assert MULTIPROC_DIR_ENV not in os.environ


def test_one_worker_without_a_configured_dir_stays_in_single_process_mode(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)

    with multiprocess_dir(workers=1) as path:
        assert path is None
        assert MULTIPROC_DIR_ENV not in os.environ


# -- deploy/: the dashboard and the alert rules ---------------------------------------------

METRIC_NAME = re.compile(r"promoguard_[a-z_]+")


def _exported_names() -> set[str]:
    """Every series name ServiceMetrics and the breakers can export."""
    registry = new_registry()
    ServiceMetrics(registry)
    Breakers(registry, threshold=1, reset_seconds=1)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    targets = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    variables = [
        v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"
    ]
    return targets + variables


def _alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_grafana_dashboard_is_a_dashboard_with_a_query_in_every_panel():
    dashboard = _dashboard()

    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == "promoguard"
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 12
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"]
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_every_metric_the_dashboard_and_alert_rules_query_is_one_the_service_exports():
    exported = _exported_names()
    queries = _dashboard_queries() + [rule["expr"] for rule in _alert_rules()]

    used = {name for query in queries for name in METRIC_NAME.findall(query)}

    assert used
    assert used - exported == set()


def test_every_metric_the_service_exports_is_on_the_dashboard():
    queried = " ".join(_dashboard_queries())
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in _exported_names()}

    missing = {
        f for f in families if not re.search(rf"\b{f}(_total|_bucket|_count|_sum)?\b", queried)
    }
    assert missing == set()


def test_every_alert_rule_has_a_severity_a_summary_and_a_description():
    rules = _alert_rules()

    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {
        "PromoguardHighErrorRate",
        "PromoguardLatencyAboveSLO",
        "PromoguardCampaignDiscountRateHigh",
        "PromoguardBreakerOpen",
        "PromoguardCampaignAutoPaused",
        "PromoguardSecurityRejectionSpike",
    } <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


# promtool (Prometheus's own checker) is not a Python package: these run where it is installed
# (Debian: apt-get install prometheus) and are skipped, saying so, elsewhere.
promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (apt: prometheus)"
)


def _promtool(*args: str) -> None:
    done = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@promtool
def test_promtool_accepts_the_alert_rules_and_the_prometheus_config():
    _promtool("check", "rules", str(ALERTS))
    _promtool("check", "config", str(PROMETHEUS_CONFIG))


@promtool
def test_promtool_accepts_every_dashboard_query(tmp_path: Path):
    grafana = {
        "$__rate_interval": "1m",
        "$__range": "1h",
        "$__interval": "15s",
        "$route": ".*",
        "$campaign": ".*",
    }
    records = []
    for n, query in enumerate(_dashboard_queries()):
        expr = query
        if expr.startswith("label_values("):
            expr = expr.removeprefix("label_values(").split(",")[0]  # its metric selector
        for variable, example in grafana.items():
            expr = expr.replace(variable, example)
        records.append({"record": f"dashboard_query_{n}", "expr": expr})
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))

    _promtool("check", "rules", str(rules))


# Synthetic series, one minute apart, and the alerts they must (and must not) raise. Campaign
# "mj" gives 70 % of its list total away, "cp" 10 %; /v1/quotes answers 5 % 5xx and half its
# requests in over 250 ms, /v1/orders is healthy; the inventory breaker opens at minute 11;
# "mj" is auto-paused at minute 20 (a new series, which increase() alone would miss); rate-limit
# rejections jump from 0.1/s to 3/s at minute 31.
ALERT_TESTS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: promoguard_http_requests_total{route="/v1/quotes",method="POST",status="200"}
        values: 0+570x40
      - series: promoguard_http_requests_total{route="/v1/quotes",method="POST",status="500"}
        values: 0+30x40
      - series: promoguard_http_requests_total{route="/v1/orders",method="POST",status="201"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_bucket{route="/v1/quotes",le="0.25"}
        values: 0+300x40
      - series: promoguard_http_request_duration_seconds_bucket{route="/v1/quotes",le="0.5"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_bucket{route="/v1/quotes",le="+Inf"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_count{route="/v1/quotes"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_bucket{route="/v1/orders",le="0.05"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_bucket{route="/v1/orders",le="+Inf"}
        values: 0+600x40
      - series: promoguard_http_request_duration_seconds_count{route="/v1/orders"}
        values: 0+600x40
      - series: promoguard_campaign_discount_minor_total{campaign="mj",version="2"}
        values: 0+7000x40
      - series: promoguard_campaign_list_minor_total{campaign="mj",version="2"}
        values: 0+10000x40
      - series: promoguard_campaign_discount_minor_total{campaign="cp",version="1"}
        values: 0+1000x40
      - series: promoguard_campaign_list_minor_total{campaign="cp",version="1"}
        values: 0+10000x40
      - series: promoguard_breaker_state{dependency="inventory"}
        values: 0x10 2x30
      - series: promoguard_breaker_state{dependency="member_tiers"}
        values: 0x40
      - series: promoguard_quotes_total
        values: 0+600x40
      - series: promoguard_auto_pauses_total{campaign="mj"}
        values: _x20 1x20
      - series: promoguard_security_rejections_total{code="rate_limited"}
        values: 0+6x30 186+180x10
      - series: promoguard_security_rejections_total{code="signature_invalid"}
        values: 0+6x40
    alert_rule_test:
      - eval_time: 40m
        alertname: PromoguardHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, route: /v1/quotes}
            exp_annotations: {summary: /v1/quotes answers 5% with 5xx}
      - eval_time: 40m
        alertname: PromoguardLatencyAboveSLO
        exp_alerts:
          - exp_labels: {severity: critical, route: /v1/quotes}
            exp_annotations: {summary: p99 latency of /v1/quotes is 495ms}
      - eval_time: 40m
        alertname: PromoguardCampaignDiscountRateHigh
        exp_alerts:
          - exp_labels: {severity: critical, campaign: mj}
            exp_annotations: {summary: campaign mj gives away 70% of list price}
      - eval_time: 40m
        alertname: PromoguardBreakerOpen
        exp_alerts:
          - exp_labels: {severity: warning, dependency: inventory}
            exp_annotations: {summary: breaker to inventory is open}
      - eval_time: 40m
        alertname: PromoguardSecurityRejectionSpike
        exp_alerts:
          - exp_labels: {severity: warning, code: rate_limited}
            exp_annotations: {summary: 3/s requests refused with rate_limited}
      - eval_time: 22m
        alertname: PromoguardCampaignAutoPaused
        exp_alerts:
          - exp_labels: {severity: critical, campaign: mj}
            exp_annotations: {summary: campaign mj was paused automatically}
      - {eval_time: 40m, alertname: PromoguardCampaignAutoPaused, exp_alerts: []}
      - {eval_time: 10m, alertname: PromoguardBreakerOpen, exp_alerts: []}
      - {eval_time: 10m, alertname: PromoguardSecurityRejectionSpike, exp_alerts: []}
      - {eval_time: 10m, alertname: PromoguardCampaignAutoPaused, exp_alerts: []}
"""


@promtool
def test_promtool_fires_each_alert_rule_on_synthetic_series_and_only_there(tmp_path: Path):
    # promtool compares every annotation: keep the summaries (their values are rendered) and
    # leave the descriptions, prose whose templates `promtool check rules` has checked, out.
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in loaded["groups"]:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(loaded))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], **yaml.safe_load(ALERT_TESTS)}))

    _promtool("test", "rules", str(tests))
