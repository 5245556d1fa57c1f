"""Fixtures. The tree says what each test needs:

* tests/unit: no database;
* tests/integration: repositories and services on PostgreSQL (``connection``,
  ``session``, ``shop``: one outer transaction, rolled back afterwards);
* tests/api: the Flask test client (``client``, ``runner``) on the same;
* tests/concurrency: threads released by a barrier, each on a connection of its
  own, on committed data (``committed``, ``storm_shop``);
* tests/system: a real gunicorn, a private PostgreSQL, the simulator.

Every test talks to a real PostgreSQL:

* TEST_DATABASE_URL, else DATABASE_URL, when set (the database's name must
  contain "test": its schema is dropped and rebuilt by the migrations);
* otherwise the embedded PostgreSQL under instance/, in a database of its own
  (``ecommerce_test``), so the data of `make run` is never touched.

Most tests run inside one outer transaction that is rolled back afterwards
(SQLAlchemy's "joining a Session into an external transaction" recipe). Tests
of concurrency use committed data and real connections, and truncate after.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from ecommerce import create_app
from ecommerce.config import DEFAULT_INSTANCE_PATH, Settings
from ecommerce.database import migrations
from ecommerce.database.embedded import embedded_database_url
from ecommerce.database.failover import normalize_database_url
from ecommerce.services import Shop
from tests.helpers import sessions_bound_to, truncate_all

EMBEDDED_TEST_DATABASE = "ecommerce_test"


def _configured_test_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def reset_schema(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    url = _configured_test_url()
    if url is not None:
        url = normalize_database_url(url)
    else:
        url = embedded_database_url(DEFAULT_INSTANCE_PATH, EMBEDDED_TEST_DATABASE)
    name = make_url(url).database or ""
    if "test" not in name:
        pytest.exit(
            f"refusing to run the tests against database {name!r}: its schema would be "
            "dropped. Point TEST_DATABASE_URL at a database whose name contains 'test'.",
            returncode=2,
        )
    reset_schema(url)
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return replace(Settings.from_env({}), database_url=database_url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Build apps with settings overridden; their engines are disposed afterwards."""
    apps: list[Flask] = []

    def make(**overrides: object) -> Flask:
        app = create_app(replace(settings, **overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["shop"].close()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    """A session inside the test's outer transaction: its commits become savepoints
    (SQLAlchemy's "joining a Session into an external transaction" recipe)."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        yield session


@pytest.fixture
def app(make_app: Callable[..., Flask], connection: Connection) -> Iterator[Flask]:
    """An app whose every session joins the test's outer transaction."""
    app = make_app()
    with sessions_bound_to(app.extensions["shop"].db, connection):
        yield app


@pytest.fixture
def shop(app: Flask) -> Shop:
    return app.extensions["shop"]


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def committed(engine: Engine) -> Iterator[Engine]:
    """For tests that need committed data and many real connections."""
    truncate_all(engine)
    yield engine
    truncate_all(engine)
