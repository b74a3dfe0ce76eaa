"""Per-customer counters raised only by a conditional upsert (never read-then-write).

``INSERT ... ON CONFLICT DO UPDATE SET used = used + n WHERE used + n <= limit RETURNING used``
works the same on SQLite (3.35+) and PostgreSQL: the limit holds whatever the concurrency.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.orders.models import CustomerUsage
from promoguard.store.db import upsert_insert

__all__ = ["bump_usage"]


async def bump_usage(
    session: AsyncSession, *, customer_id: str, counter: str, by: int, limit: int
) -> bool:
    """Raise a counter by ``by`` if it stays within ``limit``; tell whether it did."""
    if by > limit:
        return False
    insert = upsert_insert(session)
    table = CustomerUsage.__table__
    assert isinstance(table, Table)
    statement = (
        insert(table)
        .values(customer_id=customer_id, counter=counter, used=by)
        .on_conflict_do_update(
            index_elements=[table.c.customer_id, table.c.counter],
            set_={"used": table.c.used + by},
            where=table.c.used + by <= limit,
        )
        .returning(table.c.used)
    )
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None
