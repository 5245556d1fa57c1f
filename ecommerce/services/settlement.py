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
from ecommerce.domain import orders as order_life
from ecommerce.errors import NotFound, ServiceBusy, ShopError
from ecommerce.gateway import GatewayUnavailable
from ecommerce.models import (
    CHARGE_OPEN,
    ORDER_STATUS_PAID,
    ORDER_STATUS_PAYMENT_FAILED,
    ORDER_STATUS_PENDING,
)
from ecommerce.repositories import ItemRepository, OrderRecord, OrderRepository
from ecommerce.services import Shop
from ecommerce.services.results import OrderView

log = logging.getLogger(__name__)


def confirm_payment(shop: Shop, order_id: int, outcome: str) -> OrderView:
    """Record the provider's final outcome for an order's charge (the pay itself,
    the webhook, reconcile-payments, a void before a cancel or an expiry): under
    the order's row lock, what ``domain.orders.confirmation`` decides (its
    table), written; a refund it owes is sent after the commit (and again by
    reconcile-payments until the provider confirms it)."""

    def work(session: Session) -> tuple[OrderView, bool]:
        order = OrderRepository(session).lock(order_id)
        if order is None:
            raise NotFound(f"order {order_id} does not exist")
        change = order_life.confirmation(state_of(order), outcome == gateway.SUCCEEDED)
        return apply(session, shop, order, change), change.send_refund

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


def state_of(order: OrderRecord, refund_unconfirmed: bool = False) -> order_life.Order:
    """What the order's rules (ecommerce/domain/orders.py) need of a locked order."""
    return order_life.Order(
        order.id, order.status, order.charge, order.expires_at, refund_unconfirmed
    )


def apply(
    session: Session, shop: Shop, order: OrderRecord, change: order_life.Transition
) -> OrderView:
    """Write ``change`` (a transition of the order's rules) inside the caller's
    transaction, with the order row locked: the payment, the refund, the stock
    back through the ledger (its items locked ascending, as a pay locks them),
    the new status and charge. The order as it is then."""
    if not change.changes:
        return OrderView.of(order)
    orders = OrderRepository(session)
    if change.record_payment:
        orders.add_payment(order.id, order.total)
    if change.record_refund:
        orders.add_refund(order.id, order.total, shop.clock(), confirmed=change.refund_confirmed)
    if change.stock_back is not None:
        quantities = {line.item_id: line.quantity for line in order.lines}
        items = ItemRepository(session)
        items.lock(quantities)
        items.give_back(order.id, quantities, change.stock_back)
    orders.set_status(order.id, change.status, change.charge)
    changed = orders.get(order.id)
    assert changed is not None
    return OrderView.of(changed)
