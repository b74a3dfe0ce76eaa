"""A small reference member-tier and inventory service, for tests and the demo.

It answers what promoguard's clients ask (``GET /v1/tiers/{customer_id}``, ``GET /v1/stock``),
lets a test or the demo set its data (``PUT /v1/tiers/...``, ``PUT /v1/stock/...``) and inject
failures (``PUT /v1/faults``). Faults apply to the two read endpoints only — the ones promoguard
calls — so a test can always clear a fault it set. Besides failing (a delay, an outage, random
errors) the service can answer wrongly: ``tier_override`` makes every tier read answer that
tier, as a member-tier service that starts mapping ordinary customers to VIP does. ``GET
/v1/calls`` counts the reads that reached the service, which is how a test sees that an open
breaker stops calling.

State lives in the app instance (no globals): one process, one service.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Faults",
    "ReferenceData",
    "create_reference_app",
    "load_reference_data",
    "run_reference",
]

TierName = Annotated[str, Field(min_length=1, max_length=64)]


class ReferenceData(BaseModel):
    """The tiers file: ``{"tiers": {customer_id: tier}, "stock": {sku: units}}``."""

    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, TierName] = Field(default_factory=dict)
    stock: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class Faults(BaseModel):
    """Injected failures; a field left out is reset, so ``PUT {}`` clears every fault."""

    model_config = ConfigDict(extra="forbid")

    delay_ms: int = Field(default=0, ge=0, le=60_000, description="wait before every answer")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of answers that are 500")
    down: bool = Field(default=False, description="every answer is 503")
    seed: int | None = Field(default=None, description="reseed the error_rate RNG")
    tier_override: TierName | None = Field(
        default=None,
        description="every tier read answers this tier: the member-tier service mapping "
        "ordinary customers to VIP",
    )


class TierBody(BaseModel):
    """``PUT /v1/tiers/{customer_id}``."""

    tier: TierName


class StockBody(BaseModel):
    """``PUT /v1/stock/{sku}``."""

    available: int = Field(ge=0)


@dataclass
class _State:
    tiers: dict[str, str]
    stock: dict[str, int]
    rng: random.Random
    faults: Faults = field(default_factory=Faults)
    calls: Counter[str] = field(default_factory=Counter)

    async def answer_or_fail(self, endpoint: str) -> None:
        """Count the call, then play the injected faults: delay, down, random errors."""
        self.calls[endpoint] += 1
        faults = self.faults
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        if faults.down:
            raise HTTPException(503, "service down (injected)")
        if faults.error_rate and self.rng.random() < faults.error_rate:
            raise HTTPException(500, "random failure (injected)")


def create_reference_app(
    tiers: dict[str, str], stock: dict[str, int], *, seed: int | None = None
) -> FastAPI:
    """The reference service holding ``tiers`` and ``stock``; ``seed`` fixes its error RNG."""
    state = _State(tiers=dict(tiers), stock=dict(stock), rng=random.Random(seed))
    app = FastAPI(title="promoguard reference member-tier and inventory service")

    @app.get("/health")
    async def health() -> dict[str, object]:
        # Faults do not apply here: it tells the process is up, and which faults it plays.
        return {"status": "ok", "faults": state.faults.model_dump()}

    @app.get("/v1/tiers/{customer_id}")
    async def get_tier(customer_id: str) -> dict[str, str]:
        await state.answer_or_fail("tiers")
        tier = state.faults.tier_override or state.tiers.get(customer_id)
        if tier is None:
            raise HTTPException(404, "not a member")
        return {"customer_id": customer_id, "tier": tier}

    @app.put("/v1/tiers/{customer_id}")
    async def put_tier(customer_id: str, body: TierBody) -> dict[str, str]:
        state.tiers[customer_id] = body.tier
        return {"customer_id": customer_id, "tier": body.tier}

    @app.delete("/v1/tiers/{customer_id}", status_code=204)
    async def delete_tier(customer_id: str) -> None:
        state.tiers.pop(customer_id, None)

    @app.get("/v1/stock")
    async def get_stock(
        sku: Annotated[list[str], Query(max_length=1000)] = [],  # noqa: B006 - FastAPI's idiom
    ) -> dict[str, int]:
        await state.answer_or_fail("stock")
        return {s: state.stock.get(s, 0) for s in sku}

    @app.put("/v1/stock/{sku}")
    async def put_stock(sku: str, body: StockBody) -> dict[str, int]:
        state.stock[sku] = body.available
        return {sku: body.available}

    @app.get("/v1/faults")
    async def get_faults() -> Faults:
        return state.faults

    @app.put("/v1/faults")
    async def put_faults(body: Faults) -> Faults:
        if body.seed is not None:
            state.rng.seed(body.seed)
        state.faults = body
        return body

    @app.get("/v1/calls")
    async def calls() -> dict[str, int]:
        return {"tiers": state.calls["tiers"], "stock": state.calls["stock"]}

    return app


def load_reference_data(path: Path) -> ReferenceData:
    """Read and check a tiers file."""
    return ReferenceData.model_validate_json(path.read_bytes())


def run_reference(
    host: str, port: int, tiers_file: Path | None, *, seed: int | None = None
) -> None:
    """Serve the reference service with uvicorn until stopped; data from ``tiers_file`` if given."""
    data = load_reference_data(tiers_file) if tiers_file is not None else ReferenceData()
    app = create_reference_app(data.tiers, data.stock, seed=seed)
    uvicorn.run(app, host=host, port=port, log_level="warning")
