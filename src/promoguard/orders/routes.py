"""``/v1/quotes`` and ``/v1/orders``: price, commit, follow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response

from promoguard.api import PROBLEMS, Svc, now
from promoguard.errors import BadRequestError
from promoguard.orders.schemas import OrderEventIn, OrderIn, QuoteRequest
from promoguard.orders.service import request_hash

router = APIRouter(tags=["checkout"], responses=PROBLEMS)

Id = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/v1/quotes", summary="Price a cart under the live rules; returns a signed token")
async def create_quote(body: QuoteRequest, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.quote(body, now())


@router.post("/v1/orders", status_code=201, summary="Commit a quote token into an order")
async def create_order(
    body: OrderIn,
    request: Request,
    response: Response,
    svc: Svc,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> dict[str, Any]:
    if idempotency_key is None:
        raise BadRequestError(
            "idempotency_key_missing",
            "an Idempotency-Key header is required to place an order",
            errors=[("Idempotency-Key", "Field required")],
        )
    order, replayed = await svc.checkout.place_order(
        token=body.quote_token,
        key=idempotency_key,
        body_hash=request_hash(await request.body()),
        now=now(),
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return order


@router.get("/v1/orders/{order_id}", summary="Read an order with its allocations")
async def read_order(order_id: Id, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.get_order(order_id)


@router.post("/v1/orders/{order_id}/events", summary="Paid, shipped, cancelled or refunded")
async def order_event(order_id: Id, body: OrderEventIn, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.apply_event(order_id, body, now())
