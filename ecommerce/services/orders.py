"""Orders: reading them, and ending them (a buyer's cancel, an admin's refund).

Ending an order gives its stock back in the same transaction, through the
ledger ('release' for an order never paid, 'refund' for a paid one), so the
books balance at every commit. The order row is locked first (FOR UPDATE): a
cancel, a refund, a confirmation and an expiry of one order queue there, and
exactly one of them decides its final state; then its items, ascending, as a
pay locks them. Repeating an end is harmless: an order already cancelled or
refunded is answered unchanged; one that expired or whose payment failed has
nothing left to end (409 conflict).

With a payment provider, money kept always equals orders paid, and the shop
records what it is about to do before it asks the provider to do it (the
intent, the call, the outcome), so a failure at any step leaves something that
a retry or `flask reconcile-payments` finishes:

* a pending order's charge may still succeed at any moment (the provider was
  slower than the shop's wait), so before a cancel or an expiry ends it, its
  charge is voided at the provider, with no transaction open
  (ecommerce/gateway.py). The provider answers that the charge had already
  succeeded: the payment is recorded (the order becomes paid, its reservation
  honoured); a buyer's cancel (or an admin's refund) then refunds it like any
  paid order, and an expiry leaves it paid. It answers that no charge
  succeeded and none ever will: the order ends, its stock goes back. It does
  not answer: a cancel is refused 503 (nothing happened; retry), an expiry is
  left for the next run;
* a paid order is refunded in three steps. First one transaction records the
  refund: the order becomes refunded, its stock goes back, and a refund row
  not yet confirmed is written (if this fails, nothing happened and no money
  moved: 503, retry). Then the provider is asked to refund, with no
  transaction open. Then the provider's confirmation is recorded on the refund
  row alone (no item lock). A provider that does not confirm leaves the refund
  unconfirmed: the answer says so (202, ``"refund": "pending"``), and a repeated
  cancel or `flask reconcile-payments` sends it again until it is confirmed
  (the provider refunds one idempotency key once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from ecommerce import gateway
from ecommerce.domain import orders as order_life
from ecommerce.errors import NotFound, ServiceBusy, ShopError
from ecommerce.gateway import GatewayUnavailable
from ecommerce.models import (
    ORDER_STATUS_PENDING,
)
from ecommerce.repositories import OrderRepository
from ecommerce.services import Shop, settlement
from ecommerce.services.results import OrderView

log = logging.getLogger(__name__)


def get_order(shop: Shop, order_id: int, owner: str | None = None) -> OrderView:
    """One order. With ``owner`` set, another user's order is reported as missing."""

    def work(session: Session) -> OrderView:
        order = OrderRepository(session).get(order_id)
        if order is None or (owner is not None and order.user_id != owner):
            raise NotFound(f"order {order_id} does not exist")
        return OrderView.of(order)

    return shop.transaction(work, "get_order")


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderView]
    next_before: int | None  # pass as ``before`` for the next page; None on the last one


def list_orders(shop: Shop, user_id: str, limit: int, before: int | None) -> OrderPage:
    def work(session: Session) -> list[OrderView]:
        return [OrderView.of(o) for o in OrderRepository(session).for_user(user_id, limit, before)]

    found = shop.transaction(work, "list_orders")
    return OrderPage(found, found[-1].order_id if len(found) == limit else None)


def cancel_order(shop: Shop, order_id: int, owner: str | None = None) -> OrderView:
    """The buyer's cancel: pending -> cancelled, paid -> refunded; stock back.
    With ``owner`` set, another user's order is reported as missing."""
    return _end(shop, order_id, owner, "cancel_order")


def refund_order(shop: Shop, order_id: int) -> OrderView:
    """The admin's refund: the same end as a cancel, for any buyer's order."""
    return _end(shop, order_id, None, "refund_order")


def _end(shop: Shop, order_id: int, owner: str | None, name: str) -> OrderView:
    voided = False
    if shop.gateway is not None:
        current = get_order(shop, order_id, owner)
        if current.status == ORDER_STATUS_PENDING:
            outcome = _void(shop, order_id)
            if outcome is None:
                raise ServiceBusy(
                    "the payment provider did not answer about this order's charge; retry",
                    retry_after_s=shop.policy.retry_after_s,
                )
            if outcome == gateway.SUCCEEDED:
                # The charge went through after all: the order is paid, and the
                # end below refunds it.
                settlement.confirm_payment(shop, order_id, outcome)
            else:
                voided = True

    def work(session: Session) -> tuple[OrderView, bool]:
        """The end recorded; and whether a refund is owed to the provider."""
        orders = OrderRepository(session)
        order = orders.lock(order_id)
        if order is None or (owner is not None and order.user_id != owner):
            raise NotFound(f"order {order_id} does not exist")
        # A refund recorded earlier and never confirmed is sent again.
        unsent = (
            shop.gateway is not None
            and order.status in order_life.ALREADY_ENDED
            and orders.refund_unconfirmed(order_id)
        )
        change = order_life.ending(
            settlement.state_of(order, unsent), provider=shop.gateway is not None, voided=voided
        )
        return settlement.apply(session, shop, order, change), change.send_refund

    ended, refund_owed = shop.transaction(work, name)
    for line in ended.lines:  # stock came back: no longer sold out here
        shop.sold_out.clear(line.item_id)
    if refund_owed and not settlement.send_refund(shop, order_id, ended.total):
        return replace(ended, refund_pending=True)
    return ended


@dataclass(frozen=True)
class Expiry:
    released: int  # pending orders that expired, their stock back
    failed: int  # orders left pending by an error this run (the next run tries again)


def release_expired(shop: Shop, limit: int = 1000) -> Expiry:
    """Pending orders past their expiry become expired and give their stock back.
    Each in a transaction of its own, under its row lock, so a confirmation
    racing with it is decided once. Safe to run again at any time.

    Each order is isolated: one that cannot be expired now (its charge unknown,
    its item row held past the lock timeout, a failover) is counted, logged and
    left for the next run, and the run goes on with the next order."""
    now = shop.clock()
    due = shop.transaction(lambda s: OrderRepository(s).pending_ids(limit, expired_at=now), "due")
    released = failed = 0
    for order_id in due:
        try:
            if _expire(shop, order_id):
                released += 1
        except Exception as error:  # one order never stops the others
            failed += 1
            if isinstance(error, ShopError):
                log.warning("order %s: not expired this run: %s", order_id, error.message)
            else:
                log.exception("order %s: not expired this run", order_id)
    return Expiry(released, failed)


def _expire(shop: Shop, order_id: int) -> bool:
    """One due order expired (its charge voided first); False when there was
    nothing to expire (it was settled meanwhile, or its charge succeeded)."""
    if shop.gateway is not None:
        outcome = _void(shop, order_id)
        if outcome is None:
            raise ServiceBusy("the provider did not answer about its charge")
        if outcome == gateway.SUCCEEDED:
            settlement.confirm_payment(shop, order_id, outcome)  # paid: the reservation honoured
            return False

    def expire(session: Session) -> bool:
        order = OrderRepository(session).lock(order_id)
        if order is None:
            return False
        change = order_life.expiry(
            settlement.state_of(order), shop.clock(), voided=shop.gateway is not None
        )
        settlement.apply(session, shop, order, change)
        return change.changes

    return shop.transaction(expire, "release_expired")


def _void(shop: Shop, order_id: int) -> str | None:
    """The order's charge closed at the provider: its final outcome, None when
    the provider did not answer."""
    assert shop.gateway is not None
    try:
        return shop.gateway.void(order_id)
    except GatewayUnavailable as unknown:
        log.warning("order %s: voiding its charge failed (%s)", order_id, unknown)
        return None
