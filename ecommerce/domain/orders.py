"""An order's life, as pure rules: its state and an event in, what becomes of it
out (a :class:`Transition`); the services load the order under its row lock,
ask here, and write what the transition says.

The states: ``pending`` (stock reserved, the payment outstanding) → ``paid`` |
``payment_failed`` | ``expired`` | ``cancelled``; ``paid`` → ``refunded``. An
order's ``charge`` says what the shop knows of its charge at the payment
provider: ``instant`` (no provider), ``open`` (a charge may exist, its outcome
not recorded) or ``settled`` (the provider's final word is recorded).

The events:

* :func:`confirmation`: the provider's final outcome for the charge (the pay
  itself, the webhook, reconcile-payments, a void before a cancel or an
  expiry);
* :func:`ending`: a buyer's cancel or an admin's refund;
* :func:`expiry`: `flask release-expired` finding the reservation lapsed.

The rule they keep together: **money kept = orders paid**. A payment is
recorded exactly when the provider kept the money for an order that is then
paid; a success reported for an order that ended unpaid is recorded and
refunded; a paid order that ends is refunded. ``tests/unit/test_order_life.py``
checks it on every sequence of events against a plain model of the provider's
books.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ecommerce.errors import Conflict

PENDING = "pending"
PAID = "paid"
PAYMENT_FAILED = "payment_failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
REFUNDED = "refunded"
STATUSES = (PENDING, PAID, PAYMENT_FAILED, EXPIRED, CANCELLED, REFUNDED)

CHARGE_INSTANT = "instant"
CHARGE_OPEN = "open"
CHARGE_SETTLED = "settled"
CHARGE_STATES = (CHARGE_INSTANT, CHARGE_OPEN, CHARGE_SETTLED)

#: Orders that ended without being paid: a success reported for one is refunded.
ENDED_UNPAID = (CANCELLED, EXPIRED, PAYMENT_FAILED)
#: Orders a cancel or a refund has already ended: answered as they are.
ALREADY_ENDED = (CANCELLED, REFUNDED)


@dataclass(frozen=True)
class Order:
    """What the rules need of an order (read under its row lock)."""

    id: int
    status: str
    charge: str
    expires_at: dt.datetime | None = None
    refund_unconfirmed: bool = False  # a refund recorded, the provider's word not yet


@dataclass(frozen=True)
class Transition:
    """What becomes of an order: nothing (:attr:`changes` false), or its new
    status and charge, and the effects to write with them, in one transaction."""

    status: str
    charge: str
    record_payment: bool = False  # the provider kept the money for this order
    stock_back: str | None = None  # the ledger's reason ("release", "refund"); None: none
    record_refund: bool = False  # a refund row, the money going back
    refund_confirmed: bool = False  # ... already back (no provider to ask)
    send_refund: bool = False  # ask the provider to refund, after the commit
    changes: bool = True

    @classmethod
    def unchanged(cls, order: Order, *, send_refund: bool = False) -> Transition:
        return cls(order.status, order.charge, send_refund=send_refund, changes=False)


def confirmation(order: Order, succeeded: bool) -> Transition:
    """The provider's final word on the order's charge.

    ========================== =========== ================================
    the order                   the charge  becomes
    ========================== =========== ================================
    pending                     succeeded   paid, its payment recorded
    pending                     failed      payment_failed, its stock back
    cancelled, expired,         succeeded   refunded: the payment recorded,
    payment_failed                          and refunded (sent after commit)
    anything, charge open       (any other) as it is, its charge settled
    anything else               (any)       as it is (recorded before)
    ========================== =========== ================================
    """
    if order.status == PENDING:
        if succeeded:
            return Transition(PAID, CHARGE_SETTLED, record_payment=True)
        return Transition(PAYMENT_FAILED, CHARGE_SETTLED, stock_back="release")
    if succeeded and order.status in ENDED_UNPAID:
        # A late charge, or a provider that went back on its word: the stock
        # already went back; the money does too.
        return Transition(
            REFUNDED,
            CHARGE_SETTLED,
            record_payment=True,
            record_refund=True,
            send_refund=True,
        )
    if order.charge == CHARGE_OPEN:  # ended, and no money was taken
        return Transition(order.status, CHARGE_SETTLED)
    return Transition.unchanged(order)


def ending(order: Order, *, provider: bool, voided: bool) -> Transition:
    """A buyer's cancel or an admin's refund, with ``provider``: a payment
    provider is configured; ``voided``: the pending order's charge was closed at
    it before (no charge succeeded, none ever will).

    A pending order is cancelled and its stock released; a paid one refunded,
    its stock back and its money returned (at once without a provider; with
    one, recorded now and sent after the commit). An order a cancel or a refund
    ended is answered as it is, its unconfirmed refund sent again; an expired
    or failed one has nothing left to end (409)."""
    if order.status in ALREADY_ENDED:
        return Transition.unchanged(order, send_refund=provider and order.refund_unconfirmed)
    if order.status == PENDING:
        charge = CHARGE_SETTLED if voided else order.charge
        return Transition(CANCELLED, charge, stock_back="release")
    if order.status == PAID:
        return Transition(
            REFUNDED,
            order.charge,
            stock_back="refund",
            record_refund=True,
            refund_confirmed=not provider,
            send_refund=provider,
        )
    raise Conflict(f"order {order.id} is {order.status}: there is nothing to end")


def expiry(order: Order, now: dt.datetime, *, voided: bool) -> Transition:
    """`flask release-expired` at ``now``: a pending order whose reservation
    lapsed expires, its stock back (its charge settled when ``voided`` at the
    provider first); any other is left as it is."""
    if order.status != PENDING or not lapsed(order, now):
        return Transition.unchanged(order)
    charge = CHARGE_SETTLED if voided else order.charge
    return Transition(EXPIRED, charge, stock_back="release")


def lapsed(order: Order, now: dt.datetime) -> bool:
    """Whether the order's reservation has run out at ``now``."""
    return order.expires_at is not None and order.expires_at <= now
