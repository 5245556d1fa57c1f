"""A hot item's waiting room: ``rooms`` (one per item, its options and the
front of its line: the serving counter and what the last refresh measured) and
``queue_places`` (one place per buyer per item, its arrival number, its admission and
whether it is done). Every place's arrival number ``seq`` comes from one
sequence, ``queue_arrivals``, made here and owned by the column: global across
rooms, increasing, handed out without a lock. No schema object is made at run
time (services/rooms/).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("rate_per_s", sa.Numeric(10, 3), nullable=True),
        sa.Column("max_admitted", sa.Integer(), nullable=False),
        sa.Column("admission_ttl_s", sa.Integer(), nullable=False),
        sa.Column("serving", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("serving_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("in_flight", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("line_length", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("sold_out_after", sa.BigInteger(), nullable=True),
        sa.Column("sold_out_seq", sa.BigInteger(), nullable=True),
        sa.Column("admission_rate", sa.Numeric(12, 3), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("advanced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("draw_seed", sa.LargeBinary(), nullable=True),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("mode IN ('fifo', 'random')", name=op.f("ck_rooms_mode_known")),
        sa.CheckConstraint(
            "rate_per_s IS NULL OR rate_per_s > 0", name=op.f("ck_rooms_rate_positive")
        ),
        sa.CheckConstraint("max_admitted >= 1", name=op.f("ck_rooms_max_admitted_positive")),
        sa.CheckConstraint("admission_ttl_s >= 1", name=op.f("ck_rooms_admission_ttl_positive")),
        sa.CheckConstraint(
            "serving >= 0 AND serving_seq >= 0 AND in_flight >= 0 AND line_length >= 0",
            name=op.f("ck_rooms_counters_not_negative"),
        ),
        sa.CheckConstraint(
            "(draw_seed IS NULL) = (drawn_at IS NULL)", name=op.f("ck_rooms_draw_has_seed")
        ),
        sa.CheckConstraint(
            "draw_seed IS NULL OR (mode = 'random' AND length(draw_seed) = 32)",
            name=op.f("ck_rooms_draw_seed_random"),
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_rooms_item_id_items")),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_rooms")),
    )
    op.execute("CREATE SEQUENCE queue_arrivals AS bigint MINVALUE 1")
    op.create_table(
        "queue_places",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column(
            "seq",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("nextval('queue_arrivals'::regclass)"),
        ),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("admission_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_queue_places_seq_positive")),
        sa.CheckConstraint(
            "(admitted_at IS NULL) = (admission_expires_at IS NULL)",
            name=op.f("ck_queue_places_admission_expires"),
        ),
        sa.CheckConstraint(
            "admission_expires_at > admitted_at", name=op.f("ck_queue_places_admission_ordered")
        ),
        sa.CheckConstraint(
            "(done_at IS NULL) = (outcome IS NULL)", name=op.f("ck_queue_places_done_has_outcome")
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('paid')", name=op.f("ck_queue_places_outcome_known")
        ),
        sa.CheckConstraint(
            "done_at IS NULL OR admitted_at IS NOT NULL",
            name=op.f("ck_queue_places_done_after_admission"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["rooms.item_id"], name=op.f("fk_queue_places_item_id_rooms")
        ),
        sa.PrimaryKeyConstraint("item_id", "user_id", name=op.f("pk_queue_places")),
        # One arrival number per place; deferrable so the draw can deal the
        # numbers out again in one statement (checked at its commit).
        sa.UniqueConstraint(
            "item_id",
            "seq",
            name=op.f("uq_queue_places_item_id"),
            deferrable=True,
            initially="IMMEDIATE",
        ),
    )
    # Dropped with its column (and so with the table, at the downgrade).
    op.execute("ALTER SEQUENCE queue_arrivals OWNED BY queue_places.seq")
    op.create_index(
        op.f("ix_queue_places_waiting"),
        "queue_places",
        ["item_id", "seq"],
        postgresql_where=sa.text("admitted_at IS NULL"),
    )
    op.create_index(
        op.f("ix_queue_places_in_flight"),
        "queue_places",
        ["item_id", "admission_expires_at"],
        postgresql_where=sa.text("admitted_at IS NOT NULL AND done_at IS NULL"),
    )
    op.create_index(
        op.f("ix_queue_places_admitted_at"),
        "queue_places",
        ["item_id", "admitted_at"],
        postgresql_where=sa.text("admitted_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("queue_places")  # and queue_arrivals, which the column owns
    op.drop_table("rooms")
