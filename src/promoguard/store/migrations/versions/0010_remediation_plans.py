"""remediation_plans and remediation_items: what a remediation does, approved, then executed

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "remediation_plans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=2), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("items_total", sa.Integer(), nullable=False),
        sa.Column(
            "refund_total", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.String(length=1000), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_remediation_plans_incident_id_incidents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remediation_plans")),
    )
    with op.batch_alter_table("remediation_plans", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remediation_plans_incident_id"), ["incident_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_remediation_plans_status"), ["status"], unique=False)

    op.create_table(
        "remediation_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("claim_id", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("klass", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("cause", sa.String(length=160), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "difference", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("refund", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("coupon", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("coupon_id", sa.String(length=36), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["remediation_plans.id"],
            name=op.f("fk_remediation_items_plan_id_remediation_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remediation_items")),
        sa.UniqueConstraint(
            "plan_id", "idempotency_key", name=op.f("uq_remediation_items_plan_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("remediation_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remediation_items_order_id"), ["order_id"], unique=False
        )
        batch_op.create_index(
            "ix_remediation_items_plan_status", ["plan_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("remediation_items", schema=None) as batch_op:
        batch_op.drop_index("ix_remediation_items_plan_status")
        batch_op.drop_index(batch_op.f("ix_remediation_items_order_id"))

    op.drop_table("remediation_items")
    with op.batch_alter_table("remediation_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remediation_plans_status"))
        batch_op.drop_index(batch_op.f("ix_remediation_plans_incident_id"))

    op.drop_table("remediation_plans")
