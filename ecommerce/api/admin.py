"""The admin API: the catalogue, its sale rules and stock, an item's sales.

Always behind an admin bearer token (`flask issue-token --admin NAME`), whatever
AUTH_REQUIRED says: 401 without a valid token, 403 with a buyer's.
"""

from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, Response, request

from ecommerce.api import auth, current_shop, json_response, schemas, validation
from ecommerce.api.openapi import Operation, documented
from ecommerce.api.orders import ended_response
from ecommerce.api.render import item_json, item_sales_json, room_json
from ecommerce.services import inventory, orders, rooms

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.url_value_preprocessor
def _authorize(endpoint: str | None, values: dict | None) -> None:
    auth.require_admin()


@bp.post("/items")
@documented(
    Operation(
        "Add an item with its opening stock (through the ledger) and sale rules.",
        {201: schemas.Item},
        errors=(400, 413),
        body=schemas.NewItem,
        admin=True,
    )
)
def add_item() -> Response:
    new = validation.body(schemas.NewItem, validation.json_object(request))
    rules = {name: getattr(new, name) for name in inventory.RULES}
    item = inventory.add_item(current_shop(), new.name, new.price, Decimal(new.stock), rules)
    return json_response(item_json(item), 201)


@bp.patch("/items/<id:item_id>")
@documented(
    Operation(
        "Change an item's name, price or sale rules (null clears a rule).",
        {200: schemas.Item},
        errors=(400, 404, 413),
        body=schemas.ItemChanges,
        admin=True,
    )
)
def change_item(item_id: int) -> Response:
    changes = validation.item_changes(validation.json_object(request))
    return json_response(item_json(inventory.change_item(current_shop(), item_id, changes)))


@bp.post("/items/<id:item_id>/restock")
@documented(
    Operation(
        "Add units to an item's stock (through the ledger; clears a sold-out mark).",
        {200: schemas.Item},
        errors=(400, 404, 413),
        body=schemas.Restock,
        admin=True,
    )
)
def restock(item_id: int) -> Response:
    quantity = validation.body(schemas.Restock, validation.json_object(request)).quantity
    item = inventory.restock(current_shop(), item_id, Decimal(quantity))
    return json_response(item_json(item))


@bp.post("/orders/<order_id:order_id>/refund")
@documented(
    Operation(
        "Refund an order (as its owner's cancel): paid -> refunded, pending -> cancelled, "
        "the stock back on sale; 202 when the provider has not confirmed the refund yet.",
        {200: schemas.Order, 202: schemas.Order},
        errors=(404, 409),
        admin=True,
    )
)
def refund(order_id: int) -> Response:
    return ended_response(orders.refund_order(current_shop(), order_id))


@bp.get("/items/<id:item_id>/sales")
@documented(
    Operation(
        "An item's stock and sales, from the database.",
        {200: schemas.ItemSales},
        errors=(404,),
        admin=True,
    )
)
def sales(item_id: int) -> Response:
    return json_response(item_sales_json(inventory.item_sales(current_shop(), item_id)))


@bp.get("/items/<id:item_id>/queue")
@documented(
    Operation(
        "An item's waiting room: its options and the front of its line.",
        {200: schemas.Room},
        errors=(404,),
        admin=True,
    )
)
def queue(item_id: int) -> Response:
    return json_response(room_json(rooms.room(current_shop(), item_id)))


@bp.put("/items/<id:item_id>/queue")
@documented(
    Operation(
        "Open, close or change an item's waiting room (mode, fixed rate, cap on buyers "
        "admitted at once, admission lifetime); a room with places keeps its mode.",
        {200: schemas.Room},
        errors=(400, 404, 409, 413),
        body=schemas.RoomSettings,
        admin=True,
    )
)
def configure_queue(item_id: int) -> Response:
    options = validation.room_options(validation.json_object(request))
    return json_response(room_json(rooms.configure_room(current_shop(), item_id, options)))
