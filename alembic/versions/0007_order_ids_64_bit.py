"""Order ids are 64-bit: a long storm draws ids by the thousand per second.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: Every column that holds an order id.
_REFERENCES = (
    ("order_lines", "order_id"),
    ("payments", "order_id"),
    ("refunds", "order_id"),
    ("stock_movements", "order_id"),
)


def upgrade() -> None:
    op.alter_column("orders", "id", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.execute("ALTER SEQUENCE orders_id_seq AS bigint")
    for table, column in _REFERENCES:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    for table, column in _REFERENCES:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
    op.execute("ALTER SEQUENCE orders_id_seq AS integer")
    op.alter_column("orders", "id", type_=sa.Integer(), existing_type=sa.BigInteger())
