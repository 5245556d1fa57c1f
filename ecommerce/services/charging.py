"""A pay with a payment provider, after its reservation: the pending order
charged with no lock held and no transaction open, then confirmed or released
(ecommerce/gateway.py has the protocol; services/pay_batch.py the reservation,
services/settlement.py the recording of an outcome).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace

from ecommerce.errors import Conflict, PaymentDeclined, ServiceBusy
from ecommerce.gateway import GatewayUnavailable
from ecommerce.models import ORDER_STATUS_PAID, ORDER_STATUS_PAYMENT_FAILED, ORDER_STATUS_PENDING
from ecommerce.services import Shop, idempotency, orders, settlement
from ecommerce.services.results import OrderView

log = logging.getLogger(__name__)


def charge_and_confirm(shop: Shop, order: OrderView, key: str | None, started: float) -> OrderView:
    """The reserved (pending) order charged at the provider, with no transaction
    open, then confirmed or released. No answer in time: the order stays pending
    (202); the webhook, `flask reconcile-payments` or `flask release-expired`
    settles it.

    An answer says what is true: once the provider may have taken the money,
    nothing is answered as if nothing happened. A confirmation that fails after
    the charge (a lock timeout, a failover) answers 202 pending with the order's
    id: the money may have moved, the order exists, and it is settled like any
    charge whose answer was lost.

    A keyed pay holds its key until its charge's outcome is known, across
    processes: a replay of the key finds the pending order, and while the first
    request may still be charging (:meth:`Shop.charge_lease_s` after the order
    was written) it is refused 409 idempotency_key_in_use, never charged a
    second time; the first request never starts its charge after that lease
    (it answers 202 pending instead, and a replay after the lease charges)."""
    assert shop.gateway is not None
    if order.replayed:
        current = orders.get_order(shop, order.order_id)
        if current.status == ORDER_STATUS_PENDING and shop.clock() < current.created_at + (
            dt.timedelta(seconds=shop.charge_lease_s)
        ):
            raise idempotency.in_use()
        order = replace(current, replayed=True)
    if order.status != ORDER_STATUS_PENDING:
        return _answer(order)
    if key is not None and time.monotonic() - started > shop.charge_budget_s:
        log.warning("order %s: reserved too late to charge within its key's lease", order.order_id)
        return order
    try:
        outcome = shop.gateway.charge(order.order_id, order.total)
    except GatewayUnavailable as unknown:
        log.warning("order %s: %s; it stays pending", order.order_id, unknown)
        return order
    try:
        confirmed = settlement.confirm_payment(shop, order.order_id, outcome)
    except ServiceBusy as unrecorded:
        log.warning(
            "order %s: the provider answered %s, recording it failed (%s); it stays pending",
            order.order_id,
            outcome,
            unrecorded.message,
        )
        return order
    return _answer(replace(confirmed, replayed=order.replayed))


def _answer(order: OrderView) -> OrderView:
    if order.status == ORDER_STATUS_PAYMENT_FAILED:
        raise PaymentDeclined(
            f"the payment for order {order.order_id} was declined; its stock went back on sale",
            details={"order_id": order.order_id},
        )
    if order.status in (ORDER_STATUS_PAID, ORDER_STATUS_PENDING):
        return order
    raise Conflict(
        f"order {order.order_id} is {order.status}: the reservation ended before the payment "
        "was confirmed (a charge that arrives late is refunded)",
        details={"order_id": order.order_id, "status": order.status},
    )
