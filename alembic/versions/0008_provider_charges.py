"""What the shop knows of each order's charge at the provider, and of its refund.

``orders.charge``: 'instant' (paid in the shop, no provider), 'open' (a charge
may exist at the provider and its outcome is not recorded yet), 'settled' (the
provider's final word is recorded). A pending order's charge is open; so is an
order that ended (cancelled, expired) before its charge was settled, until
`flask reconcile-payments` asks the provider. ``refunds.confirmed_at``: when the
provider confirmed the refund (NULL: to be sent again).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "orders",
        sa.Column("charge", sa.Text(), nullable=False, server_default=sa.text("'instant'")),
    )
    # Orders that were pending at some point and whose charge nobody settled:
    # pending ones, and those that ended without a payment (the provider is asked).
    op.execute(
        "UPDATE orders SET charge = 'open' WHERE status IN ('pending', 'cancelled', 'expired')"
    )
    op.execute("UPDATE orders SET charge = 'settled' WHERE status = 'payment_failed'")
    op.create_check_constraint(
        op.f("ck_orders_charge_known"), "orders", "charge IN ('instant', 'open', 'settled')"
    )
    op.create_check_constraint(
        op.f("ck_orders_pending_charge_open"), "orders", "status <> 'pending' OR charge = 'open'"
    )
    op.create_check_constraint(
        op.f("ck_orders_open_charge_unpaid"),
        "orders",
        "charge <> 'open' OR status IN ('pending', 'cancelled', 'expired')",
    )
    op.create_index(
        op.f("ix_orders_open_charge"), "orders", ["id"], postgresql_where=sa.text("charge = 'open'")
    )
    op.add_column("refunds", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    # Refunds of the last day were sent again by every reconcile; older ones were not.
    op.execute(
        "UPDATE refunds SET confirmed_at = created_at WHERE created_at < now() - interval '1 day'"
    )
    op.create_index(
        op.f("ix_refunds_unconfirmed"),
        "refunds",
        ["order_id"],
        postgresql_where=sa.text("confirmed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_refunds_unconfirmed"), table_name="refunds")
    op.drop_column("refunds", "confirmed_at")
    op.drop_index(op.f("ix_orders_open_charge"), table_name="orders")
    op.drop_constraint(op.f("ck_orders_open_charge_unpaid"), "orders", type_="check")
    op.drop_constraint(op.f("ck_orders_pending_charge_open"), "orders", type_="check")
    op.drop_constraint(op.f("ck_orders_charge_known"), "orders", type_="check")
    op.drop_column("orders", "charge")
