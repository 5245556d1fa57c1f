"""The schema exists only through Alembic: prove the migrations round-trip and
match the models. Runs in a database of its own on the same server."""

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, text

from ecommerce.database.engine import Base

TABLES = {"items", "carts", "orders", "order_lines", "payments"}


@pytest.fixture
def migration_url(database_url) -> Iterator[str]:
    url = make_url(database_url)
    scratch = url.set(database=f"{url.database}_migrations")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{scratch.database}"'))
    yield scratch.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
    admin.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_through_flask_db(make_app, migration_url):
    app = make_app(database_url=migration_url)
    runner = app.test_cli_runner()

    assert tables(migration_url) == set()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert tables(migration_url) >= TABLES
    current = runner.invoke(args=["db", "current"])
    assert current.exit_code == 0

    assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
    assert tables(migration_url) == set()

    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert tables(migration_url) >= TABLES


def test_models_match_migrations(migration_url, make_app):
    app = make_app(database_url=migration_url)
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    engine = create_engine(migration_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_note_schema_types(database_url):
    """items and carts keep the design note's column types exactly."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale,"
                " is_nullable, column_default FROM information_schema.columns"
                " WHERE table_name IN ('items', 'carts') ORDER BY table_name, ordinal_position"
            )
        ).all()
    engine.dispose()
    columns = {(r.table_name, r.column_name): r for r in rows}
    assert columns[("items", "id")].data_type == "integer"
    assert columns[("items", "id")].column_default.startswith("nextval(")  # SERIAL
    assert columns[("items", "name")].data_type == "text"
    for money_column in ("price", "stock"):
        c = columns[("items", money_column)]
        assert (c.data_type, c.numeric_precision, c.numeric_scale) == ("numeric", 10, 2)
    assert columns[("carts", "user_id")].data_type == "text"
    assert columns[("carts", "item_id")].data_type == "integer"
    assert columns[("carts", "quantity")].data_type == "integer"
    note_columns = {
        ("items", "id"), ("items", "name"), ("items", "price"), ("items", "stock"),
        ("carts", "user_id"), ("carts", "item_id"), ("carts", "quantity"),
    }  # fmt: skip
    assert all(columns[c].is_nullable == "NO" for c in note_columns)
    # Columns added since (the sale rules) are optional: NULL means no rule.
    assert {c for c in columns if columns[c].is_nullable == "YES"} == {
        ("items", "per_user_limit"), ("items", "sale_starts_at"), ("items", "sale_ends_at"),
    }  # fmt: skip
