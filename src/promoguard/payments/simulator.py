"""A simulated payment provider: Stripe-like refunds, served as its own process.

``promoguard payment-provider`` runs it. It keeps its own records in its own SQLite file (never
promoguard's database): every refund, keyed by its idempotency key, and every request that
reached it. That file is what a test reads to see what the provider really paid.

The API (JSON; errors as ``{"error": {"type", "code", "message"}}``):

- ``POST /v1/refunds`` with an ``Idempotency-Key`` header and ``{order_ref, amount, currency,
  reason, metadata}``: makes the refund, or returns the one made before with that key (header
  ``Idempotent-Replayed: true``); 422 ``idempotency_key_reused`` if the key came with another
  order, amount or currency; 400 for an invalid request.
- ``GET /v1/refunds/{id}``, ``GET /v1/refunds?order_ref=&starting_after=&limit=``.
- ``PUT /v1/faults`` / ``GET /v1/faults``: the injected faults (see :class:`Faults`); a field
  left out is reset, so ``PUT {}`` clears them.
- ``POST /v1/refunds/{id}/confirm``: settle a pending refund now (a test-mode helper, like a
  provider's test clock). ``GET /v1/stats``: counts of refunds and of requests by outcome.

Faults apply to the refund endpoints only, so a test can always clear what it set. A timeout
fault holds the request longer than a client waits *and then still makes the refund*: the
classic "did it go through?" case, which only the idempotency key makes safe to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Faults", "RefundRequest", "create_simulator_app", "run_simulator"]

log = logging.getLogger("promoguard.payments.simulator")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    order_ref TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created TEXT NOT NULL,
    confirm_at REAL,
    notified INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS refunds_order_ref ON refunds (order_ref);
CREATE INDEX IF NOT EXISTS refunds_due ON refunds (status, confirm_at);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL
);
"""


class Faults(BaseModel):
    """Injected faults; a field left out is reset, so ``PUT {}`` clears every fault."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=60_000, description="wait before every answer")
    failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requests answered 500, changing nothing"
    )
    timeout_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of refund requests held for hang_ms and then applied anyway",
    )
    hang_ms: int = Field(default=3000, ge=0, le=120_000, description="how long a timeout holds")
    pending_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of new refunds created pending"
    )
    confirm_after_ms: int | None = Field(
        default=1000,
        ge=0,
        le=86_400_000,
        description="a pending refund succeeds this long after it was made; null: only when "
        "confirmed by POST /v1/refunds/{id}/confirm",
    )
    decline_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of new refunds created failed"
    )
    max_amount: int | None = Field(
        default=None, gt=0, description="refunds above this are refused (400 amount_too_large)"
    )
    down: bool = Field(default=False, description="every refund request is answered 503")
    callback_url: str | None = Field(
        default=None, description="where a pending refund's confirmation is POSTed"
    )
    seed: int | None = Field(default=None, description="reseed the faults' RNG")


class RefundRequest(BaseModel):
    """``POST /v1/refunds``."""

    model_config = ConfigDict(extra="forbid")

    order_ref: str = Field(min_length=1, max_length=64)
    amount: int = Field(gt=0, le=10**12, description="minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reason: str = Field(default="", max_length=200)
    metadata: dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=500)]] = (
        Field(default_factory=dict, max_length=50)
    )


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _as_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "refund",
        "idempotency_key": row["idempotency_key"],
        "order_ref": row["order_ref"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "metadata": json.loads(row["metadata"]),
        "created": row["created"],
    }


class _Ledger:
    """The provider's own records, in its own SQLite file (one process, one lock)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def log(self, key: str | None, outcome: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO requests (idempotency_key, at, outcome) VALUES (?, ?, ?)",
                (key, _now_iso(), outcome),
            )

    def create(
        self, key: str, body: RefundRequest, *, status: str, confirm_at: float | None
    ) -> tuple[dict[str, Any], bool]:
        """Make the refund for ``key``, or return the one made before; (refund, replayed)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT * FROM refunds WHERE idempotency_key = ?", (key,)
                ).fetchone()
                if row is not None:
                    same = (row["order_ref"], row["amount"], row["currency"]) == (
                        body.order_ref,
                        body.amount,
                        body.currency,
                    )
                    outcome = "replayed" if same else "key_reused"
                else:
                    outcome = "created"
                    self._db.execute(
                        "INSERT INTO refunds (id, idempotency_key, order_ref, amount, currency,"
                        " status, reason, metadata, created, confirm_at, notified)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            f"re_{secrets.token_hex(12)}",
                            key,
                            body.order_ref,
                            body.amount,
                            body.currency,
                            status,
                            body.reason,
                            json.dumps(body.metadata, sort_keys=True),
                            _now_iso(),
                            confirm_at,
                            0 if status == "pending" else 1,
                        ),
                    )
                    row = self._db.execute(
                        "SELECT * FROM refunds WHERE idempotency_key = ?", (key,)
                    ).fetchone()
                self._db.execute(
                    "INSERT INTO requests (idempotency_key, at, outcome) VALUES (?, ?, ?)",
                    (key, _now_iso(), outcome),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if outcome == "key_reused":
            raise _ApiError(
                422,
                "idempotency_key_reused",
                f"key {key!r} was used for another refund (order, amount or currency differ)",
            )
        return _as_json(row), outcome == "replayed"

    def settle_due(self, now: float) -> None:
        """Pending refunds whose time has come succeed."""
        with self._lock:
            self._db.execute(
                "UPDATE refunds SET status = 'succeeded' WHERE status = 'pending'"
                " AND confirm_at IS NOT NULL AND confirm_at <= ?",
                (now,),
            )

    def confirm(self, refund_id: str) -> dict[str, Any]:
        with self._lock:
            self._db.execute(
                "UPDATE refunds SET status = 'succeeded' WHERE id = ? AND status = 'pending'",
                (refund_id,),
            )
        return self.get(refund_id)

    def get(self, refund_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,)).fetchone()
        if row is None:
            raise _ApiError(404, "resource_missing", f"no refund {refund_id}")
        return _as_json(row)

    def page(self, order_ref: str | None, starting_after: str | None, limit: int) -> list[Any]:
        clauses, params = [], []
        with self._lock:
            if starting_after is not None:
                after = self._db.execute(
                    "SELECT seq FROM refunds WHERE id = ?", (starting_after,)
                ).fetchone()
                if after is None:
                    raise _ApiError(404, "resource_missing", f"no refund {starting_after}")
                clauses.append("seq > ?")
                params.append(after["seq"])
            if order_ref is not None:
                clauses.append("order_ref = ?")
                params.append(order_ref)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = self._db.execute(
                f"SELECT * FROM refunds {where} ORDER BY seq LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_as_json(row) for row in rows]

    def unnotified(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM refunds WHERE notified = 0 AND status != 'pending' LIMIT 100"
            ).fetchall()
        return [_as_json(row) for row in rows]

    def mark_notified(self, refund_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE refunds SET notified = 1 WHERE id = ?", (refund_id,))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            refunds = dict(
                self._db.execute("SELECT status, COUNT(*) FROM refunds GROUP BY status").fetchall()
            )
            requests = dict(
                self._db.execute(
                    "SELECT outcome, COUNT(*) FROM requests GROUP BY outcome"
                ).fetchall()
            )
        return {"refunds": refunds, "requests": requests}


@dataclass
class _State:
    ledger: _Ledger
    rng: random.Random
    faults: Faults = field(default_factory=Faults)
    held: set[asyncio.Task[Any]] = field(default_factory=set)

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    async def play(self, key: str | None = None) -> None:
        """Play the faults every refund endpoint shares: latency, an outage, random 500s."""
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.down:
            self.ledger.log(key, "down")
            raise _ApiError(503, "service_unavailable", "the provider is down (injected)")
        if self.chance(faults.failure_rate):
            self.ledger.log(key, "failed_injected")
            raise _ApiError(500, "api_error", "random failure (injected)")


def _new_status(state: _State) -> tuple[str, float | None]:
    faults = state.faults
    if state.chance(faults.decline_rate):
        return "failed", None
    if state.chance(faults.pending_rate):
        after = faults.confirm_after_ms
        return "pending", None if after is None else time.time() + after / 1000
    return "succeeded", None


async def _settle_loop(state: _State, interval: float) -> None:
    """Settle due pending refunds and POST their confirmations to the callback URL."""
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            await asyncio.sleep(interval)
            try:
                state.ledger.settle_due(time.time())
                for refund in state.ledger.unnotified():
                    url = state.faults.callback_url
                    if url is None:
                        state.ledger.mark_notified(refund["id"])
                        continue
                    answer = await client.post(url, json={"type": "refund.updated", "data": refund})
                    if answer.is_success:
                        state.ledger.mark_notified(refund["id"])
            except Exception as exc:  # the loop outlives a bad callback target
                log.warning("settling refunds failed: %s", exc)


async def _refund(state: _State, key: str, body: RefundRequest) -> tuple[dict[str, Any], bool]:
    """Make (or replay) one refund, playing the faults on the way."""
    await state.play(key)
    if state.faults.max_amount is not None and body.amount > state.faults.max_amount:
        state.ledger.log(key, "refused")
        raise _ApiError(400, "amount_too_large", f"refunds above {state.faults.max_amount}")
    status, confirm_at = _new_status(state)
    if state.chance(state.faults.timeout_rate):
        # Held past the client's patience, then applied anyway: a task of its own, so a
        # client hanging up (which may cancel this handler) does not stop the refund.
        hang = state.faults.hang_ms / 1000

        async def late() -> tuple[dict[str, Any], bool]:
            await asyncio.sleep(hang)
            return state.ledger.create(key, body, status=status, confirm_at=confirm_at)

        task = asyncio.create_task(late())
        state.held.add(task)
        task.add_done_callback(state.held.discard)
        return await asyncio.shield(task)
    return state.ledger.create(key, body, status=status, confirm_at=confirm_at)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_ApiError)
    async def api_error(_: Request, exc: _ApiError) -> JSONResponse:
        kind = "api_error" if exc.status >= 500 else "invalid_request_error"
        return JSONResponse(
            {"error": {"type": kind, "code": exc.code, "message": exc.message}},
            status_code=exc.status,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(
            {"error": {"type": "invalid_request_error", "code": "invalid", "message": message}},
            status_code=400,
        )


def create_simulator_app(
    db_path: Path,
    *,
    faults: Faults | None = None,
    seed: int | None = None,
    settle_interval: float = 0.1,
) -> FastAPI:
    """The simulated provider keeping its records in ``db_path`` and playing ``faults``."""
    state = _State(ledger=_Ledger(db_path), rng=random.Random(seed), faults=faults or Faults())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settler = asyncio.create_task(_settle_loop(state, settle_interval))
        try:
            yield
        finally:
            settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settler
            state.ledger.close()

    app = FastAPI(title="promoguard simulated payment provider", lifespan=lifespan)

    _error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "faults": state.faults.model_dump()}

    @app.post("/v1/refunds")
    async def create_refund(
        body: RefundRequest,
        idempotency_key: Annotated[str, Header(min_length=1, max_length=255)],
    ) -> JSONResponse:
        refund, replayed = await _refund(state, idempotency_key, body)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(refund, headers=headers)

    @app.get("/v1/refunds/{refund_id}")
    async def get_refund(refund_id: str) -> dict[str, Any]:
        await state.play()
        state.ledger.settle_due(time.time())
        return state.ledger.get(refund_id)

    @app.get("/v1/refunds")
    async def list_refunds(
        order_ref: str | None = None,
        starting_after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        await state.play()
        state.ledger.settle_due(time.time())
        rows = state.ledger.page(order_ref, starting_after, limit + 1)
        return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}

    @app.post("/v1/refunds/{refund_id}/confirm")
    async def confirm(refund_id: str) -> dict[str, Any]:
        return state.ledger.confirm(refund_id)

    @app.get("/v1/faults")
    async def get_faults() -> Faults:
        return state.faults

    @app.put("/v1/faults")
    async def put_faults(body: Faults) -> Faults:
        if body.seed is not None:
            state.rng.seed(body.seed)
        state.faults = body
        return body

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return state.ledger.stats()

    return app


def run_simulator(
    host: str, port: int, db_path: Path, *, faults: Mapping[str, Any], seed: int | None
) -> None:
    """Serve the simulated provider with uvicorn until stopped."""
    app = create_simulator_app(db_path, faults=Faults.model_validate(dict(faults)), seed=seed)
    uvicorn.run(app, host=host, port=port, log_level="warning")
