"""Per-customer counters raised only by a conditional upsert (never read-then-write).

``INSERT ... ON CONFLICT DO UPDATE SET used = used + n WHERE used + n <= limit RETURNING used``
works the same on SQLite (3.35+) and PostgreSQL: the limit holds whatever the concurrency.
"""

from __future__ import annotations

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.orders.models import CustomerUsage

__all__ = ["bump_usage", "release_usage", "usage_counts"]


async def bump_usage(
    session: AsyncSession, *, customer_id: str, counter: str, by: int, limit: int
) -> bool:
    """Raise a counter by ``by`` if it stays within ``limit``; tell whether it did."""
    if by > limit:
        return False
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
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


async def release_usage(session: AsyncSession, *, customer_id: str, counter: str, by: int) -> None:
    """Give back what a cancelled order used."""
    await session.execute(
        update(CustomerUsage)
        .where(
            CustomerUsage.customer_id == customer_id,
            CustomerUsage.counter == counter,
            CustomerUsage.used >= by,
        )
        .values(used=CustomerUsage.used - by)
    )


async def usage_counts(session: AsyncSession, *, customer_id: str, prefix: str) -> dict[str, int]:
    """The customer's counters starting with ``prefix``, keyed by the rest of the name."""
    rows = await session.execute(
        select(CustomerUsage.counter, CustomerUsage.used).where(
            CustomerUsage.customer_id == customer_id, CustomerUsage.counter.startswith(prefix)
        )
    )
    return {counter.removeprefix(prefix): used for counter, used in rows.all()}
