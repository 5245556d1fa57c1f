"""Idempotency keys store the use case's result, not an HTTP response.

The service layer owns idempotency now (one use case = one service function),
so it stores what the use case returned; the API renders it, on the first
answer and on every replay alike. The rendered bodies already stored have the
same JSON shape as the new result records, so they stay readable.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_idempotency_keys_success_only"), "idempotency_keys", type_="check")
    op.drop_column("idempotency_keys", "response_status")
    op.alter_column("idempotency_keys", "response_body", new_column_name="result")


def downgrade() -> None:
    op.alter_column("idempotency_keys", "result", new_column_name="response_body")
    op.add_column(
        "idempotency_keys",
        sa.Column("response_status", sa.Integer(), nullable=False, server_default="200"),
    )
    # A stored pay result names its order and was answered 201; an add's was 200.
    op.execute(
        "UPDATE idempotency_keys SET response_status = 201"
        " WHERE position('\"order_id\"' in convert_from(response_body, 'UTF8')) > 0"
    )
    op.alter_column("idempotency_keys", "response_status", server_default=None)
    op.create_check_constraint(
        op.f("ck_idempotency_keys_success_only"),
        "idempotency_keys",
        "response_status BETWEEN 200 AND 299",
    )
