"""The order lifecycle: statuses beyond paid, refunds, stock returned through the ledger.

* orders.status: pending (stock reserved, payment outstanding), paid,
  payment_failed, expired, cancelled, refunded; orders.expires_at for pending.
* refunds: one per refunded order, of its total.
* stock_movements: stock that comes back from an order ('release' for an order
  that was never paid, 'refund' for a paid one) names that order.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUSES = ("pending", "paid", "payment_failed", "expired", "cancelled", "refunded")
REASONS = ("initial", "restock", "release", "refund")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.drop_constraint(op.f("ck_orders_status_known"), "orders", type_="check")
    op.create_check_constraint(
        op.f("ck_orders_status_known"), "orders", f"status IN ({_in(STATUSES)})"
    )
    op.add_column("orders", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_orders_pending_expires"),
        "orders",
        "status <> 'pending' OR expires_at IS NOT NULL",
    )
    op.create_index(
        op.f("ix_orders_pending_expires_at"),
        "orders",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "refunds",
        sa.Column(
            "order_id",
            sa.Integer(),
            sa.ForeignKey("orders.id", name=op.f("fk_refunds_order_id_orders")),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_refunds_amount_not_negative")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_refunds")),
    )
    op.drop_constraint(op.f("ck_stock_movements_reason_known"), "stock_movements", type_="check")
    op.create_check_constraint(
        op.f("ck_stock_movements_reason_known"), "stock_movements", f"reason IN ({_in(REASONS)})"
    )
    op.add_column(
        "stock_movements",
        sa.Column(
            "order_id",
            sa.Integer(),
            sa.ForeignKey("orders.id", name=op.f("fk_stock_movements_order_id_orders")),
            nullable=True,
        ),
    )
    op.create_check_constraint(
        op.f("ck_stock_movements_returns_name_their_order"),
        "stock_movements",
        "(reason IN ('release', 'refund')) = (order_id IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_stock_movements_returns_name_their_order"), "stock_movements", type_="check"
    )
    op.drop_column("stock_movements", "order_id")
    op.drop_constraint(op.f("ck_stock_movements_reason_known"), "stock_movements", type_="check")
    op.create_check_constraint(
        op.f("ck_stock_movements_reason_known"),
        "stock_movements",
        "reason IN ('initial', 'restock')",
    )
    op.drop_table("refunds")
    op.drop_index(op.f("ix_orders_pending_expires_at"), "orders")
    op.drop_constraint(op.f("ck_orders_pending_expires"), "orders", type_="check")
    op.drop_column("orders", "expires_at")
    op.drop_constraint(op.f("ck_orders_status_known"), "orders", type_="check")
    op.create_check_constraint(op.f("ck_orders_status_known"), "orders", "status IN ('paid')")
