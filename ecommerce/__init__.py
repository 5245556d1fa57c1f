"""A shop backend that cannot oversell.

``create_app`` builds the Flask application: settings from the environment, the
shop (database, transaction policy, clock, combiners), the HTTP API and the CLI
commands. Creating it does not connect to the database: the engine is built on
first use, inside the gunicorn worker, after the fork.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from ecommerce.config import Settings

if TYPE_CHECKING:
    from ecommerce.services import PayEngine


def create_app(settings: Settings | None = None, pay_engine: PayEngine | None = None) -> Flask:
    """The application; ``pay_engine``: what its pay endpoint runs (the
    simulator's negative control gives its naive pay; default: the shop's)."""
    # Imported here, not at the top: importing the package (as gunicorn does for
    # ecommerce.gunicorn_conf) must not import prometheus_client before the
    # config has set PROMETHEUS_MULTIPROC_DIR (ecommerce/observability/metrics.py).
    from ecommerce import api, cli
    from ecommerce.observability import logs, metrics
    from ecommerce.services import build_shop

    settings = settings or Settings.from_env()
    settings.validate()
    logs.configure(settings.log_level)
    metrics.configure(on=settings.metrics_enabled, directory=settings.metrics_dir)

    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.config["SECRET_KEY"] = settings.secret_key
    shop = build_shop(settings, pay_engine)
    app.extensions["shop"] = shop
    app.extensions["settings"] = settings

    api.init_app(app)
    cli.init_app(app)
    return app
