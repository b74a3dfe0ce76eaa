"""route_traffic (each route's requests, 4xx, 5xx and latency buckets per minute) and
campaign_traffic.guard_trips (guard trips per campaign version per minute)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = (
    "le_1ms",
    "le_2ms",
    "le_5ms",
    "le_10ms",
    "le_25ms",
    "le_50ms",
    "le_100ms",
    "le_250ms",
    "le_500ms",
    "le_1000ms",
    "le_2500ms",
    "le_5000ms",
    "le_10000ms",
    "over_10000ms",
)


def upgrade() -> None:
    op.create_table(
        "route_traffic",
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("client_errors", sa.Integer(), nullable=False),
        sa.Column("server_errors", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in BUCKETS),
        sa.PrimaryKeyConstraint("route", "minute", name=op.f("pk_route_traffic")),
    )
    with op.batch_alter_table("campaign_traffic") as batch:
        batch.add_column(sa.Column("guard_trips", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaign_traffic") as batch:
        batch.drop_column("guard_trips")
    op.drop_table("route_traffic")
