"""Sale windows and per-buyer limits on items.

`per_user_limit`: the most units of the item one buyer may hold across their
orders that hold stock (NULL: no limit). `sale_starts_at` / `sale_ends_at`: when
the item may be paid for (NULL: open on that side). The note's columns are
unchanged; the new ones are NULL for every existing item, i.e. no new rule.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("per_user_limit", sa.Integer(), nullable=True))
    op.add_column("items", sa.Column("sale_starts_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("items", sa.Column("sale_ends_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_items_per_user_limit_positive"),
        "items",
        "per_user_limit IS NULL OR per_user_limit > 0",
    )
    op.create_check_constraint(
        op.f("ck_items_sale_window_ordered"),
        "items",
        "sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_ends_at > sale_starts_at",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_items_sale_window_ordered"), "items", type_="check")
    op.drop_constraint(op.f("ck_items_per_user_limit_positive"), "items", type_="check")
    op.drop_column("items", "sale_ends_at")
    op.drop_column("items", "sale_starts_at")
    op.drop_column("items", "per_user_limit")
