from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ecommerce import validation
from ecommerce.api import current_shop
from ecommerce.services import cart, payment

bp = Blueprint("cart", __name__, url_prefix="/cart/<user_id>")


@bp.url_value_preprocessor
def _check_user_id(endpoint: str | None, values: dict | None) -> None:
    if values is not None and "user_id" in values:
        validation.user_id(values["user_id"])


@bp.get("")
def view(user_id: str) -> Response:
    return jsonify(cart.view_cart(current_shop(), user_id).as_json())


@bp.post("/add")
def add(user_id: str) -> Response:
    item_id, quantity = validation.add_to_cart(validation.json_object(request))
    return jsonify(cart.add_to_cart(current_shop(), user_id, item_id, quantity).as_json())


@bp.delete("/items/<int(min=1, max=2147483647):item_id>")
def remove(user_id: str, item_id: int) -> Response:
    return jsonify(cart.remove_from_cart(current_shop(), user_id, item_id).as_json())


@bp.get("/checkout")
def checkout(user_id: str) -> Response:
    return jsonify(cart.view_cart(current_shop(), user_id).quote_json())


@bp.post("/pay")
def pay(user_id: str) -> tuple[Response, int]:
    amount = validation.payment_amount(validation.json_object(request))
    order = payment.pay(current_shop(), user_id, amount)
    return jsonify(order.as_json()), 201
