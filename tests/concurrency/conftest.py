from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text

from ecommerce.database import migrations
from ecommerce.database.embedded import ensure_database, ensure_server, server_url, stop_server
from ecommerce.services import Shop
from tests.helpers import wait_for


@pytest.fixture
def storm_shop(make_app: Callable[..., Flask], committed) -> Callable[..., Shop]:
    """A shop with its own pool, large enough that every buyer thread holds a
    real connection of its own, on committed data."""

    def make(buyers: int, **overrides: object) -> Shop:
        overrides.setdefault("pool_size", buyers)
        overrides.setdefault("lock_timeout_ms", 20_000)
        overrides.setdefault("statement_timeout_ms", 30_000)
        return make_app(**overrides).extensions["shop"]

    return make


@pytest.fixture(params=[True, False], ids=["combined", "alone"])
def pay_combining(request) -> bool:
    """Every concurrency test that builds a shop runs with pays, adds and cart
    reads combined into batches (the default) and with one transaction each."""
    return request.param


@pytest.fixture
def make_app(make_app: Callable[..., Flask], pay_combining: bool) -> Callable[..., Flask]:
    def make(**overrides: object) -> Flask:
        overrides.setdefault("pay_combining", pay_combining)
        overrides.setdefault("cart_combining", pay_combining)
        return make_app(**overrides)

    return make


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    """A PostgreSQL server of the test's own, migrated, whose settings it may change."""
    instance = tmp_path / "pg"
    url = server_url(ensure_server(instance), "shop").render_as_string(hide_password=False)
    ensure_database(url)
    migrations.upgrade(url)
    server = PrivateServer(url, create_engine(url))
    try:
        yield server
    finally:
        server.engine.dispose()
        stop_server(instance)


@dataclass
class PrivateServer:
    url: str
    engine: Engine

    def configure(self, name: str, value: str) -> None:
        """ALTER SYSTEM SET name = value, reloaded; returns once a new session sees it."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
            conn.execute(text("SELECT pg_reload_conf()"))

        def seen() -> bool:
            with self.engine.connect() as conn:
                return conn.execute(text(f"SHOW {name}")).scalar() == value

        wait_for(seen, 10, "for the server to reload")

    def cancel_the_commit_waiting_for_the_standby(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            with self.engine.connect() as conn:
                cancelled = conn.execute(
                    text(
                        "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity"
                        " WHERE wait_event = 'SyncRep'"
                    )
                ).scalar_one()
            if cancelled:
                return
            assert time.monotonic() < deadline, "no commit waited for the standby"
            time.sleep(0.01)
