from __future__ import annotations

from flask import Blueprint, Response, request

from ecommerce import auth, validation
from ecommerce.api import current_shop, json_response
from ecommerce.services import orders

bp = Blueprint("orders", __name__)


@bp.get("/orders/<int(min=1, max=2147483647):order_id>")
def get_order(order_id: int) -> Response:
    # With auth on, someone else's order is a 404: order ids reveal nothing.
    owner = auth.current_subject()
    return json_response(orders.get_order(current_shop(), order_id, owner).as_json())


@bp.get("/users/<user_id>/orders")
def list_orders(user_id: str) -> Response:
    auth.current_subject()
    auth.require_user(validation.user_id(user_id))
    limit = validation.query_int(
        request,
        "limit",
        default=validation.MAX_PAGE_SIZE,
        minimum=1,
        maximum=validation.MAX_PAGE_SIZE,
    )
    before = validation.query_int(
        request, "before", default=None, minimum=1, maximum=validation.MAX_ID
    )
    assert limit is not None
    found = orders.list_orders(current_shop(), user_id, limit, before)
    body: dict = {"user_id": user_id, "orders": [o.as_json() for o in found]}
    if len(found) == limit:
        body["next_before"] = found[-1].order_id
    return json_response(body)
