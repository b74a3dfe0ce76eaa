"""The member-tier and inventory clients against the reference service, run as a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from tests.serving import free_port

from promoguard.members import (
    INVENTORY,
    MEMBER_TIERS,
    AssertedTiers,
    Breakers,
    HttpInventory,
    HttpMemberTiers,
    NoInventory,
    TierAnswer,
    build_dependencies,
)
from promoguard.metrics import metrics_response, new_registry
from promoguard.settings import Settings

THRESHOLD = 3
RESET_SECONDS = 0.2
TIMEOUT_MS = 2000  # generous: only the slow-service test wants a timeout, and sets its own


@contextmanager
def reference_service(
    tiers_file: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the reference service in its own process; yield its base URL once /health answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tiers = "None" if tiers_file is None else f"Path({str(tiers_file)!r})"
    code = (
        "from pathlib import Path; from promoguard.members.reference import run_reference; "
        f"run_reference('127.0.0.1', {port}, {tiers})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(300):
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"reference service exited: {error}")
            try:
                if httpx.get(f"{base}/health", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"{base} did not come up")
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def shared_service() -> Iterator[str]:
    with reference_service() as (base, _):
        yield base


@pytest.fixture
def service(shared_service: str) -> Iterator[str]:
    """The module's reference service, with no fault injected before or after the test."""
    httpx.put(f"{shared_service}/v1/faults", json={}).raise_for_status()
    yield shared_service
    httpx.put(f"{shared_service}/v1/faults", json={}).raise_for_status()


def put(base: str, path: str, body: object) -> None:
    httpx.put(f"{base}{path}", json=body).raise_for_status()


def calls(base: str, endpoint: str) -> int:
    """How many reads of ``endpoint`` (tiers, stock) reached the service."""
    return int(httpx.get(f"{base}/v1/calls").json()[endpoint])


def gauge(registry: CollectorRegistry, dependency: str) -> float | None:
    return registry.get_sample_value("promoguard_breaker_state", {"dependency": dependency})


def failures(registry: CollectorRegistry, dependency: str) -> float | None:
    return registry.get_sample_value(
        "promoguard_dependency_failures_total", {"dependency": dependency}
    )


def breakers(registry: CollectorRegistry, reset_seconds: float = RESET_SECONDS) -> Breakers:
    return Breakers(registry, threshold=THRESHOLD, reset_seconds=reset_seconds)


# --- member tiers ---------------------------------------------------------------------------


def test_a_tier_set_on_the_service_comes_back_and_the_asserted_tier_is_ignored(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})

    async def scenario() -> TierAnswer:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=breakers(new_registry()))
        try:
            return await tiers.tier("c-gold", asserted="platinum")
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == TierAnswer("gold", known=True)


def test_a_customer_the_service_does_not_know_is_a_known_non_member(service: str):
    registry = new_registry()

    async def scenario() -> TierAnswer:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=breakers(registry))
        try:
            return await tiers.tier("c-nobody", asserted="gold")
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == TierAnswer(None, known=True)
    assert failures(registry, MEMBER_TIERS) == 0
    assert gauge(registry, MEMBER_TIERS) == 0


def test_a_down_service_gives_unknown_and_opens_the_breaker_which_then_stops_calling(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})
    put(service, "/v1/faults", {"down": True})
    registry = new_registry()
    guard = breakers(registry, reset_seconds=3600)
    before = calls(service, "tiers")

    async def scenario() -> tuple[list[TierAnswer], list[TierAnswer]]:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            failing = [await tiers.tier("c-gold", asserted="gold") for _ in range(THRESHOLD)]
            assert guard.state(MEMBER_TIERS) == "opened"
            refused = [await tiers.tier("c-gold", asserted="gold") for _ in range(5)]
            return failing, refused
        finally:
            await tiers.aclose()

    failing, refused = asyncio.run(scenario())

    assert failing == [TierAnswer(None, known=False)] * THRESHOLD
    assert refused == [TierAnswer(None, known=False)] * 5
    assert guard.state(MEMBER_TIERS) == "opened"
    assert gauge(registry, MEMBER_TIERS) == 2
    assert failures(registry, MEMBER_TIERS) == THRESHOLD
    # Only the calls that opened the breaker reached the service.
    assert calls(service, "tiers") - before == THRESHOLD


def test_fewer_failures_than_the_threshold_leave_the_breaker_closed(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})
    registry = new_registry()
    guard = breakers(registry, reset_seconds=3600)

    async def scenario() -> TierAnswer:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            put(service, "/v1/faults", {"down": True})
            for _ in range(THRESHOLD - 1):
                assert await tiers.tier("c-gold", None) == TierAnswer(None, known=False)
            put(service, "/v1/faults", {})
            # A success resets the count: THRESHOLD - 1 more failures do not open it either.
            assert await tiers.tier("c-gold", None) == TierAnswer("gold", known=True)
            put(service, "/v1/faults", {"down": True})
            for _ in range(THRESHOLD - 1):
                await tiers.tier("c-gold", None)
            put(service, "/v1/faults", {})
            return await tiers.tier("c-gold", None)
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == TierAnswer("gold", known=True)
    assert guard.state(MEMBER_TIERS) == "closed"
    assert gauge(registry, MEMBER_TIERS) == 0
    assert failures(registry, MEMBER_TIERS) == 2 * (THRESHOLD - 1)


def test_an_open_breaker_closes_again_once_the_fault_is_cleared_and_the_reset_time_passed(
    service: str,
):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})
    put(service, "/v1/faults", {"error_rate": 1.0})
    registry = new_registry()
    guard = breakers(registry)

    async def scenario() -> TierAnswer:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            for _ in range(THRESHOLD):
                await tiers.tier("c-gold", None)
            assert guard.state(MEMBER_TIERS) == "opened"
            assert gauge(registry, MEMBER_TIERS) == 2
            put(service, "/v1/faults", {})
            answer = TierAnswer(None, known=False)
            for _ in range(200):  # bounded: 200 x 50 ms is far beyond the 0.2 s reset time
                answer = await tiers.tier("c-gold", None)
                if answer.known:
                    break
                await asyncio.sleep(0.05)
            return answer
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == TierAnswer("gold", known=True)
    assert guard.state(MEMBER_TIERS) == "closed"
    assert gauge(registry, MEMBER_TIERS) == 0


def test_a_failed_trial_after_the_reset_time_opens_the_breaker_again(service: str):
    put(service, "/v1/faults", {"down": True})
    registry = new_registry()
    guard = breakers(registry)
    before = calls(service, "tiers")

    async def scenario() -> int:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            for _ in range(THRESHOLD):
                await tiers.tier("c-1", None)
            reached = calls(service, "tiers") - before
            for _ in range(200):  # bounded; stops at the first trial that reached the service
                assert await tiers.tier("c-1", None) == TierAnswer(None, known=False)
                if calls(service, "tiers") - before > reached:
                    break
                await asyncio.sleep(0.05)
            return calls(service, "tiers") - before
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == THRESHOLD + 1
    assert guard.state(MEMBER_TIERS) == "opened"
    assert gauge(registry, MEMBER_TIERS) == 2
    assert failures(registry, MEMBER_TIERS) == THRESHOLD + 1


def test_a_service_slower_than_the_timeout_gives_unknown(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})
    put(service, "/v1/faults", {"delay_ms": 3000})
    registry = new_registry()

    async def scenario() -> TierAnswer:
        tiers = HttpMemberTiers(service, timeout_ms=100, breakers=breakers(registry))
        try:
            return await tiers.tier("c-gold", None)
        finally:
            await tiers.aclose()

    assert asyncio.run(scenario()) == TierAnswer(None, known=False)
    assert failures(registry, MEMBER_TIERS) == 1


def test_random_errors_are_unknown_and_the_service_replays_them_from_its_seed(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})

    async def answers() -> list[bool]:
        # A high threshold keeps the breaker out of it: each call reaches the service.
        guard = Breakers(new_registry(), threshold=1000, reset_seconds=1)
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            return [(await tiers.tier("c-gold", None)).known for _ in range(30)]
        finally:
            await tiers.aclose()

    put(service, "/v1/faults", {"error_rate": 0.5, "seed": 7})
    first = asyncio.run(answers())
    put(service, "/v1/faults", {"error_rate": 0.5, "seed": 7})
    second = asyncio.run(answers())

    assert True in first
    assert False in first
    assert first == second


# --- a service that is gone -------------------------------------------------------------------


def test_a_stopped_service_gives_unknown_tier_and_stock_without_raising():
    async def scenario(base: str, stop: subprocess.Popen[bytes]) -> list[object]:
        registry = new_registry()
        guard = breakers(registry)
        tiers = HttpMemberTiers(base, timeout_ms=TIMEOUT_MS, breakers=guard)
        stock = HttpInventory(base, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            # Warm the pools first: the kept-alive connections die with the process.
            seen = [await tiers.tier("c-gold", None), await stock.available(["sku-1"])]
            stop.terminate()
            await asyncio.to_thread(stop.wait, 20)
            seen += [await tiers.tier("c-gold", None), await stock.available(["sku-1"])]
            return [*seen, failures(registry, MEMBER_TIERS), failures(registry, INVENTORY)]
        finally:
            await tiers.aclose()
            await stock.aclose()

    with reference_service() as (base, process):
        put(base, "/v1/tiers/c-gold", {"tier": "gold"})
        put(base, "/v1/stock/sku-1", {"available": 4})
        seen = asyncio.run(scenario(base, process))

    assert seen == [
        TierAnswer("gold", known=True),
        {"sku-1": 4},
        TierAnswer(None, known=False),
        None,
        1,
        1,
    ]


def test_the_service_starts_with_the_tiers_and_stock_of_its_file(tmp_path: Path):
    data = tmp_path / "members.json"
    data.write_text(json.dumps({"tiers": {"c-silver": "silver"}, "stock": {"sku-1": 9}}))

    async def scenario(base: str) -> list[object]:
        guard = breakers(new_registry())
        tiers = HttpMemberTiers(base, timeout_ms=TIMEOUT_MS, breakers=guard)
        stock = HttpInventory(base, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            return [await tiers.tier("c-silver", None), await stock.available(["sku-1"])]
        finally:
            await tiers.aclose()
            await stock.aclose()

    with reference_service(data) as (base, _):
        seen = asyncio.run(scenario(base))

    assert seen == [TierAnswer("silver", known=True), {"sku-1": 9}]


# --- inventory --------------------------------------------------------------------------------


def test_stock_comes_back_per_sku_once_each_and_an_unknown_sku_has_none(service: str):
    put(service, "/v1/stock/sku-a", {"available": 3})

    async def scenario() -> dict[str, int] | None:
        stock = HttpInventory(service, timeout_ms=TIMEOUT_MS, breakers=breakers(new_registry()))
        try:
            return await stock.available(["sku-a", "sku-unknown", "sku-a"])
        finally:
            await stock.aclose()

    assert asyncio.run(scenario()) == {"sku-a": 3, "sku-unknown": 0}


def test_asking_for_no_sku_does_not_call_the_service(service: str):
    before = calls(service, "stock")

    async def scenario() -> dict[str, int] | None:
        stock = HttpInventory(service, timeout_ms=TIMEOUT_MS, breakers=breakers(new_registry()))
        try:
            return await stock.available([])
        finally:
            await stock.aclose()

    assert asyncio.run(scenario()) == {}
    assert calls(service, "stock") == before


def test_a_down_inventory_gives_none_and_opens_its_own_breaker_only(service: str):
    put(service, "/v1/tiers/c-gold", {"tier": "gold"})
    put(service, "/v1/stock/sku-a", {"available": 3})
    registry = new_registry()
    guard = breakers(registry, reset_seconds=3600)
    before = calls(service, "stock")

    async def scenario() -> list[object]:
        stock = HttpInventory(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            put(service, "/v1/faults", {"down": True})
            seen: list[object] = [await stock.available(["sku-a"]) for _ in range(THRESHOLD + 4)]
            put(service, "/v1/faults", {})
            # The stock breaker is still open; the member-tier one never saw a failure.
            seen += [await stock.available(["sku-a"]), await tiers.tier("c-gold", None)]
            return seen
        finally:
            await stock.aclose()
            await tiers.aclose()

    seen = asyncio.run(scenario())

    assert seen == [None] * (THRESHOLD + 5) + [TierAnswer("gold", known=True)]
    assert guard.state(INVENTORY) == "opened"
    assert guard.state(MEMBER_TIERS) == "closed"
    assert gauge(registry, INVENTORY) == 2
    assert gauge(registry, MEMBER_TIERS) == 0
    assert calls(service, "stock") - before == THRESHOLD


def test_a_slow_inventory_gives_none(service: str):
    put(service, "/v1/faults", {"delay_ms": 3000})
    registry = new_registry()

    async def scenario() -> dict[str, int] | None:
        stock = HttpInventory(service, timeout_ms=100, breakers=breakers(registry))
        try:
            return await stock.available(["sku-a"])
        finally:
            await stock.aclose()

    assert asyncio.run(scenario()) is None
    assert failures(registry, INVENTORY) == 1


def test_inventory_breaker_closes_again_after_the_fault_is_cleared(service: str):
    put(service, "/v1/stock/sku-a", {"available": 2})
    put(service, "/v1/faults", {"down": True})
    registry = new_registry()
    guard = breakers(registry)

    async def scenario() -> dict[str, int] | None:
        stock = HttpInventory(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            for _ in range(THRESHOLD):
                await stock.available(["sku-a"])
            assert guard.state(INVENTORY) == "opened"
            put(service, "/v1/faults", {})
            answer = None
            for _ in range(200):  # bounded, see the member-tier test
                answer = await stock.available(["sku-a"])
                if answer is not None:
                    break
                await asyncio.sleep(0.05)
            return answer
        finally:
            await stock.aclose()

    assert asyncio.run(scenario()) == {"sku-a": 2}
    assert guard.state(INVENTORY) == "closed"
    assert gauge(registry, INVENTORY) == 0


# --- no service configured, wiring, metrics ---------------------------------------------------


def test_without_a_service_the_asserted_tier_is_believed_and_no_stock_is_tracked():
    async def scenario() -> list[object]:
        return [
            await AssertedTiers().tier("c-1", "gold"),
            await AssertedTiers().tier("c-1", None),
            await NoInventory().available(["sku-a"]),
        ]

    assert asyncio.run(scenario()) == [
        TierAnswer("gold", known=True),
        TierAnswer(None, known=True),
        {},
    ]


def test_build_dependencies_uses_http_clients_only_for_the_configured_services(service: str):
    async def scenario(settings: Settings) -> list[object]:
        deps = build_dependencies(settings, new_registry())
        try:
            return [type(deps.tiers), type(deps.inventory), await deps.tiers.tier("c-x", "gold")]
        finally:
            await deps.aclose()

    embedded = asyncio.run(scenario(Settings()))
    with_tiers = asyncio.run(scenario(Settings(member_tiers_url=service)))
    both = asyncio.run(scenario(Settings(member_tiers_url=service, inventory_url=service)))

    assert embedded == [AssertedTiers, NoInventory, TierAnswer("gold", known=True)]
    assert with_tiers == [HttpMemberTiers, NoInventory, TierAnswer(None, known=True)]
    assert both[:2] == [HttpMemberTiers, HttpInventory]


def test_build_dependencies_takes_threshold_and_reset_time_from_settings(service: str):
    put(service, "/v1/faults", {"down": True})
    registry = new_registry()
    settings = Settings(member_tiers_url=service, breaker_threshold=2, breaker_reset_seconds=3600)

    async def scenario() -> list[str]:
        deps = build_dependencies(settings, registry)
        try:
            states = []
            for _ in range(2):
                await deps.tiers.tier("c-x", None)
                states.append(deps.breakers.state(MEMBER_TIERS))
            return states
        finally:
            await deps.aclose()

    assert asyncio.run(scenario()) == ["closed", "opened"]


def test_the_metrics_page_shows_each_breaker_from_the_start_and_its_state(service: str):
    put(service, "/v1/faults", {"down": True})
    registry = new_registry()
    guard = breakers(registry, reset_seconds=3600)

    async def scenario() -> tuple[str, str]:
        tiers = HttpMemberTiers(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        stock = HttpInventory(service, timeout_ms=TIMEOUT_MS, breakers=guard)
        try:
            start = bytes(metrics_response(registry).body).decode()
            for _ in range(THRESHOLD):
                await tiers.tier("c-x", None)
            return start, bytes(metrics_response(registry).body).decode()
        finally:
            await tiers.aclose()
            await stock.aclose()

    start, after = asyncio.run(scenario())

    assert 'promoguard_breaker_state{dependency="member_tiers"} 0.0' in start
    assert 'promoguard_breaker_state{dependency="inventory"} 0.0' in start
    assert 'promoguard_dependency_failures_total{dependency="member_tiers"} 0.0' in start
    assert 'promoguard_breaker_state{dependency="member_tiers"} 2.0' in after
    assert 'promoguard_breaker_state{dependency="inventory"} 0.0' in after
    assert (
        f'promoguard_dependency_failures_total{{dependency="member_tiers"}} {THRESHOLD}.0' in after
    )
    assert metrics_response(registry).media_type.startswith("text/plain")
