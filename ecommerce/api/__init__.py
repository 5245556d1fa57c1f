"""HTTP endpoints: one blueprint per resource. Endpoints only parse input,
call one service function and shape the JSON answer; errors are mapped to JSON
by ecommerce.errors."""

from __future__ import annotations

from flask import Flask, current_app

from ecommerce.services import Shop


def current_shop() -> Shop:
    return current_app.extensions["shop"]


def register_blueprints(app: Flask) -> None:
    from ecommerce.api.cart import bp as cart_bp
    from ecommerce.api.items import bp as items_bp
    from ecommerce.api.orders import bp as orders_bp

    app.register_blueprint(items_bp)
    app.register_blueprint(cart_bp)
    app.register_blueprint(orders_bp)
