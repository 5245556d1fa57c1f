"""Paying for a cart: the use case.

:func:`pay` hands the request to the pay's one engine, a batch of buyers in one
transaction (services/pay_batch.py, where the transaction is read step by
step). With PAY_COMBINING on (the default) the pays that arrive together form
the batch (services/combining.py); off, each pay is a batch of one in its
request's thread. With a payment provider the order is written pending and
charged once the transaction has committed (services/charging.py). Every
answer is counted (observability/metrics.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from decimal import Decimal

from ecommerce.errors import InsufficientStock, ServiceBusy, ShopError
from ecommerce.models import ORDER_STATUS_PENDING
from ecommerce.observability import metrics
from ecommerce.services import Shop, charging, idempotency
from ecommerce.services.combining import Combiner, value_of
from ecommerce.services.pay_batch import PayRequest, run_batch
from ecommerce.services.results import OrderView

log = logging.getLogger(__name__)

__all__ = ["PayRequest", "pay"]


def pay(
    shop: Shop,
    user_id: str,
    amount: Decimal,
    idempotency_key: str | None = None,
    admission_tokens: Sequence[str] = (),
) -> OrderView:
    """Pay exactly ``amount`` for the user's whole cart; returns the paid order.
    A cart that holds an item whose waiting room is open needs one of
    ``admission_tokens`` admitting the buyer to it (judged on the locked cart)."""
    started = time.monotonic()
    try:
        request = PayRequest(user_id, amount, idempotency_key, tuple(admission_tokens))
        if shop.combining is None:
            order = _pay_alone(shop, request)
        else:
            # The same key while its first request is queued or in a batch of this
            # process: 409 at once, as the advisory lock answers across processes.
            key = (user_id, idempotency_key) if idempotency_key is not None else None
            order = _combiner(shop).submit(request, key)
        if shop.gateway is not None:
            order = charging.charge_and_confirm(shop, order, request.key, started)
    except ServiceBusy:
        metrics.count_pay("busy", ServiceBusy.code)
        raise
    except InsufficientStock:
        metrics.count_pay("sold_out", InsufficientStock.code)
        raise
    except ShopError as refused:
        metrics.count_pay("refused", refused.code)
        raise
    if order.status == ORDER_STATUS_PENDING:
        metrics.count_pay("pending", "")
    else:
        metrics.count_pay("paid", "replayed" if order.replayed else "")
    return order


def _combiner(shop: Shop) -> Combiner[PayRequest, OrderView]:
    assert shop.combining is not None
    return shop.combiner(
        "pay-combiner",
        shop.combining,
        run_batch=lambda batch: run_batch(shop, batch),
        run_alone=lambda request: _pay_alone(shop, request),
        key_in_use=idempotency.in_use,
    )


def _pay_alone(shop: Shop, request: PayRequest) -> OrderView:
    """A pay as a batch of one, in the request's own thread."""
    return value_of(run_batch(shop, [request])[0])
