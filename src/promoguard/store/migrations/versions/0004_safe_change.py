"""safe change: review, rollout, simulation, catalogue

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 11:25:16.927327
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalogue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("approver", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id", "version"],
            ["campaign_versions.campaign_id", "campaign_versions.version"],
            name=op.f("fk_approvals_campaign_id_campaign_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.UniqueConstraint(
            "campaign_id",
            "version",
            "department",
            name=op.f("uq_approvals_campaign_id_version_department"),
        ),
    )
    with op.batch_alter_table("campaign_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("findings", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("acknowledgements", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("simulation", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("start_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("start_rollout_bps", sa.Integer(), nullable=True))

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner", sa.String(length=128), nullable=False, server_default="")
        )

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_version", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("rollout_bps", sa.Integer(), nullable=False, server_default="10000")
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("rollout_bps")
        batch_op.drop_column("previous_version")

    with op.batch_alter_table("campaign_versions", schema=None) as batch_op:
        batch_op.drop_column("start_rollout_bps")
        batch_op.drop_column("start_at")
        batch_op.drop_column("simulation")
        batch_op.drop_column("acknowledgements")
        batch_op.drop_column("findings")
        batch_op.drop_column("submitted_at")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("owner")

    op.drop_table("approvals")
    op.drop_table("catalogue")
