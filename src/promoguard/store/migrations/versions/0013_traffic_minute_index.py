"""campaign_traffic.minute and route_traffic.minute indexed on their own, so the sweeper finds
the minutes past PROMOGUARD_TRAFFIC_RETENTION_DAYS without reading the whole table

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 01:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("campaign_traffic", "route_traffic"):
        op.create_index(op.f(f"ix_{table}_minute"), table, ["minute"], unique=False)


def downgrade() -> None:
    for table in ("route_traffic", "campaign_traffic"):
        op.drop_index(op.f(f"ix_{table}_minute"), table_name=table)
