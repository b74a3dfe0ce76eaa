"""payments: payouts (one per order and cause) and their append-only ledger

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payouts",
        sa.Column("id", _BIGINT, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("cause", sa.String(length=160), nullable=False),
        sa.Column("amount", _BIGINT, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payouts_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payouts_idempotency_key")),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payouts_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_payouts_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_payouts_order_id"), ["order_id"], unique=False)

    op.create_table(
        "payout_ledger",
        sa.Column("id", _BIGINT, autoincrement=True, nullable=False),
        sa.Column("payout_id", _BIGINT, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("amount", _BIGINT, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payout_id"], ["payouts.id"], name=op.f("fk_payout_ledger_payout_id_payouts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_ledger")),
    )
    with op.batch_alter_table("payout_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payout_ledger_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_payout_ledger_event"), ["event"], unique=False)
        batch_op.create_index(batch_op.f("ix_payout_ledger_payout_id"), ["payout_id"], unique=False)

    # The ledger, like the audit log, refuses every update and delete in the database too.
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER payout_ledger_no_{verb.lower()} BEFORE {verb} ON payout_ledger "
                "BEGIN SELECT RAISE(ABORT, 'the payout ledger is append-only'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION payout_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the payout ledger is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER payout_ledger_append_only BEFORE UPDATE OR DELETE ON payout_ledger "
            "FOR EACH ROW EXECUTE FUNCTION payout_ledger_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS payout_ledger_no_{verb}")
    else:
        op.execute("DROP TRIGGER IF EXISTS payout_ledger_append_only ON payout_ledger")
        op.execute("DROP FUNCTION IF EXISTS payout_ledger_append_only()")
    with op.batch_alter_table("payout_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payout_ledger_payout_id"))
        batch_op.drop_index(batch_op.f("ix_payout_ledger_event"))
        batch_op.drop_index(batch_op.f("ix_payout_ledger_at"))

    op.drop_table("payout_ledger")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payouts_order_id"))
        batch_op.drop_index("ix_payouts_due")
        batch_op.drop_index(batch_op.f("ix_payouts_customer_id"))

    op.drop_table("payouts")
