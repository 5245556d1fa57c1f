"""Settling orders with the payment provider: recording its outcome for an
order's charge (the pay, the webhook, reconcile-payments, the void before a
cancel or an expiry), refunding a charge that succeeded for an order that had
already ended, resending refunds the provider has not confirmed, and comparing
the provider's view of the money with the orders.

The rule everything here keeps: **money kept = orders paid**. An order's
``charge`` column says what the shop knows of its charge at the provider
('instant': no provider; 'open': a charge may exist, its outcome is not
recorded; 'settled'). An order never ends with its charge unknown unless the
charge stays 'open', and `flask reconcile-payments` asks about every open charge
until it is settled: a success found for an order that ended is refunded.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce import gateway
from ecommerce.errors import NotFound, ServiceBusy, ShopError
from ecommerce.gateway import GatewayUnavailable
from ecommerce.models import (
    CHARGE_OPEN,
    CHARGE_SETTLED,
    ORDER_STATUS_CANCELLED,
    ORDER_STATUS_EXPIRED,
    ORDER_STATUS_PAID,
    ORDER_STATUS_PAYMENT_FAILED,
    ORDER_STATUS_PENDING,
    ORDER_STATUS_REFUNDED,
)
from ecommerce.repositories import ItemRepository, OrderRecord, OrderRepository
from ecommerce.services import Shop
from ecommerce.services.results import OrderView

log = logging.getLogger(__name__)

#: Orders that ended without being paid: a success reported for one is refunded.
_ENDED_UNPAID = (ORDER_STATUS_CANCELLED, ORDER_STATUS_EXPIRED, ORDER_STATUS_PAYMENT_FAILED)


def confirm_payment(shop: Shop, order_id: int, outcome: str) -> OrderView:
    """Record the provider's final outcome for an order's charge (the pay itself,
    the webhook, reconcile-payments, a void before a cancel or an expiry). Under
    the order's row lock:

    * a pending order becomes paid (with its payment) or payment_failed (its
      stock back through the ledger);
    * an order that ended unpaid (cancelled, expired, payment_failed) and whose
      charge succeeded after all is recorded as paid and refunded, and the
      refund is sent at once (and again by reconcile-payments until the provider
      confirms it): money kept always equals orders paid;
    * anything else is left as it is (the outcome was recorded before)."""

    def work(session: Session) -> tuple[OrderView, bool]:
        repository = OrderRepository(session)
        order = repository.lock(order_id)
        if order is None:
            raise NotFound(f"order {order_id} does not exist")
        succeeded = outcome == gateway.SUCCEEDED
        if order.status == ORDER_STATUS_PENDING:
            if succeeded:
                repository.add_payment(order_id, order.total)
                repository.set_status(order_id, ORDER_STATUS_PAID, CHARGE_SETTLED)
                paid = repository.get(order_id)
                assert paid is not None
                return OrderView.of(paid), False
            failed = give_back(
                session, order, ORDER_STATUS_PAYMENT_FAILED, "release", CHARGE_SETTLED
            )
            return failed, False
        if not succeeded or order.status not in _ENDED_UNPAID:
            if order.charge == CHARGE_OPEN:  # ended, and no money was taken
                repository.set_status(order_id, order.status, CHARGE_SETTLED)
            return OrderView.of(order), False
        # A success for an order that ended unpaid (a late charge, or a provider
        # that went back on its word): its stock already went back; the money does.
        repository.add_payment(order_id, order.total)
        repository.add_refund(order_id, order.total, shop.clock(), confirmed=False)
        repository.set_status(order_id, ORDER_STATUS_REFUNDED, CHARGE_SETTLED)
        refunded = repository.get(order_id)
        assert refunded is not None
        return OrderView.of(refunded), True

    view, refund_now = shop.transaction(work, "confirm_payment")
    if refund_now:
        send_refund(shop, order_id, view.total)
    if view.status == ORDER_STATUS_PAYMENT_FAILED:
        for line in view.lines:
            shop.sold_out.clear(line.item_id)
    return view


def send_refund(shop: Shop, order_id: int, total: Decimal) -> bool:
    """Send a refund the shop recorded, and record the provider's confirmation;
    False when it did not confirm (`flask reconcile-payments` sends it again;
    the provider refunds one idempotency key once)."""
    if shop.gateway is None:
        return False
    try:
        shop.gateway.refund(order_id, total)
    except GatewayUnavailable:
        log.error("order %s: the refund was not confirmed; reconcile-payments resends it", order_id)
        return False
    try:
        # The refund row alone: no item lock, so a hot item cannot hold it up.
        shop.transaction(
            lambda s: OrderRepository(s).confirm_refund(order_id, shop.clock()), "confirm_refund"
        )
    except ServiceBusy:
        log.error(
            "order %s: refunded, but its confirmation was not recorded; reconcile-payments"
            " asks again",
            order_id,
        )
        return False
    return True


def reconcile_payments(shop: Shop, limit: int = 1000) -> dict[str, int]:
    """Settle every order whose charge is still open, and resend the refunds the
    provider has not confirmed.

    An open charge is asked about: an outcome the provider knows is recorded
    (confirm_payment); a charge it never saw is left alone while its order is
    pending (the expiry voids it), and voided for an order that already ended,
    so that no charge can arrive for it any more."""
    assert shop.gateway is not None
    open_charges = shop.transaction(
        lambda s: OrderRepository(s).open_charges(limit), "open_charges"
    )
    counts = {
        "paid": 0,
        "payment_failed": 0,
        "refunded": 0,
        "settled": 0,
        "not_at_provider": 0,
        "unknown": 0,
        "refunds_resent": 0,
    }
    for order_id, status in open_charges:
        try:
            state = shop.gateway.lookup(order_id)
            if state is None and status == ORDER_STATUS_PENDING:
                counts["not_at_provider"] += 1  # never reached the provider: expiry voids it
                continue
            outcome = state.status if state is not None else shop.gateway.void(order_id)
            settled = confirm_payment(shop, order_id, outcome).status
        except (GatewayUnavailable, ShopError) as unknown:
            # The provider did not answer, or recording its answer failed: this
            # order is left for the next run; the others go on.
            counts["unknown"] += 1
            log.warning("order %s: its charge was not settled this run: %s", order_id, unknown)
            continue
        counts[settled if settled in counts and settled != status else "settled"] += 1
    for order_id, total in shop.transaction(
        lambda s: OrderRepository(s).unconfirmed_refunds(limit), "unconfirmed_refunds"
    ):
        if send_refund(shop, order_id, total):
            counts["refunds_resent"] += 1
        else:
            counts["unknown"] += 1
    return counts


def provider_disagreements(shop: Shop, limit: int = 10_000) -> list[str]:
    """Where the provider's view of the money disagrees with the orders: for the
    newest ``limit`` orders that went through it (pending ones are in flux and
    skipped), the provider keeps money exactly for the orders that are paid."""
    assert shop.gateway is not None
    found: list[str] = []
    orders_seen = shop.transaction(
        lambda s: OrderRepository(s).provider_orders(limit), "provider_orders"
    )
    for order_id, status, charge in orders_seen:
        if status == ORDER_STATUS_PENDING:
            continue
        try:
            state = shop.gateway.lookup(order_id)
        except GatewayUnavailable as unknown:
            found.append(f"order {order_id}: the provider did not answer ({unknown})")
            continue
        kept = state is not None and state.kept
        if kept != (status == ORDER_STATUS_PAID):
            held = "keeps" if kept else "does not keep"
            advice = " (reconcile-payments settles it)" if charge == CHARGE_OPEN else ""
            found.append(f"order {order_id} is {status} but the provider {held} its money{advice}")
    return found


def give_back(
    session: Session,
    order: OrderRecord,
    new_status: str,
    reason: str,
    charge: str | None = None,
) -> OrderView:
    """Inside the caller's transaction, with the order row locked: return its
    units to stock through the ledger (``reason``) and set ``new_status`` (and
    ``charge``, what is now known of its charge, when given)."""
    quantities = {line.item_id: line.quantity for line in order.lines}
    items = ItemRepository(session)
    items.lock(quantities)  # ascending id, as a pay locks them
    items.give_back(order.id, quantities, reason)
    orders = OrderRepository(session)
    orders.set_status(order.id, new_status, charge)
    ended = orders.get(order.id)
    assert ended is not None
    return OrderView.of(ended)
