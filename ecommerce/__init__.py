"""A shop backend that cannot oversell.

``create_app`` builds the Flask application: settings from the environment, the
database (embedded PostgreSQL when DATABASE_URL is unset), the JSON error
handlers, the blueprints and the CLI commands.
"""

from __future__ import annotations

from flask import Flask

from ecommerce.config import Settings
from ecommerce.db import Database
from ecommerce.errors import register_error_handlers
from ecommerce.jsonio import DecimalJSONProvider
from ecommerce.services import Shop
from ecommerce.services.stock import strategy_named
from ecommerce.transactions import TransactionPolicy

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.validate()

    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.json_provider_class = DecimalJSONProvider
    app.json = DecimalJSONProvider(app)
    app.config.update(SECRET_KEY=settings.secret_key, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)

    stock = strategy_named(settings.stock_strategy, allow_unsafe=settings.allow_unsafe_strategy)
    if not stock.safe:
        app.logger.warning("STOCK_STRATEGY=%s can oversell: demonstration only", stock.name)
    policy = TransactionPolicy(
        lock_timeout_ms=settings.lock_timeout_ms,
        statement_timeout_ms=settings.statement_timeout_ms,
        retries=settings.transaction_retries,
        retry_after_s=settings.retry_after_s,
    )
    shop = Shop(
        db=Database(settings),
        policy=policy,
        stock=stock,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
    if settings.test_hold_locks_user and settings.test_hold_locks_signal:
        from ecommerce.testing_hooks import hold_locks_hook

        shop.after_stock_taken = hold_locks_hook(
            settings.test_hold_locks_user, settings.test_hold_locks_signal
        )
    app.extensions["shop"] = shop
    app.extensions["settings"] = settings

    register_error_handlers(app)

    from ecommerce.api import register_blueprints
    from ecommerce.cli import register_commands

    register_blueprints(app)
    register_commands(app)

    return app
