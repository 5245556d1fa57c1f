"""The HTTP API: one blueprint per resource.

An endpoint parses the request (ecommerce/api/validation.py), calls one use
case of ecommerce.services, renders its result (ecommerce/api/render.py) and
lets ecommerce/api/errors.py map a refusal to its status. Nothing here opens a
transaction or touches SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app
from werkzeug.routing import IntegerConverter

from ecommerce.api.errors import register_error_handlers
from ecommerce.api.jsonio import DecimalJSONProvider, dumps_bytes
from ecommerce.limits import MAX_ID, MAX_ORDER_ID
from ecommerce.services import Shop

#: The largest request body accepted (413 beyond it).
MAX_BODY_BYTES = 64 * 1024


class IdConverter(IntegerConverter):
    """``<id:name>``: a database id in a path, 1..MAX_ID (else 404 like any unknown path)."""

    def __init__(self, map: Any) -> None:
        super().__init__(map, min=1, max=MAX_ID)


class OrderIdConverter(IntegerConverter):
    """``<order_id:name>``: an order id in a path, 1..MAX_ORDER_ID (64-bit)."""

    def __init__(self, map: Any) -> None:
        super().__init__(map, min=1, max=MAX_ORDER_ID)


def current_shop() -> Shop:
    return current_app.extensions["shop"]


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps_bytes(payload, newline=True), status, mimetype="application/json")


def effect_response(payload: Any, status: int, *, replayed: bool) -> Response:
    """The answer to a use case that honours an Idempotency-Key: a replay is marked."""
    response = json_response(payload, status)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def init_app(app: Flask) -> None:
    app.json_provider_class = DecimalJSONProvider
    app.json = DecimalJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # No redirects: werkzeug would answer "/cart//add" with an HTML 308 to
    # "/cart/add"; a path that is not a route is a JSON 404 like any other.
    app.url_map.merge_slashes = False
    app.url_map.converters["id"] = IdConverter
    app.url_map.converters["order_id"] = OrderIdConverter
    register_error_handlers(app)

    from ecommerce.api import console, observe
    from ecommerce.api.admin import bp as admin_bp
    from ecommerce.api.cart import bp as cart_bp
    from ecommerce.api.items import bp as items_bp
    from ecommerce.api.ops import bp as ops_bp
    from ecommerce.api.orders import bp as orders_bp
    from ecommerce.api.queue import bp as queue_bp
    from ecommerce.api.webhooks import bp as webhooks_bp

    observe.init_app(app)
    app.register_blueprint(items_bp)
    app.register_blueprint(cart_bp)
    app.register_blueprint(queue_bp)
    app.register_blueprint(orders_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(webhooks_bp)
    console.init_app(app)
    app.register_blueprint(console.bp)
