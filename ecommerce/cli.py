"""Command-line tools: ``flask db ...``, ``flask seed``, ``flask embedded-db ...``."""

from __future__ import annotations

from decimal import Decimal

import click
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.orm import Session

from alembic import command as alembic_command
from ecommerce import embedded_db
from ecommerce.config import PROJECT_ROOT
from ecommerce.repositories import ItemRepository
from ecommerce.services import Shop

# The design note's sample data: name, price, stock.
SAMPLE_ITEMS = [
    ("Apple", Decimal("0.50"), Decimal("10")),
    ("Banana", Decimal("0.30"), Decimal("10")),
    ("Orange", Decimal("0.70"), Decimal("10")),
]


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    # Passed as an attribute, not an ini option: a URL may contain '%'.
    config.attributes["database_url"] = database_url
    return config


def _shop() -> Shop:
    return current_app.extensions["shop"]


db_group = AppGroup("db", help="Schema migrations (Alembic).")


@db_group.command("upgrade", help="Upgrade the schema (to head by default).")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    alembic_command.upgrade(alembic_config(_shop().db.url), revision)


@db_group.command("downgrade", help="Downgrade the schema (one step by default; 'base' for all).")
@click.argument("revision", default="-1")
def db_downgrade(revision: str) -> None:
    alembic_command.downgrade(alembic_config(_shop().db.url), revision)


@db_group.command("current", help="Show the schema's current revision.")
def db_current() -> None:
    alembic_command.current(alembic_config(_shop().db.url), verbose=False)


@click.command("seed", help="Insert the sample items (Apple, Banana, Orange) once.")
@with_appcontext
def seed() -> None:
    def work(session: Session) -> list[str]:
        items = ItemRepository(session)
        added = []
        for name, price, stock in SAMPLE_ITEMS:
            if items.find_by_name(name) is None:
                items.add(name, price, stock)
                added.append(name)
        return added

    added = _shop().transaction(work, "seed")
    click.echo(f"seeded: {', '.join(added)}" if added else "sample items already present")


embedded_group = AppGroup(
    "embedded-db", help="The embedded PostgreSQL used when DATABASE_URL is unset."
)


@embedded_group.command("start", help="Start it (if needed) and print its URL.")
def embedded_start() -> None:
    click.echo(embedded_db.embedded_database_url(current_app.extensions["settings"].instance_path))


@embedded_group.command("stop", help="Stop it; its data stays under instance/postgres.")
def embedded_stop() -> None:
    stopped = embedded_db.stop_server(current_app.extensions["settings"].instance_path)
    click.echo("stopped" if stopped else "not running")


def register_commands(app: Flask) -> None:
    app.cli.add_command(db_group)
    app.cli.add_command(seed)
    app.cli.add_command(embedded_group)
