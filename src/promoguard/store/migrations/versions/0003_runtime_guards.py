"""runtime guards: counters, reservations, identity, groups, refund requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:01:38.295576
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "buy_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("leader_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("paid", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buy_groups")),
    )
    with op.batch_alter_table("buy_groups", schema=None) as batch_op:
        batch_op.create_index("ix_buy_groups_due", ["state", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_buy_groups_rule_id"), ["rule_id"], unique=False)

    op.create_table(
        "counters",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("used", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_counters")),
    )
    op.create_table(
        "group_member_signals",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("signal", sa.String(length=80), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["buy_groups.id"],
            name=op.f("fk_group_member_signals_group_id_buy_groups"),
        ),
        sa.PrimaryKeyConstraint("group_id", "signal", name=op.f("pk_group_member_signals")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["buy_groups.id"], name=op.f("fk_group_members_group_id_buy_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", "customer_id", name=op.f("pk_group_members")),
    )
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_group_members_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_group_members_order_id"), ["order_id"], unique=False)

    op.create_table(
        "identity_marks",
        sa.Column("signal", sa.String(length=80), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_identity_marks_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("signal", "order_id", name=op.f("pk_identity_marks")),
    )
    with op.batch_alter_table("identity_marks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_marks_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_identity_marks_order_id"), ["order_id"], unique=False)

    op.create_table(
        "refund_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("cause", sa.String(length=120), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_refund_requests_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund_requests")),
        sa.UniqueConstraint("order_id", "cause", name=op.f("uq_refund_requests_order_id_cause")),
    )
    with op.batch_alter_table("refund_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refund_requests_order_id"), ["order_id"], unique=False)

    op.create_table(
        "reservations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_reservations_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index("ix_reservations_due", ["state", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reservations_key"), ["key"], unique=False)
        batch_op.create_index(batch_op.f("ix_reservations_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_order_id"))
        batch_op.drop_index(batch_op.f("ix_reservations_key"))
        batch_op.drop_index("ix_reservations_due")

    op.drop_table("reservations")
    with op.batch_alter_table("refund_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refund_requests_order_id"))

    op.drop_table("refund_requests")
    with op.batch_alter_table("identity_marks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_marks_order_id"))
        batch_op.drop_index(batch_op.f("ix_identity_marks_customer_id"))

    op.drop_table("identity_marks")
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_members_order_id"))
        batch_op.drop_index(batch_op.f("ix_group_members_customer_id"))

    op.drop_table("group_members")
    op.drop_table("group_member_signals")
    op.drop_table("counters")
    with op.batch_alter_table("buy_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buy_groups_rule_id"))
        batch_op.drop_index("ix_buy_groups_due")

    op.drop_table("buy_groups")
