from __future__ import annotations

from flask import Blueprint, Response, request

from ecommerce.api import auth, current_shop, json_response, schemas, validation
from ecommerce.api.openapi import Operation, documented
from ecommerce.api.render import order_json, order_page_json
from ecommerce.limits import MAX_ORDER_ID, MAX_PAGE_SIZE
from ecommerce.services import orders
from ecommerce.services.results import OrderView

bp = Blueprint("orders", __name__)


def ended_response(order: OrderView) -> Response:
    """A cancel's or a refund's answer: 202 while the provider has not confirmed
    the refund the shop recorded (it is sent again), else 200."""
    return json_response(order_json(order), 202 if order.refund_pending else 200)


@bp.get("/orders/<order_id:order_id>")
@documented(
    Operation(
        "One order (another user's order is a 404).", {200: schemas.Order}, (404,), token=True
    )
)
def get_order(order_id: int) -> Response:
    # With auth on, someone else's order is a 404: order ids reveal nothing.
    owner = auth.current_subject()
    return json_response(order_json(orders.get_order(current_shop(), order_id, owner)))


@bp.post("/orders/<order_id:order_id>/cancel")
@documented(
    Operation(
        "Cancel an order: pending -> cancelled, paid -> refunded, the stock back on sale. "
        "Again: unchanged; expired or payment_failed: 409. With a payment provider: 202 when "
        "the refund is recorded but the provider has not confirmed it yet (sent again).",
        {200: schemas.Order, 202: schemas.Order},
        (404, 409),
        token=True,
    )
)
def cancel(order_id: int) -> Response:
    owner = auth.current_subject()
    return ended_response(orders.cancel_order(current_shop(), order_id, owner))


@bp.get("/users/<user_id>/orders")
@documented(
    Operation(
        "The user's orders, newest first, a page at a time (?limit=, ?before=).",
        {200: schemas.OrderPage},
        user_scoped=True,
    )
)
def list_orders(user_id: str) -> Response:
    auth.current_subject()
    auth.require_user(validation.user_id(user_id))
    limit = validation.query_int(
        request, "limit", default=MAX_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE
    )
    before = validation.query_int(request, "before", default=None, minimum=1, maximum=MAX_ORDER_ID)
    assert limit is not None
    page = orders.list_orders(current_shop(), user_id, limit, before)
    return json_response(order_page_json(user_id, page))
