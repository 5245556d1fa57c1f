from __future__ import annotations

from flask import Blueprint, Response, request

from ecommerce.api import auth, current_shop, effect_response, json_response, schemas, validation
from ecommerce.api.openapi import Operation, documented
from ecommerce.api.render import cart_json, order_json, pending_json, quote_json
from ecommerce.limits import ADMISSION_TOKEN_HEADER
from ecommerce.services import cart

bp = Blueprint("cart", __name__, url_prefix="/cart/<user_id>")


@bp.url_value_preprocessor
def _authorize(endpoint: str | None, values: dict | None) -> None:
    # Authentication first (401), then the path's user (400, or 403 if not the token's).
    auth.current_subject()
    if values is not None and "user_id" in values:
        auth.require_user(validation.user_id(values["user_id"]))


@bp.get("")
@documented(Operation("The user's cart.", {200: schemas.Cart}, user_scoped=True))
def view(user_id: str) -> Response:
    return json_response(cart_json(cart.view_cart(current_shop(), user_id)))


@bp.post("/add")
@documented(
    Operation(
        "Add units of an item to the cart (refused beyond the item's stock right now; "
        f"while the item's waiting room is open, with the buyer's {ADMISSION_TOKEN_HEADER}).",
        {200: schemas.Cart},
        errors=(404, 409, 413, 422),
        body=schemas.AddToCart,
        user_scoped=True,
        idempotent=True,
        headers=(ADMISSION_TOKEN_HEADER,),
    )
)
def add(user_id: str) -> Response:
    item_id, quantity = validation.add_to_cart(validation.json_object(request))
    key = validation.idempotency_key(request)
    tokens = validation.admission_tokens(request)
    result = cart.add_to_cart(current_shop(), user_id, item_id, quantity, key, tokens)
    return effect_response(cart_json(result), 200, replayed=result.replayed)


@bp.delete("/items/<id:item_id>")
@documented(
    Operation("Take an item's line out of the cart.", {200: schemas.Cart}, (404,), user_scoped=True)
)
def remove(user_id: str, item_id: int) -> Response:
    return json_response(cart_json(cart.remove_from_cart(current_shop(), user_id, item_id)))


@bp.get("/checkout")
@documented(
    Operation(
        "The checkout quote: total, and per line whether stock suffices now.",
        {200: schemas.Quote},
        user_scoped=True,
    )
)
def checkout(user_id: str) -> Response:
    return json_response(quote_json(cart.view_cart(current_shop(), user_id)))


@bp.post("/pay")
@documented(
    Operation(
        "Pay exactly the cart total: the order is written and the stock taken, or nothing. "
        "With a payment provider: 201 paid, 202 still pending (the provider did not answer "
        "in time), 402 declined (the stock went back). A cart holding an item whose waiting "
        f"room is open: with the buyer's {ADMISSION_TOKEN_HEADER} for it.",
        {201: schemas.Order, 202: schemas.PendingOrder},
        errors=(402, 409, 413, 422),
        body=schemas.Pay,
        user_scoped=True,
        idempotent=True,
        headers=(ADMISSION_TOKEN_HEADER,),
    )
)
def pay(user_id: str) -> Response:
    amount = validation.payment_amount(validation.json_object(request))
    key = validation.idempotency_key(request)
    tokens = validation.admission_tokens(request)
    shop = current_shop()
    assert shop.pay_engine is not None  # build_shop sets it
    order = shop.pay_engine(shop, user_id, amount, key, tokens)
    if order.status == "pending":  # the provider's answer is outstanding
        return effect_response(pending_json(order), 202, replayed=order.replayed)
    return effect_response(order_json(order), 201, replayed=order.replayed)
