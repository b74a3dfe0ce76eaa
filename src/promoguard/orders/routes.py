"""``/v1/quotes`` and ``/v1/orders``: price, commit, follow."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Request, Response

from promoguard.api import PROBLEMS, Svc, allow, now
from promoguard.errors import BadRequestError
from promoguard.orders.schemas import GroupJoin, GroupOpen, OrderEventIn, OrderIn, QuoteRequest
from promoguard.orders.service import request_hash
from promoguard.security.keys import Role

router = APIRouter(tags=["checkout"], responses=PROBLEMS)


def _json(data: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


Id = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "/v1/quotes",
    response_model=dict[str, Any],
    summary="Price a cart under the live rules; returns a signed token",
    dependencies=[allow(Role.STOREFRONT, route="quote")],
)
async def create_quote(body: QuoteRequest, svc: Svc) -> Response:
    await svc.guard.limits.hit("quote", {"customer": body.customer.id})
    # Returned as ready JSON: the hot path skips FastAPI's generic serialisation of a dict.
    return _json(await svc.checkout.quote(body, now()))


@router.post(
    "/v1/orders",
    status_code=201,
    response_model=dict[str, Any],
    summary="Commit a quote token into an order",
    dependencies=[allow(Role.STOREFRONT, route="order_create")],
)
async def create_order(
    body: OrderIn,
    request: Request,
    svc: Svc,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
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
    answer = _json(order, status_code=201)
    if replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


@router.get(
    "/v1/orders/{order_id}",
    summary="Read an order with its allocations",
    dependencies=[allow(Role.STOREFRONT, Role.OPERATOR, Role.AUDITOR, route="order_read")],
)
async def read_order(order_id: Id, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.get_order(order_id)


@router.post(
    "/v1/orders/{order_id}/events",
    summary="Paid, shipped, cancelled or refunded",
    dependencies=[allow(Role.STOREFRONT, route="order_event")],
)
async def order_event(order_id: Id, body: OrderEventIn, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.apply_event(order_id, body, now())


@router.post(
    "/v1/groups",
    status_code=201,
    summary="Open a group-buy group (拼团), the customer taking the first place",
    dependencies=[allow(Role.STOREFRONT, route="group_open")],
)
async def open_group(body: GroupOpen, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.open_group(body.rule_id, body.customer, now())


@router.post(
    "/v1/groups/{group_id}/members",
    summary="Join an open group (one place per identity)",
    dependencies=[allow(Role.STOREFRONT, route="group_join")],
)
async def join_group(group_id: Id, body: GroupJoin, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.join_group(group_id, body.customer, now())


@router.get(
    "/v1/groups/{group_id}",
    summary="A group with its members and state",
    dependencies=[allow(Role.STOREFRONT, Role.OPERATOR, Role.AUDITOR, route="group_read")],
)
async def read_group(group_id: Id, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.get_group(group_id)


@router.get(
    "/v1/customers/{customer_id}/identity",
    summary="Accounts the identity ledger links to this customer",
    dependencies=[allow(Role.OPERATOR, Role.AUDITOR, route="identity_read")],
)
async def read_identity(customer_id: Id, svc: Svc) -> dict[str, Any]:
    return await svc.checkout.linked_accounts(customer_id)
