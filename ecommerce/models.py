"""Tables, as SQLAlchemy 2.x typed models.

`items` and `carts` keep the design note's names and column types (the
compatibility contract); every invariant the code relies on is also a CHECK
constraint, so even a buggy writer cannot store negative stock.
The schema itself is created only by the Alembic migrations in alembic/versions.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ecommerce.database.engine import Base

ORDER_STATUS_PENDING = "pending"  # stock reserved, the payment outstanding
ORDER_STATUS_PAID = "paid"
ORDER_STATUS_PAYMENT_FAILED = "payment_failed"
ORDER_STATUS_EXPIRED = "expired"
ORDER_STATUS_CANCELLED = "cancelled"
ORDER_STATUS_REFUNDED = "refunded"
ORDER_STATUSES = (
    ORDER_STATUS_PENDING,
    ORDER_STATUS_PAID,
    ORDER_STATUS_PAYMENT_FAILED,
    ORDER_STATUS_EXPIRED,
    ORDER_STATUS_CANCELLED,
    ORDER_STATUS_REFUNDED,
)
#: Orders whose lines hold stock (and count against per-buyer limits); the
#: others gave their stock back through the ledger.
STATUSES_HOLDING_STOCK = (ORDER_STATUS_PENDING, ORDER_STATUS_PAID)

# What the shop knows of an order's charge at the payment provider.
CHARGE_INSTANT = "instant"  # paid in the shop's own transaction: no provider
CHARGE_OPEN = "open"  # a charge may exist at the provider; its outcome is not recorded
CHARGE_SETTLED = "settled"  # the provider's final word is recorded
CHARGE_STATES = (CHARGE_INSTANT, CHARGE_OPEN, CHARGE_SETTLED)
# Why stock moved into items.stock: it arrived ('initial', 'restock'), or an order
# gave it back ('release': never paid; 'refund': paid, then refunded). Sales are
# not movements, they are the order lines.
ARRIVALS = ("initial", "restock")
RETURNS = ("release", "refund")
MOVEMENT_REASONS = ARRIVALS + RETURNS


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint(
            "per_user_limit IS NULL OR per_user_limit > 0", name="per_user_limit_positive"
        ),
        CheckConstraint(
            "sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_ends_at > sale_starts_at",
            name="sale_window_ordered",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    stock: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    # The most units one buyer may hold across their orders (NULL: no limit).
    per_user_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the item may be paid for (NULL: open on that side).
    sale_starts_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    sale_ends_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CartLine(Base):
    __tablename__ = "carts"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)

    item: Mapped[Item] = relationship(lazy="raise")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total >= 0", name="total_not_negative"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in ORDER_STATUSES) + ")", name="status_known"
        ),
        CheckConstraint("status <> 'pending' OR expires_at IS NOT NULL", name="pending_expires"),
        CheckConstraint(
            "charge IN (" + ", ".join(f"'{c}'" for c in CHARGE_STATES) + ")", name="charge_known"
        ),
        # Money kept = orders paid: a charge still open belongs to an order that
        # is not paid (pending, or ended before its charge was settled).
        CheckConstraint("status <> 'pending' OR charge = 'open'", name="pending_charge_open"),
        CheckConstraint(
            "charge <> 'open' OR status IN ('pending', 'cancelled', 'expired')",
            name="open_charge_unpaid",
        ),
        Index("ix_orders_open_charge", "id", postgresql_where=text("charge = 'open'")),
        # flask release-expired finds the lapsed reservations without a scan.
        Index(
            "ix_orders_pending_expires_at",
            "expires_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_orders_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    charge: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'instant'"))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # While pending: when the reservation lapses (flask release-expired).
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    lines: Mapped[list[OrderLine]] = relationship(
        lazy="raise", order_by="OrderLine.item_id", back_populates="order"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
        Index("ix_order_lines_item_id", "item_id"),
    )

    order_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("orders.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)

    order: Mapped[Order] = relationship(lazy="raise", back_populates="lines")
    item: Mapped[Item] = relationship(lazy="raise")


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    # One payment per order: a second charge for the same order cannot be stored.
    order_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("orders.id"), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        Index("ix_refunds_unconfirmed", "order_id", postgresql_where=text("confirmed_at IS NULL")),
    )
    # One refund per order, of its total.
    order_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("orders.id"), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # When the provider confirmed it (NULL: `flask reconcile-payments` sends it again).
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class StockMovement(Base):
    """The stock ledger: every unit that enters stock, other than by a sale's
    rollback, is recorded here: arrivals, and stock an order gave back. For every
    item, arrivals - units in orders that hold stock (pending, paid) = items.stock
    is the conservation invariant `flask check-invariants` verifies; each order
    that gave its stock back has one return movement per line.
    """

    __tablename__ = "stock_movements"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "reason IN (" + ", ".join(f"'{r}'" for r in MOVEMENT_REASONS) + ")",
            name="reason_known",
        ),
        CheckConstraint(
            "(reason IN ('release', 'refund')) = (order_id IS NOT NULL)",
            name="returns_name_their_order",
        ),
        Index("ix_stock_movements_item_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    # The order that gave the stock back (returns only).
    order_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("orders.id"))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class IdempotencyKey(Base):
    """A request that must take effect at most once, and the result it had.

    Written in the same transaction as the effect, so either both exist or
    neither. Only successful results are stored: a refused request changed
    nothing, so repeating it simply runs it again.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text, nullable=False)
    # The use case's result, encoded by ecommerce/services/results.py.
    result: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ConsoleLink(Base):
    """A one-time sign-in link of the console: redeemed once, before it expires."""

    __tablename__ = "console_links"

    nonce: Mapped[str] = mapped_column(Text, primary_key=True)
    admin: Mapped[str] = mapped_column(Text, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


ROOM_MODES = ("fifo", "random")
PLACE_OUTCOMES = ("paid",)


class Room(Base):
    """A hot item's waiting room: its options (set by an admin) and the front of
    its line, as the last refresh left it (ecommerce/services/rooms/). Places
    with seq <= serving_seq are admitted (but one that committed after the
    refresh passed it, admitted at the next). Only a refresh that took the row without
    waiting (SKIP LOCKED) moves the counters, so two instances never advance it
    twice."""

    __tablename__ = "rooms"
    __table_args__ = (
        CheckConstraint(
            "mode IN (" + ", ".join(f"'{m}'" for m in ROOM_MODES) + ")", name="mode_known"
        ),
        CheckConstraint("rate_per_s IS NULL OR rate_per_s > 0", name="rate_positive"),
        CheckConstraint("max_admitted >= 1", name="max_admitted_positive"),
        CheckConstraint("admission_ttl_s >= 1", name="admission_ttl_positive"),
        CheckConstraint(
            "serving >= 0 AND serving_seq >= 0 AND in_flight >= 0 AND line_length >= 0",
            name="counters_not_negative",
        ),
        CheckConstraint("(draw_seed IS NULL) = (drawn_at IS NULL)", name="draw_has_seed"),
        CheckConstraint(
            "draw_seed IS NULL OR (mode = 'random' AND length(draw_seed) = 32)",
            name="draw_seed_random",
        ),
    )

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    is_open: Mapped[bool] = mapped_column(Boolean, nullable=False)
    mode: Mapped[str] = mapped_column(Text, nullable=False)
    # A fixed admission rate (places per second); NULL: as fast as buyers finish.
    rate_per_s: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    max_admitted: Mapped[int] = mapped_column(Integer, nullable=False)
    admission_ttl_s: Mapped[int] = mapped_column(Integer, nullable=False)
    # Places admitted so far, and the highest arrival number admitted.
    serving: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    serving_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    in_flight: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    line_length: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # How many places, counted from the first in line (the admitted included),
    # the stock reaches (NULL: not measured yet); and the arrival number of the
    # first waiting place it cannot reach (NULL: it reaches every waiting place).
    sold_out_after: Mapped[int | None] = mapped_column(BigInteger)
    sold_out_seq: Mapped[int | None] = mapped_column(BigInteger)
    # Admissions per second over the last minute (NULL: not measured yet).
    admission_rate: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    advanced_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    refreshed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # A random room's draw: its cryptographic seed and when it was made.
    draw_seed: Mapped[bytes | None] = mapped_column(LargeBinary)
    drawn_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class QueuePlace(Base):
    """A buyer's place in an item's line: one per buyer per item."""

    __tablename__ = "queue_places"
    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint(
            "(admitted_at IS NULL) = (admission_expires_at IS NULL)", name="admission_expires"
        ),
        CheckConstraint("admission_expires_at > admitted_at", name="admission_ordered"),
        CheckConstraint("(done_at IS NULL) = (outcome IS NULL)", name="done_has_outcome"),
        CheckConstraint(
            "outcome IS NULL OR outcome IN (" + ", ".join(f"'{o}'" for o in PLACE_OUTCOMES) + ")",
            name="outcome_known",
        ),
        CheckConstraint("done_at IS NULL OR admitted_at IS NOT NULL", name="done_after_admission"),
        UniqueConstraint("item_id", "seq", deferrable=True, initially="IMMEDIATE"),
        Index(
            "ix_queue_places_waiting",
            "item_id",
            "seq",
            postgresql_where=text("admitted_at IS NULL"),
        ),
        Index(
            "ix_queue_places_in_flight",
            "item_id",
            "admission_expires_at",
            postgresql_where=text("admitted_at IS NOT NULL AND done_at IS NULL"),
        ),
        Index(
            "ix_queue_places_admitted_at",
            "item_id",
            "admitted_at",
            postgresql_where=text("admitted_at IS NOT NULL"),
        ),
    )

    item_id: Mapped[int] = mapped_column(ForeignKey("rooms.item_id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # The arrival number, from the one sequence queue_arrivals (migration 0009):
    # global across rooms, increasing, not dense per room.
    seq: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("nextval('queue_arrivals'::regclass)")
    )
    joined_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    admitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    admission_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)


def table_names() -> list[str]:
    """Every table of the schema, parents first (for TRUNCATE in tests and the simulator)."""
    return [table.name for table in Base.metadata.sorted_tables]
