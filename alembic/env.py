"""Alembic environment: migrations run online against PostgreSQL only."""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import create_engine, event, pool

from alembic import context
from ecommerce import models  # noqa: F401 - registers the tables on Base.metadata
from ecommerce.config import Settings
from ecommerce.database.engine import Base
from ecommerce.database.failover import connect, normalize_database_url, resolve_database_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    given = config.attributes.get("database_url")
    return normalize_database_url(given) if given else resolve_database_url(Settings.from_env())


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    # As the app connects: host by host, to the one that takes writes.
    event.listen(engine, "do_connect", connect)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against the database")
run_migrations_online()
