"""Group-buy (拼团): open a group, join it, and complete it when ``group_size`` distinct
identities have all paid.

How it plays with checkout: a member of an open group (not expired) may buy once at the group
price; the order is tied to the membership at commit. Paying counts towards completion. A group
that reaches its time limit before it completes expires: its members' unpaid orders expire and
release what they held, and its paid orders are cancelled and handed to the payout path for a
full refund (:class:`RefundHandover`), so only complete groups keep the group price.

One identity cannot take two places: every member's identity signals (account, phone, device,
payment fingerprint, address) are unique within a group by primary key, so even racing joins on
another account with the same phone fail with ``group_same_identity``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import ConflictError, NotFoundError
from promoguard.orders.identity import Identity
from promoguard.orders.models import (
    BuyGroup,
    GroupMember,
    GroupMemberSignal,
    GroupState,
    RefundRequest,
)
from promoguard.promotions.rules import GroupBuy
from promoguard.store.db import PlainSQL, upsert_insert

__all__ = [
    "RecordedRefunds",
    "RefundHandover",
    "attach_order",
    "group_view",
    "join_group",
    "member_paid",
    "open_group",
    "open_memberships",
    "open_memberships_in",
    "order_left",
    "same_identity",
]


class RefundHandover(Protocol):
    """The seam to the payout path: ask for a refund of an order, once per cause."""

    async def request(
        self,
        session: AsyncSession,
        *,
        order_id: str,
        customer_id: str,
        amount: int,
        cause: str,
        now: datetime,
    ) -> bool:
        """Record the request in the caller's transaction; tell whether it is new."""


class RecordedRefunds:
    """Refund requests written to ``refund_requests`` (unique per order and cause) for the
    remediation issue's payout jobs to pay."""

    async def request(
        self,
        session: AsyncSession,
        *,
        order_id: str,
        customer_id: str,
        amount: int,
        cause: str,
        now: datetime,
    ) -> bool:
        """Insert the request unless this (order, cause) already has one."""
        insert_ = upsert_insert(session)
        statement = (
            insert_(RefundRequest)
            .values(
                order_id=order_id,
                customer_id=customer_id,
                amount=amount,
                cause=cause,
                state="pending",
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["order_id", "cause"])
            .returning(RefundRequest.id)
        )
        return (await session.execute(statement)).scalar_one_or_none() is not None


def group_view(group: BuyGroup, members: list[GroupMember]) -> dict[str, Any]:
    """A group as the API shows it."""
    return {
        "id": group.id,
        "rule_id": group.rule_id,
        "size": group.size,
        "state": group.state,
        "members": [
            {"customer_id": m.customer_id, "order_id": m.order_id, "paid": m.paid} for m in members
        ],
        "paid": group.paid,
        "opened_at": group.opened_at.isoformat(),
        "expires_at": group.expires_at.isoformat(),
        "closed_at": group.closed_at.isoformat() if group.closed_at else None,
    }


async def _add_member(
    session: AsyncSession, group_id: str, identity: Identity, now: datetime
) -> None:
    await session.execute(
        insert(GroupMember).values(
            group_id=group_id, customer_id=identity.customer_id, paid=False, joined_at=now
        )
    )
    await session.execute(
        insert(GroupMemberSignal),
        [
            {"group_id": group_id, "signal": s, "customer_id": identity.customer_id}
            for s in identity.signals
        ],
    )


async def open_group(
    session: AsyncSession, *, spec: GroupBuy, identity: Identity, now: datetime
) -> str:
    """Open a group of ``spec`` with the customer as its first member; returns its id."""
    group_id = str(uuid.uuid4())
    await session.execute(
        insert(BuyGroup).values(
            id=group_id,
            rule_id=spec.id,
            size=spec.group_size,
            leader_id=identity.customer_id,
            state=GroupState.OPEN,
            members=1,
            paid=0,
            opened_at=now,
            expires_at=now + timedelta(minutes=spec.time_limit_minutes),
        )
    )
    await _add_member(session, group_id, identity, now)
    return group_id


async def join_group(
    session: AsyncSession, *, group_id: str, identity: Identity, now: datetime
) -> None:
    """Take a place in an open group, if one is left and the identity has none yet.

    Raises:
        NotFoundError: ``group_not_found``.
        ConflictError: ``group_closed`` (complete or expired) or ``group_full``.
        IntegrityError: the identity already has a place.
    """
    group = await session.get(BuyGroup, group_id)
    if group is None:
        raise NotFoundError("group_not_found", f"no group {group_id!r}")
    placed = await session.execute(
        update(BuyGroup)
        .where(
            BuyGroup.id == group_id,
            BuyGroup.state == GroupState.OPEN,
            BuyGroup.expires_at > now,
            BuyGroup.members < BuyGroup.size,
        )
        .values(members=BuyGroup.members + 1)
        .execution_options(synchronize_session=False)
    )
    if placed.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(group)
        if group.state != GroupState.OPEN or group.expires_at <= now:
            raise ConflictError(
                "group_closed", f"group {group_id} is {group.state}: it cannot be joined"
            )
        raise ConflictError("group_full", f"group {group_id} has its {group.size} members")
    # A second place for the same identity breaks a primary key: IntegrityError, which the
    # caller maps to group_same_identity after rolling back (see same_identity).
    await _add_member(session, group_id, identity, now)


def same_identity() -> ConflictError:
    """The error for a second place taken by one identity."""
    return ConflictError(
        "group_same_identity",
        "this identity (its account, phone, device, payment or address) is already in the "
        "group: a group needs distinct people",
    )


async def open_memberships(session: AsyncSession, customer_id: str, now: datetime) -> set[str]:
    """Group-buy rule ids the customer may still buy at the group price: a place in an open,
    unexpired group not yet used by an order."""
    rows = await session.scalars(
        select(BuyGroup.rule_id)
        .join(GroupMember, GroupMember.group_id == BuyGroup.id)
        .where(
            GroupMember.customer_id == customer_id,
            GroupMember.order_id.is_(None),
            BuyGroup.state == GroupState.OPEN,
            BuyGroup.expires_at > now,
        )
    )
    return set(rows.all())


def open_memberships_in(sql: PlainSQL, customer_id: str, now: datetime) -> set[str]:
    """:func:`open_memberships` inside an order's plain-SQL transaction."""
    rows = sql.all(
        "SELECT buy_groups.rule_id FROM buy_groups JOIN group_members"
        " ON group_members.group_id = buy_groups.id WHERE group_members.customer_id = ?"
        " AND group_members.order_id IS NULL AND buy_groups.state = ?"
        " AND buy_groups.expires_at > ?",
        (customer_id, GroupState.OPEN.value, sql.instant(now)),
    )
    return {row[0] for row in rows}


def attach_order(
    sql: PlainSQL, *, rule_id: str, customer_id: str, order_id: str, now: datetime
) -> bool:
    """Tie an order at the group price to one of the customer's free places in an open group of
    ``rule_id`` (in the order's plain-SQL transaction); tell whether there was one."""
    candidates = sql.all(
        "SELECT group_members.group_id FROM group_members JOIN buy_groups"
        " ON group_members.group_id = buy_groups.id WHERE group_members.customer_id = ?"
        " AND group_members.order_id IS NULL AND buy_groups.rule_id = ?"
        " AND buy_groups.state = ? AND buy_groups.expires_at > ?"
        " ORDER BY buy_groups.expires_at",
        (customer_id, rule_id, GroupState.OPEN.value, sql.instant(now)),
    )
    for (group_id,) in candidates:
        done = sql.count(
            "UPDATE group_members SET order_id = ? WHERE group_id = ? AND customer_id = ?"
            " AND order_id IS NULL",
            (order_id, group_id, customer_id),
        )
        if done == 1:
            return True
    return False


async def member_paid(session: AsyncSession, order_id: str, now: datetime) -> str | None:
    """Count a member's payment; complete the group when every place is paid. Returns the
    group's state after it (None when the order is not a group order)."""
    member = await session.scalar(select(GroupMember).where(GroupMember.order_id == order_id))
    if member is None:
        return None
    if not member.paid:
        member.paid = True
        await session.execute(
            update(BuyGroup)
            .where(BuyGroup.id == member.group_id)
            .values(paid=BuyGroup.paid + 1)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(BuyGroup)
            .where(
                BuyGroup.id == member.group_id,
                BuyGroup.state == GroupState.OPEN,
                BuyGroup.paid >= BuyGroup.size,
            )
            .values(state=GroupState.COMPLETE, closed_at=now)
            .execution_options(synchronize_session=False)
        )
    return await session.scalar(select(BuyGroup.state).where(BuyGroup.id == member.group_id))


async def order_left(session: AsyncSession, order_id: str) -> None:
    """A member's order was cancelled or expired: the place is free again (and unpaid)."""
    member = await session.scalar(select(GroupMember).where(GroupMember.order_id == order_id))
    if member is None:
        return
    if member.paid:
        await session.execute(
            update(BuyGroup)
            .where(BuyGroup.id == member.group_id, BuyGroup.state == GroupState.OPEN)
            .values(paid=BuyGroup.paid - 1)
            .execution_options(synchronize_session=False)
        )
    member.order_id = None
    member.paid = False


async def due_groups(session: AsyncSession, now: datetime, limit: int = 200) -> list[str]:
    """Open groups past their time limit."""
    rows = await session.scalars(
        select(BuyGroup.id)
        .where(BuyGroup.state == GroupState.OPEN, BuyGroup.expires_at <= now)
        .limit(limit)
    )
    return list(rows.all())


async def expire_group(session: AsyncSession, group_id: str, now: datetime) -> list[GroupMember]:
    """Close an open group that ran out of time; returns its members with orders (empty when
    another worker expired it first)."""
    done = await session.execute(
        update(BuyGroup)
        .where(BuyGroup.id == group_id, BuyGroup.state == GroupState.OPEN)
        .values(state=GroupState.EXPIRED, closed_at=now)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return []
    members = await session.scalars(
        select(GroupMember).where(
            GroupMember.group_id == group_id, GroupMember.order_id.is_not(None)
        )
    )
    return list(members.all())
