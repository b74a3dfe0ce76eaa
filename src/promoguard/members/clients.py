"""Clients of the member-tier and inventory services, behind circuit breakers.

Both services are reached over HTTP with a deadline per call and a breaker per dependency. A
client never raises to its caller: when the answer cannot be had (service down, slow, broken,
breaker open) it says so — ``TierAnswer(None, known=False)`` or ``None`` for stock — and the
caller prices the quote as ``degraded``, granting nothing whose condition it could not check.

Breaker states are kept in Prometheus metrics (``promoguard_breaker_state``: 0 closed,
1 half-open, 2 open; ``promoguard_dependency_failures_total``) in the registry the app passes in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import quote

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from purgatory import AsyncCircuitBreakerFactory, ContextChanged, Event
from purgatory.domain.model import OpenedState

from promoguard import __version__
from promoguard.settings import Settings

__all__ = [
    "INVENTORY",
    "MEMBER_TIERS",
    "AssertedTiers",
    "BreakerState",
    "Breakers",
    "Dependencies",
    "HttpInventory",
    "HttpMemberTiers",
    "Inventory",
    "MemberTiers",
    "NoInventory",
    "TierAnswer",
    "build_dependencies",
]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

MEMBER_TIERS: Final = "member_tiers"
INVENTORY: Final = "inventory"

BreakerState = Literal["closed", "half-opened", "opened"]
_GAUGE_VALUE: Final[dict[str, int]] = {"closed": 0, "half-opened": 1, "opened": 2}


class TierAnswer(NamedTuple):
    """A customer's membership tier; ``known=False`` means it could not be checked."""

    tier: str | None
    known: bool


UNKNOWN_TIER: Final = TierAnswer(None, known=False)


class _BadAnswerError(Exception):
    """The dependency answered, but not usably (5xx, 429, malformed body): counts as a failure."""


# What a call to a dependency may fail with; anything else is a bug, logged with its trace.
_UNAVAILABLE = (_BadAnswerError, httpx.HTTPError, TimeoutError, OpenedState)


class Breakers:
    """One circuit breaker per dependency (purgatory, in memory), with its state in metrics.

    A breaker opens after ``threshold`` failures in a row and refuses calls for
    ``reset_seconds``; the next call is then a trial that closes it or opens it again. The state
    is per process: purgatory's Redis store would share it, but this process would not hear the
    other workers' state changes, so the gauge would lie.
    """

    def __init__(
        self, registry: CollectorRegistry, *, threshold: int, reset_seconds: float
    ) -> None:
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold, default_ttl=reset_seconds
        )
        self._factory.add_listener(self._heard)
        self._states: dict[str, BreakerState] = {}
        self._state_gauge = Gauge(
            "promoguard_breaker_state",
            "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open",
            ["dependency"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._failures = Counter(
            "promoguard_dependency_failures",
            "Calls to a dependency that failed (error, timeout, bad answer)",
            ["dependency"],
            registry=registry,
        )

    def track(self, name: str) -> None:
        """Show breaker ``name`` in the metrics from now on, closed until it hears otherwise."""
        self._set(name, self._states.get(name, "closed"))
        self._failures.labels(dependency=name)

    def state(self, name: str) -> BreakerState:
        """The state of breaker ``name``: ``closed``, ``half-opened`` or ``opened``.

        An open breaker reads ``opened`` until a call after ``reset_seconds`` tries again.
        """
        return self._states.get(name, "closed")

    @asynccontextmanager
    async def guard(self, name: str) -> AsyncIterator[None]:
        """Run the block through breaker ``name``; any exception out of it is a failure.

        Raises:
            OpenedState: (``purgatory.domain.model``) the breaker is open; the block did not run.
        """
        # The in-memory store never suspends, so two first calls cannot create two breakers.
        breaker = await self._factory.get_breaker(name)
        async with breaker:
            try:
                yield
            except BaseException:
                # Cancellation counts too, as purgatory counts it: a caller that gave up waiting
                # is a sign of a slow dependency, and counting it errs towards degrading.
                self._failures.labels(dependency=name).inc()
                raise

    def _heard(self, name: str, kind: str, event: Event) -> None:
        # purgatory's hook; it runs inside the breaker's exit, so it must not raise.
        if kind == "circuit_breaker_created":
            self._set(name, "closed")
        elif kind == "state_changed" and isinstance(event, ContextChanged):
            self._set(name, event.state)

    def _set(self, name: str, state: BreakerState) -> None:
        self._states[name] = state
        self._state_gauge.labels(dependency=name).set(_GAUGE_VALUE[state])


class MemberTiers(Protocol):
    """Where a customer's membership tier comes from."""

    async def tier(self, customer_id: str, asserted: str | None) -> TierAnswer:
        """The tier of ``customer_id``; ``asserted`` is the tier the shop's request claims."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class Inventory(Protocol):
    """Where the units available per SKU come from."""

    async def available(self, skus: Sequence[str]) -> dict[str, int] | None:
        """Units available per SKU; ``None`` when unknown (the quote is then degraded).

        A SKU absent from the answer is not tracked by any inventory service (only with
        ``NoInventory``: an HTTP answer that leaves out a requested SKU is unknown, ``None``).
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class AssertedTiers:
    """No member-tier service configured: the tier the shop asserts in its request is believed."""

    async def tier(self, customer_id: str, asserted: str | None) -> TierAnswer:  # noqa: ARG002
        """The asserted tier, as known."""
        return TierAnswer(asserted, known=True)

    async def aclose(self) -> None:
        """Nothing to release."""


class NoInventory:
    """No inventory service configured: stock is not an outside condition of any discount.

    It answers an empty, *known* dict — every SKU untracked — not ``None``, which would mark every
    quote degraded. Promoguard's own stock counts (flash sales, coupons) still apply.
    """

    async def available(self, skus: Sequence[str]) -> dict[str, int] | None:  # noqa: ARG002
        """Nothing tracked."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


def _client(base_url: str, timeout_ms: int) -> httpx.AsyncClient:
    # One pooled client per dependency: a new connection per quote would cost more than the call.
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_ms / 1000),
        headers={"accept": "application/json", "user-agent": f"promoguard/{__version__}"},
    )


def _failed(response: httpx.Response) -> bool:
    """The service is in trouble (not: our request was refused)."""
    return response.is_server_error or response.status_code == httpx.codes.TOO_MANY_REQUESTS


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError as exc:
        raise _BadAnswerError(f"{response.url}: not JSON") from exc


async def _ask(
    breakers: Breakers,
    name: str,
    deadline: float,
    call: Callable[[], Awaitable[httpx.Response]],
    read: Callable[[httpx.Response], _T | None],
) -> _T | None:
    """One call through the dependency's breaker within its deadline, and its answer read; None
    when it cannot be had. Never raises: a bug here must not fail the quote (it is logged)."""
    try:
        async with breakers.guard(name), asyncio.timeout(deadline):
            return read(await call())
    except _UNAVAILABLE:
        return None
    except Exception:
        log.exception("%s lookup failed unexpectedly", name)
        return None


class HttpMemberTiers:
    """Member tiers from the member-tier service: ``GET {base}/v1/tiers/{customer_id}``.

    The shop's asserted tier is ignored: the service is the authority. 200 gives the tier, 404 a
    known non-member; anything else, a timeout, a lost connection or an open breaker: unknown.
    """

    def __init__(
        self, base_url: str, *, timeout_ms: int, breakers: Breakers, name: str = MEMBER_TIERS
    ) -> None:
        self._client = _client(base_url, timeout_ms)
        # httpx's timeout is per phase (connect, each read); this bounds the whole call.
        self._deadline = timeout_ms / 1000
        self._breakers = breakers
        self._name = name
        breakers.track(name)

    async def tier(self, customer_id: str, asserted: str | None) -> TierAnswer:  # noqa: ARG002
        """The service's tier for ``customer_id``, or unknown; never raises."""
        found = await _ask(
            self._breakers,
            self._name,
            self._deadline,
            lambda: self._client.get(f"/v1/tiers/{quote(customer_id, safe='')}"),
            lambda response: _tier_answer(response, customer_id),
        )
        return UNKNOWN_TIER if found is None else found

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _tier_answer(response: httpx.Response, customer_id: str) -> TierAnswer:
    if _failed(response):
        raise _BadAnswerError(f"member tiers: HTTP {response.status_code}")
    if response.status_code == httpx.codes.NOT_FOUND:
        return TierAnswer(None, known=True)
    if response.status_code != httpx.codes.OK:
        # Our request was refused (a 4xx other than 404, a redirect): unknown, but the service
        # is not failing, so the breaker is not told.
        return UNKNOWN_TIER
    body = _json(response)
    tier = body.get("tier") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("customer_id") != customer_id
        or not isinstance(tier, str)
        or not 1 <= len(tier) <= 128
    ):
        raise _BadAnswerError("member tiers: malformed answer")
    return TierAnswer(tier, known=True)


class HttpInventory:
    """Stock from the inventory service: ``GET {base}/v1/stock?sku=a&sku=b`` -> ``{"a": 3}``."""

    def __init__(
        self, base_url: str, *, timeout_ms: int, breakers: Breakers, name: str = INVENTORY
    ) -> None:
        self._client = _client(base_url, timeout_ms)
        self._deadline = timeout_ms / 1000
        self._breakers = breakers
        self._name = name
        breakers.track(name)

    async def available(self, skus: Sequence[str]) -> dict[str, int] | None:
        """Units available for every SKU in ``skus``, or ``None`` when unknown; never raises."""
        wanted = list(dict.fromkeys(skus))
        if not wanted:
            return {}
        return await _ask(
            self._breakers,
            self._name,
            self._deadline,
            lambda: self._client.get("/v1/stock", params=[("sku", s) for s in wanted]),
            lambda response: _stock_answer(response, wanted),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _stock_answer(response: httpx.Response, wanted: list[str]) -> dict[str, int] | None:
    if _failed(response):
        raise _BadAnswerError(f"inventory: HTTP {response.status_code}")
    if response.status_code != httpx.codes.OK:
        return None  # refused, not failing: see _tier_answer
    body = _json(response)
    if not isinstance(body, Mapping):
        raise _BadAnswerError("inventory: malformed answer")
    units: dict[str, int] = {}
    for sku in wanted:
        value = body.get(sku)
        # bool is an int; a missing or negative count cannot prove anything is in stock.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _BadAnswerError(f"inventory: no usable count for {sku!r}")
        units[sku] = value
    return units


@dataclass(frozen=True)
class Dependencies:
    """The outside services a quote consults, and their breakers."""

    tiers: MemberTiers
    inventory: Inventory
    breakers: Breakers

    async def aclose(self) -> None:
        """Close every client's connections."""
        await self.tiers.aclose()
        await self.inventory.aclose()


def build_dependencies(settings: Settings, registry: CollectorRegistry) -> Dependencies:
    """HTTP clients for the services ``settings`` names; the embedded stand-ins for the others."""
    breakers = Breakers(
        registry,
        threshold=settings.breaker_threshold,
        reset_seconds=settings.breaker_reset_seconds,
    )
    timeout_ms = settings.dependency_timeout_ms
    tiers: MemberTiers = (
        HttpMemberTiers(settings.member_tiers_url, timeout_ms=timeout_ms, breakers=breakers)
        if settings.member_tiers_url
        else AssertedTiers()
    )
    inventory: Inventory = (
        HttpInventory(settings.inventory_url, timeout_ms=timeout_ms, breakers=breakers)
        if settings.inventory_url
        else NoInventory()
    )
    return Dependencies(tiers=tiers, inventory=inventory, breakers=breakers)
