"""Command-line tools: ``flask db ...``, ``flask seed``, ``flask embedded-db ...``."""

from __future__ import annotations

from decimal import Decimal

import click
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.orm import Session

from alembic import command as alembic_command
from ecommerce import auth, embedded_db, validation
from ecommerce.config import PROJECT_ROOT
from ecommerce.errors import ShopError
from ecommerce.money import MoneyError, parse_amount
from ecommerce.repositories import IdempotencyRepository, ItemRepository
from ecommerce.services import Shop, inventory
from ecommerce.services.invariants import find_violations

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


@click.command("check-invariants", help="Verify stock, orders and payments add up.")
@with_appcontext
def check_invariants() -> None:
    violations = _shop().transaction(find_violations, "check_invariants")
    if not violations:
        click.echo("ok: all invariants hold")
        return
    for violation in violations:
        click.echo(str(violation), err=True)
    raise click.exceptions.Exit(1)


@click.command("prune-idempotency-keys", help="Delete expired idempotency keys.")
@with_appcontext
def prune_idempotency_keys() -> None:
    deleted = _shop().transaction(
        lambda s: IdempotencyRepository(s).delete_expired(), "prune_idempotency_keys"
    )
    click.echo(f"deleted {deleted} expired idempotency keys")


@click.command("issue-token", help="Print a bearer token for USER_ID.")
@click.argument("user_id")
@click.option(
    "--ttl",
    default=auth.DEFAULT_TTL_S,
    show_default=True,
    type=click.IntRange(1),
    help="Lifetime in seconds.",
)
@with_appcontext
def issue_token(user_id: str, ttl: int) -> None:
    try:
        validation.user_id(user_id)
    except ShopError as exc:
        raise click.BadParameter(exc.message, param_hint="USER_ID") from exc
    click.echo(auth.issue_token(current_app.config["SECRET_KEY"], user_id, ttl))


@click.command("add-item", help="Add an item with its opening stock; prints its id.")
@click.argument("name")
@click.argument("price")
@click.argument("stock", type=click.IntRange(0))
@with_appcontext
def add_item(name: str, price: str, stock: int) -> None:
    try:
        item = inventory.add_item(_shop(), name, parse_amount(price), Decimal(stock))
    except (ShopError, MoneyError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(item.id)


@click.command("restock", help="Add QUANTITY units to an item's stock.")
@click.argument("item_id", type=click.IntRange(1, 2**31 - 1))
@click.argument("quantity", type=click.IntRange(1))
@with_appcontext
def restock(item_id: int, quantity: int) -> None:
    try:
        new_stock = inventory.restock(_shop(), item_id, Decimal(quantity))
    except ShopError as exc:
        raise click.UsageError(exc.message) from exc
    click.echo(f"item {item_id} stock is now {new_stock}")


def register_commands(app: Flask) -> None:
    from ecommerce.flashsale.command import flashsale

    for command in (
        flashsale,
        db_group,
        seed,
        embedded_group,
        check_invariants,
        prune_idempotency_keys,
        issue_token,
        add_item,
        restock,
    ):
        app.cli.add_command(command)
