"""One-time sign-in links of the operator's console.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("admin", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_console_links")),
    )


def downgrade() -> None:
    op.drop_table("console_links")
