from __future__ import annotations

from flask import Blueprint, Response, request

from ecommerce import auth, validation
from ecommerce.api import current_shop, effect_response, json_response
from ecommerce.services import cart, payment

bp = Blueprint("cart", __name__, url_prefix="/cart/<user_id>")


@bp.url_value_preprocessor
def _authorize(endpoint: str | None, values: dict | None) -> None:
    # Authentication first (401), then the path's user (400, or 403 if not the token's).
    auth.current_subject()
    if values is not None and "user_id" in values:
        auth.require_user(validation.user_id(values["user_id"]))


@bp.get("")
def view(user_id: str) -> Response:
    return json_response(cart.view_cart(current_shop(), user_id).as_json())


@bp.post("/add")
def add(user_id: str) -> Response:
    body = validation.json_object(request)
    item_id, quantity = validation.add_to_cart(body)
    return effect_response(
        "add_to_cart",
        user_id,
        body,
        200,
        lambda session: cart.add_to_cart_in(session, user_id, item_id, quantity).as_json(),
    )


@bp.delete("/items/<int(min=1, max=2147483647):item_id>")
def remove(user_id: str, item_id: int) -> Response:
    return json_response(cart.remove_from_cart(current_shop(), user_id, item_id).as_json())


@bp.get("/checkout")
def checkout(user_id: str) -> Response:
    return json_response(cart.view_cart(current_shop(), user_id).quote_json())


@bp.post("/pay")
def pay(user_id: str) -> Response:
    body = validation.json_object(request)
    amount = validation.payment_amount(body)
    shop = current_shop()
    return effect_response(
        "pay",
        user_id,
        body,
        201,
        lambda session: payment.pay_in(session, shop, user_id, amount).as_json(),
    )
